"""The response cache: rendered public responses kept in readscale's cache (L1 + L2), for
a service with no edge in front, or as a second tier behind one. Written once, async;
``readscale._sync.http.response_cache`` is generated from this file.

The rules are in ``readscale._core.http.stored`` (which request may use it, which
response may be stored, keys, freshness, Age, 304s); this driver fetches, asks, acts.
The cache gives what an edge gives: one handler run per key under any concurrency
(``get_or_load``: single-flight in the process, a lease across processes), tags (the
surrogate keys the edge gets: ``cache.invalidate_tags(tag)`` empties both, through the
cache's ``purger``), and stale-while-revalidate (a stale response is served while one
background run refreshes it). The faces (``readscale.starlette``, ``readscale.django``)
turn a request into a :class:`ResponseRequest` and the handler into ``run``.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from readscale._async.cache.cache import AsyncCache
from readscale._core.cache.fill import PRIMARY_ONLY, ReadReport
from readscale._core.cache.novalue import NO_VALUE
from readscale._core.cache.policy import CachePolicy
from readscale._core.http.conditional import NO_CONDITIONALS, Conditionals
from readscale._core.http.policy import HttpPolicy
from readscale._core.http.stored import (
    FieldGetter,
    Fields,
    LookupPlan,
    Reuse,
    StoredResponse,
    age_seconds,
    answer,
    cache_status,
    lookup_plan,
    matches,
    refusal,
    response_key,
    reuse,
    to_store,
)
from readscale._shared.cache.fill_scope import current_fill, report_primary_read, report_unknown_read
from readscale._shared.http.stats import ResponseCacheStats
from readscale._shared.primitives.tasks import AsyncBackground
from readscale.codecs import BytesCodec
from readscale.errors import CacheUnavailableError

log = logging.getLogger("readscale.http")

_BYTES = BytesCodec()
DEFAULT_STORAGE = CachePolicy(name="responses", l1_ttl=30.0)
# How many URLs' handler-added tags a process remembers (see AsyncResponseCache._retag).
_LEARNED_KEYS = 10_000


@dataclass(frozen=True, slots=True)
class ResponseRequest:
    """What the response cache needs of a request: ``url`` is scheme, host, path and
    query; ``field(name)`` a request field's combined value (lower-case name);
    ``identity`` the identity fields it carried (``carried_identity``); ``policy`` the
    route's declared policy (known before the handler runs)."""

    method: str
    url: str
    policy: HttpPolicy | None
    field: FieldGetter
    identity: frozenset[str] = frozenset()
    forwarded: str | None = None
    conditionals: Conditionals = NO_CONDITIONALS


@dataclass(frozen=True, slots=True)
class Rendered:
    """A response as the handler (behind the HTTP middleware) produced it; ``tags``: the
    surrogate keys it was tagged with (the route's and ``add_tags``')."""

    status: int
    fields: Fields
    body: bytes
    tags: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Served:
    """What to send: ``source`` is ``hit``, ``stale``, ``miss`` (this request's handler
    filled the cache) or ``pass`` (not stored)."""

    status: int
    fields: Fields
    body: bytes
    drop_body: bool
    source: str


class _NotStored(Exception):
    """The loader's response may not be stored: it goes back to the request that ran it
    (the lease is released); the requests that waited for it run their own handler."""

    def __init__(self, rendered: Rendered, owner: object, reason: str) -> None:
        super().__init__(reason)
        self.rendered = rendered
        self.owner = owner


@dataclass
class _Fill:
    """One request's view of a fill: whether its own handler ran (and what it gave)."""

    owner: object = field(default_factory=object)
    rendered: Rendered | None = None
    #: What the fill's reads were and the floor they had to meet (the handler's run):
    #: the second store under handler-added tags is judged on them (``_retag``).
    reads: tuple[ReadReport, ...] = ()
    floor: int | None = None
    versions: tuple[tuple[str, int], ...] = ()


