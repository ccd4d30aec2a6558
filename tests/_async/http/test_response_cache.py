"""The response cache's driver over a real cache (memory L2 and an L1), without a
framework: handler runs counted, a fake clock for freshness, stale-while-revalidate and Age."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from readscale._async.backends.memory import AsyncMemoryBackend
from readscale._async.cache.cache import AsyncCache
from readscale._async.http.response_cache import AsyncResponseCache, Rendered, ResponseRequest
from readscale._core.http import HttpPolicy, parse_conditionals
from readscale.l1 import MemoryStore
from readscale.testing.clock import FakeClock

PUBLIC = (("cache-control", "public, max-age=0"), ("cdn-cache-control", "max-age=60, stale-while-revalidate=30"))
POLICY = HttpPolicy.public(0, edge_max_age=60, stale_while_revalidate=30, tags=("news",))


class Handler:
    """Counts its runs; answers with the run's number, tagged as the HTTP middleware would.
    ``during[n]``, if given, runs inside run ``n`` after its body was "read" (a write and
    its purge landing while the handler is still busy)."""

    def __init__(self, fields: tuple[tuple[str, str], ...] = PUBLIC, tags: tuple[str, ...] = ("news",)) -> None:
        self.runs = 0
        self.fields = fields
        self.tags = tags
        self.during: dict[int, Callable[[], Awaitable[object]]] = {}

    async def __call__(self) -> Rendered:
        self.runs += 1
        run = self.runs
        body = f"run {run}".encode()
        if run in self.during:
            await self.during[run]()
        return Rendered(200, (*self.fields, ("etag", f'"v{run}"')), body, self.tags)


def request(headers: dict[str, str] | None = None, policy: HttpPolicy = POLICY) -> ResponseRequest:
    fields = headers or {}
    return ResponseRequest("GET", "http://shop/news", policy, fields.get, conditionals=parse_conditionals(fields.get))


def build(clock: FakeClock) -> tuple[AsyncCache, AsyncResponseCache]:
    cache = AsyncCache(AsyncMemoryBackend(), l1=MemoryStore(100), clock=clock)
    return cache, AsyncResponseCache(cache, clock=clock)


Answer = tuple[int, str, dict[str, str]]


async def serve(responses: AsyncResponseCache, handler: Handler, req: ResponseRequest) -> Answer:
    plan = responses.plan(req)
    assert plan is not None
    served = await responses.serve(req, plan, handler)
    return served.status, served.body.decode(), dict(served.fields)


@pytest.mark.anyio
async def test_fresh_then_stale_while_revalidate_then_expired() -> None:
    clock = FakeClock()
    cache, responses = build(clock)
    handler = Handler()
    assert (await serve(responses, handler, request()))[1] == "run 1"
    clock.advance(10)
    status, body, fields = await serve(responses, handler, request())
    assert (status, body, fields["age"], handler.runs) == (200, "run 1", "10", 1)
    assert fields["cache-status"] == "readscale;hit;ttl=50"
    clock.advance(55)  # stale, inside the window: served, and one background run refreshes it
    status, body, fields = await serve(responses, handler, request())
    assert (body, fields["age"], fields["cache-status"]) == ("run 1", "65", "readscale;hit;ttl=-5")
    await responses.drain()
    assert handler.runs == 2 and responses.stats.refreshed == 1
    assert (await serve(responses, handler, request()))[1] == "run 2"
    clock.advance(200)  # past freshness and window: the cache loads again, once
    assert (await serve(responses, handler, request()))[1] == "run 3"
    assert handler.runs == 3
    await cache.aclose()


@pytest.mark.anyio
async def test_a_conditional_request_gets_a_304_from_the_stored_response() -> None:
    clock = FakeClock()
    cache, responses = build(clock)
    handler = Handler()
    await serve(responses, handler, request())
    status, body, fields = await serve(responses, handler, request({"if-none-match": '"v1"'}))
    assert (status, body, fields["etag"], handler.runs) == (304, "", '"v1"', 1)
    status, body, _ = await serve(responses, handler, request({"if-none-match": '"v0"'}))
    assert (status, body) == (200, "run 1")
    await cache.aclose()


@pytest.mark.anyio
async def test_tags_added_by_the_handler_purge_the_stored_response() -> None:
    clock = FakeClock()
    cache, responses = build(clock)
    handler = Handler(tags=("news", "product:7"))
    await serve(responses, handler, request())
    assert (await serve(responses, handler, request()))[1] == "run 1"
    await cache.invalidate_tags("product:7")
    assert (await serve(responses, handler, request()))[1] == "run 2"
    await cache.invalidate_tags("news")
    assert (await serve(responses, handler, request()))[1] == "run 3"
    await cache.aclose()


@pytest.mark.anyio
async def test_a_response_that_may_not_be_stored_is_never_served_to_another_request() -> None:
    clock = FakeClock()
    cache, responses = build(clock)
    handler = Handler(fields=(*PUBLIC, ("set-cookie", "session=alice")))
    bodies = [(await serve(responses, handler, request()))[1] for _ in range(3)]
    assert bodies == ["run 1", "run 2", "run 3"] and responses.stats.refused == 3
    await cache.aclose()


@pytest.mark.anyio
async def test_a_variant_the_route_did_not_declare_is_keyed_after_it_is_seen() -> None:
    """The handler (or a compressor) adds Vary: Accept-Encoding the policy did not declare:
    each encoding gets its own entry, found again without running the handler."""
    clock = FakeClock()
    cache, responses = build(clock)
    handler = Handler(fields=(*PUBLIC, ("vary", "Accept-Encoding")))
    gzip, plain = {"accept-encoding": "gzip"}, {"accept-encoding": "identity"}
    assert (await serve(responses, handler, request(gzip)))[1] == "run 1"
    assert (await serve(responses, handler, request(plain)))[1] == "run 2"
    assert (await serve(responses, handler, request(gzip)))[1] == "run 1"
    assert (await serve(responses, handler, request(plain)))[1] == "run 2"
    assert handler.runs == 2
    await cache.aclose()


@pytest.mark.anyio
async def test_a_purge_during_a_background_refresh_is_not_overwritten() -> None:
    """The refresh's handler read the old data, then the data changed and its tag was
    purged: the refreshed response must not be stored as current (it was a plain ``set``
    that read the tag's new version, so the old body was served as a hit for a minute)."""
    clock = FakeClock()
    cache, responses = build(clock)
    handler = Handler()
    handler.during[2] = lambda: cache.invalidate_tags("news")
    assert (await serve(responses, handler, request()))[1] == "run 1"
    clock.advance(65)  # stale, inside the window: served, one background refresh (run 2)
    assert (await serve(responses, handler, request()))[1] == "run 1"
    await responses.drain()
    assert handler.runs == 2
    assert (await serve(responses, handler, request()))[1] == "run 3"
    assert (await serve(responses, handler, request()))[1] == "run 3"
    await cache.aclose()


@pytest.mark.anyio
async def test_a_purge_of_a_tag_the_handler_added_during_its_run_is_not_overwritten() -> None:
    """``add_tags`` are known only after the handler ran, so the entry is stored again
    under them: a purge of such a tag while the handler ran must still empty it."""
    clock = FakeClock()
    cache, responses = build(clock)
    handler = Handler(tags=("news", "product:7"))
    handler.during[1] = lambda: cache.invalidate_tags("product:7")
    assert (await serve(responses, handler, request()))[1] == "run 1"
    assert (await serve(responses, handler, request()))[1] == "run 2"
    # The tags this URL's handler adds are known now: its fills carry them from the
    # start, so the floor the purge left does not keep the response out of the cache.
    assert (await serve(responses, handler, request()))[1] == "run 2"
    assert handler.runs == 2
    await cache.invalidate_tags("product:7")
    assert (await serve(responses, handler, request()))[1] == "run 3"
    assert (await serve(responses, handler, request()))[1] == "run 3"
    await cache.aclose()


@pytest.mark.anyio
async def test_an_expired_entry_refilled_now_does_not_overwrite_a_purge() -> None:
    """A handler that chose a shorter life than its route declares: the entry is refilled
    at once, as a fill (a purge during that run refuses it), not with a plain ``set``."""
    clock = FakeClock()
    cache, responses = build(clock)
    short = (("cache-control", "public, max-age=0"), ("cdn-cache-control", "max-age=5"))
    handler = Handler(fields=short)
    handler.during[2] = lambda: cache.invalidate_tags("news")
    assert (await serve(responses, handler, request()))[1] == "run 1"
    clock.advance(10)  # past its own max-age, within the route's: refilled now (run 2)
    assert (await serve(responses, handler, request()))[1] == "run 2"
    assert (await serve(responses, handler, request()))[1] == "run 3"
    await cache.aclose()


@pytest.mark.anyio
async def test_a_handler_whose_reads_refuse_its_fill_is_not_stored_by_its_added_tags() -> None:
    """The second store under ``add_tags``' tags is judged on the handler's own reads: one
    read of unknown staleness refuses it as it refused the first (review: it was stored
    with a blind primary read, so the response was cached only because it added a tag)."""
    from readscale._shared.cache.fill_scope import report_unknown_read

    clock = FakeClock()
    cache, responses = build(clock)
    handler = Handler(tags=("news", "product:7"))

    async def unknown_read() -> None:
        report_unknown_read()

    for run in (1, 2, 3):
        handler.during[run] = unknown_read
    bodies = [(await serve(responses, handler, request()))[1] for _ in range(3)]
    assert bodies == ["run 1", "run 2", "run 3"]
    await cache.aclose()


@pytest.mark.anyio
async def test_added_tags_that_change_on_each_render_are_stored_again_after_a_purge() -> None:
    """A purge refuses the second store only for the tags it touched: a page whose added
    tags change on every render is cached again at once (review: the key's own new floor
    refused every later second store for a tombstone's life)."""
    clock = FakeClock()
    cache, responses = build(clock)
    handler = Handler(tags=("news",))

    async def tag_run() -> None:
        handler.tags = ("news", f"item:{handler.runs}")

    for run in range(1, 10):
        handler.during[run] = tag_run
    assert (await serve(responses, handler, request()))[1] == "run 1"
    assert (await serve(responses, handler, request()))[1] == "run 1"
    await cache.invalidate_tags("news")
    assert (await serve(responses, handler, request()))[1] == "run 2"
    assert (await serve(responses, handler, request()))[1] == "run 2"
    assert handler.runs == 2
    await cache.aclose()


@pytest.mark.anyio
async def test_a_second_purge_without_a_position_during_the_run_is_not_overwritten() -> None:
    """Review: a purge whose position is unknown leaves the same floor as an earlier one
    (PRIMARY_ONLY), so comparing floors missed it, and the second store under the added
    tag read the route tag's new version: the body rendered before the purge was served
    as current. The versions the run's fill read are compared now."""
    clock = FakeClock()
    cache, responses = build(clock)
    await cache.invalidate_tags("news")
    clock.advance(1)
    handler = Handler(tags=("news", "item:1"))
    handler.during[1] = lambda: cache.invalidate_tags("news")
    assert (await serve(responses, handler, request()))[1] == "run 1"
    assert (await serve(responses, handler, request()))[1] == "run 2"
    assert (await serve(responses, handler, request()))[1] == "run 2"
    await cache.aclose()