class AsyncResponseCache:
    """Stores rendered public responses in ``cache``, keyed on what they vary on.

    Arguments:
        cache: the application cache (its L1, L2, leases, tags and purger are used).
        storage: the base cache policy of stored responses (tiers, ``l1_ttl``, lease
            times); each route's TTL comes from its :class:`HttpPolicy`.
        max_body: larger responses are passed through, never stored (bytes).
        clock: wall-clock seconds (Age and freshness).
    """

    def __init__(
        self,
        cache: AsyncCache,
        *,
        storage: CachePolicy = DEFAULT_STORAGE,
        max_body: int = 1 << 20,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.cache = cache
        self.storage = storage
        self.max_body = max_body
        self.clock = clock
        self.stats = ResponseCacheStats()
        self.background: AsyncBackground[str] = AsyncBackground(on_error=self._refresh_failed)
        # key -> the tags its handler added last time (``add_tags``): its next fills carry
        # them from the start, so their versions are read before the handler runs.
        self._learned: dict[str, tuple[str, ...]] = {}

    def plan(self, request: ResponseRequest) -> LookupPlan | None:
        """How this request may use the cache; None: pass it through untouched."""
        return lookup_plan(request.method, request.policy, request.identity, request.forwarded, self.storage)

    async def serve(self, request: ResponseRequest, plan: LookupPlan, run: Callable[[], Awaitable[Rendered]]) -> Served:
        """Answer ``request`` from the cache, running ``run`` (the handler, without the
        request's preconditions) at most once per key however many requests wait."""
        assert request.policy is not None
        names = plan.names
        for attempt in range(2):
            key = response_key(request.method, request.url, names, request.field)
            tags = self._tags_for(key, request.policy.tags)
            fill = _Fill()
            try:
                raw = await self.cache.get_or_load(
                    key,
                    lambda fill=fill: self._load(request, run, fill),  # type: ignore[misc]
                    policy=plan.storage,
                    codec=_BYTES,
                    tags=tags,
                )
            except _NotStored as exc:
                if exc.owner is fill.owner:
                    return self._passed(request, exc.rendered)
                return self._passed(request, await run())  # someone else's response was not for sharing
            stored = StoredResponse.decode(raw) if isinstance(raw, bytes) else None
            if stored is None:
                return self._passed(request, fill.rendered or await run())
            if fill.rendered is not None:
                self.stats.misses += 1
                await self._retag(key, stored, plan, tags, fill, request.policy.tags)
                return self._answer(request, stored, "miss")
            if not matches(stored, request.field):
                wider = tuple(sorted({*stored.vary, *plan.names}))
                if attempt == 0 and wider != names:
                    names = wider  # the response varies on more than the route declared
                    continue
                break
            state = reuse(stored, self.clock())
            if state is Reuse.EXPIRED:  # the handler chose a shorter life than its route declares
                return await self._refill_now(request, plan, key, run, tags)
            if state is Reuse.STALE:
                self.stats.stale += 1
                self.background.spawn(key, lambda key=key, tags=tags: self._refresh(request, plan, key, run, tags))  # type: ignore[misc]
                return self._answer(request, stored, "stale")
            self.stats.hits += 1
            return self._answer(request, stored, "hit")
        return self._passed(request, await run())

    async def _load(self, request: ResponseRequest, run: Callable[[], Awaitable[Rendered]], fill: _Fill) -> bytes:
        rendered = await run()
        # The handler's reads are taken as current, as the edge takes them: reads it made
        # through the replica router are reported too, and the oldest one bounds the fill.
        report_primary_read()
        fill.rendered = rendered
        scope = current_fill()
        if scope is not None:
            fill.reads, fill.floor, fill.versions = tuple(scope.reads), scope.floor_lsn, scope.tag_versions
        stored = self._storable(request, rendered)
        if stored is None:
            raise _NotStored(rendered, fill.owner, "not storable")
        return stored.encode()

    def _storable(self, request: ResponseRequest, rendered: Rendered) -> StoredResponse | None:
        reason = refusal(rendered.status, rendered.fields, len(rendered.body), self.max_body)
        if reason is not None:
            self.stats.refused += 1
            log.debug("readscale.http: response of %s not stored: %s", request.url, reason)
            return None
        self.stats.stored += 1
        return to_store(rendered.status, rendered.fields, rendered.body, self.clock(), request.field, rendered.tags)

    def _tags_for(self, key: str, declared: tuple[str, ...]) -> tuple[str, ...]:
        """The route's tags and those its handler added for ``key`` last time (stored
        merged: a hit builds nothing)."""
        learned = self._learned.get(key)
        return declared if learned is None else learned

    def _learn(self, key: str, tags: tuple[str, ...]) -> None:
        learned = self._learned
        learned.pop(key, None)
        if len(learned) >= _LEARNED_KEYS:
            with contextlib.suppress(KeyError, StopIteration, RuntimeError):  # another thread was first
                del learned[next(iter(learned))]
        learned[key] = tags

    async def _retag(
        self,
        key: str,
        stored: StoredResponse,
        plan: LookupPlan,
        known: tuple[str, ...],
        fill: _Fill,
        declared: tuple[str, ...],
    ) -> None:
        """Tags the handler added (``add_tags``) are known only after it ran: the entry
        is stored again under all of them, so a purge of any empties it.

        That second store is a fill (:meth:`AsyncCache.refill`: a ticket, the tags'
        versions read first) of the body ``fill``'s handler run rendered, judged on that
        run's reads. The added tags' versions were not read before it ran, so it is
        refused, and the entry removed, when an added tag's floor stands (an
        invalidation within a tombstone's life, perhaps during the run), when a version
        the run's fill read has changed, or when the floors moved since the run began.
        The tags are remembered for the key: its next fills carry them from the start,
        versions read before the handler runs, and need no second store."""
        added = tuple(sorted(set(stored.tags) - set(known) - set(plan.storage.tags)))
        if not added:
            return
        self._learn(key, tuple(dict.fromkeys((*declared, *stored.tags))))
        encoded = stored.encode()
        current = True

        async def already_rendered() -> bytes:
            nonlocal current
            scope = current_fill()
            # A purge of a tag the run's fill knew bumped its version (the floor may not
            # show it: one with an unknown position leaves the same PRIMARY_ONLY floor).
            now = dict(scope.tag_versions) if scope is not None else {}
            moved = (
                scope is None
                or scope.floor_lsn != fill.floor
                or any(now.get(tag, version) != version for tag, version in fill.versions)
            )
            if not moved:
                try:
                    _, added_floor = await self.cache.filler.loads.fill_floors(added, plan.storage)
                except CacheUnavailableError:
                    added_floor = PRIMARY_ONLY
                moved = added_floor is not None
            if moved:
                current = False
                report_unknown_read()  # refused, visibly: read before these floors were known
            elif scope is not None:
                scope.reads.extend(fill.reads)  # judged as the run's own fill was
            return encoded

        await self.cache.refill(key, already_rendered, policy=plan.storage, codec=_BYTES, tags=stored.tags)
        if current:
            return
        try:
            await self.cache.invalidate(key, policy=plan.storage)
        except CacheUnavailableError as exc:
            log.warning(
                "readscale.http: a stored response without its added tags could not be removed: %s",
                exc,
                extra={"event": "response_cache_retag_failed", "key": key, "reason": str(exc)},
            )

    async def _load_again(
        self,
        request: ResponseRequest,
        plan: LookupPlan,
        key: str,
        run: Callable[[], Awaitable[Rendered]],
        tags: tuple[str, ...],
    ) -> tuple[StoredResponse | None, Rendered | None]:
        """Run the handler again now and store its response as a fill (an invalidation
        during the run refuses it; so does its second store under added tags). Returns
        the response as stored (None: it may not be stored) and what the handler gave."""
        fill = _Fill()
        try:
            raw = await self.cache.refill(
                key, lambda: self._load(request, run, fill), policy=plan.storage, codec=_BYTES, tags=tags
            )
        except _NotStored as exc:
            return None, exc.rendered
        stored = StoredResponse.decode(raw)  # None: not what _load encodes
        if stored is not None:
            await self._retag(key, stored, plan, tags, fill, _declared(request))
        return stored, fill.rendered

    async def _refill_now(
        self,
        request: ResponseRequest,
        plan: LookupPlan,
        key: str,
        run: Callable[[], Awaitable[Rendered]],
        tags: tuple[str, ...],
    ) -> Served:
        """A stored response past its own freshness (shorter than the route's): loaded
        again now."""
        stored, rendered = await self._load_again(request, plan, key, run, tags)
        if stored is None:
            return self._passed(request, rendered or await run())
        self.stats.misses += 1
        return self._answer(request, stored, "miss")

    async def _refresh(
        self,
        request: ResponseRequest,
        plan: LookupPlan,
        key: str,
        run: Callable[[], Awaitable[Rendered]],
        tags: tuple[str, ...],
    ) -> None:
        """Stale-while-revalidate: one background run per key stores the new response."""
        stored, _ = await self._load_again(request, plan, key, run, tags)
        if stored is not None:
            self.stats.refreshed += 1

    def _refresh_failed(self, key: str, exc: BaseException) -> None:
        log.warning(
            "readscale.http: background refresh of a stored response failed: %s",
            exc,
            extra={"event": "response_cache_refresh_failed", "key": key, "reason": str(exc)},
        )

    def _answer(self, request: ResponseRequest, stored: StoredResponse, source: str) -> Served:
        now = self.clock()
        status, fields, drop = answer(
            request.method,
            stored.status,
            stored.fields,
            request.conditionals,
            age_seconds(stored, now),
            cache_status(source, stored, now),
        )
        return Served(status, fields, b"" if drop else stored.body, drop, source)

    def _passed(self, request: ResponseRequest, rendered: Rendered) -> Served:
        self.stats.passes += 1
        member = cache_status("pass", None, self.clock())
        status, fields, drop = answer(
            request.method, rendered.status, rendered.fields, request.conditionals, None, member
        )
        return Served(status, fields, b"" if drop else rendered.body, drop, "pass")

    async def lookup(self, key: str) -> StoredResponse | None:
        """The stored response under ``key`` (tests, debugging), or None."""
        raw = await self.cache.get(key, policy=self.storage, codec=_BYTES)
        return None if raw is NO_VALUE or not isinstance(raw, bytes) else StoredResponse.decode(raw)

    async def drain(self) -> None:
        """Wait for background refreshes (tests, shutdown)."""
        await self.background.drain()


def _declared(request: ResponseRequest) -> tuple[str, ...]:
    return request.policy.tags if request.policy is not None else ()
