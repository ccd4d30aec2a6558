"""An edge of several Varnish nodes: purges fan out to every node, each node is retried on
its own, and what a node missed is kept and replayed to it before anything else once it
answers again (the real-Varnish version is tests/stack/test_edge_tier.py)."""

from __future__ import annotations

import logging

import httpx
import pytest

from readscale._async.purge.base import RetryPolicy
from readscale._async.purge.varnish import AsyncVarnishPurger
from readscale.errors import ConfigurationError, PurgeError

A, B, C = "http://a.edge:6081", "http://b.edge:6081", "http://c.edge:6081"


class Edge:
    """A scripted edge: per host, whether it answers; records every request."""

    def __init__(self) -> None:
        self.down: set[str] = set()
        self.seen: list[httpx.Request] = []

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request)
        if f"http://{request.url.host}:{request.url.port}" in self.down:
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(200, text="Purged 1")

    def to(self, node: str) -> list[httpx.Request]:
        return [r for r in self.seen if f"http://{r.url.host}:{r.url.port}" == node]

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.MockTransport(self.handler))


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def purger(edge: Edge, clock: Clock, nodes: tuple[str, ...] = (A, B, C), **kw: object) -> AsyncVarnishPurger:
    retry = kw.pop("retry", RetryPolicy(attempts=1, base=1.0, cap=4.0))
    return AsyncVarnishPurger(nodes, client=edge.client(), retry=retry, clock=clock, **kw)  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_a_purge_goes_to_every_node() -> None:
    edge = Edge()
    p = purger(edge, Clock())
    result = await p.purge_tags(["product:1"], soft=False)
    await p.purge_urls(["https://shop.test/p/1"])
    assert [len(edge.to(n)) for n in (A, B, C)] == [2, 2, 2]
    assert result.requests == 3 and result.purged == 3
    assert {r.headers["xkey-purge"] for r in edge.seen if "xkey-purge" in r.headers} == {"product:1"}
    assert all(s.requests == 2 and s.failures == 0 for s in p.node_stats.values())


@pytest.mark.anyio
async def test_a_dead_node_is_retried_on_its_own_counted_logged_and_kept(caplog: pytest.LogCaptureFixture) -> None:
    edge = Edge()
    edge.down.add(B)
    p = purger(edge, Clock(), retry=RetryPolicy(attempts=3, base=0.0, cap=0.0))
    with caplog.at_level(logging.WARNING, logger="readscale.purge"):
        await p.purge_tags(["t1"])  # not raised: the others got it, B keeps it
    assert [len(edge.to(n)) for n in (A, B, C)] == [1, 3, 1]
    stats = p.node_stats
    assert (stats[A].failures, stats[B].failures, stats[C].failures) == (0, 1, 0)
    assert stats[B].retries == 2 and stats[B].backlog == 1
    record = next(r for r in caplog.records if "missed" in r.getMessage())
    assert record.node == B and record.backend == "varnish" and record.backlog == 1  # type: ignore[attr-defined]


@pytest.mark.anyio
async def test_a_node_that_answers_again_gets_what_it_missed_first() -> None:
    edge, clock = Edge(), Clock()
    edge.down.add(B)
    p = purger(edge, clock)
    await p.purge_tags(["soft1"])
    await p.purge_tags(["hard1"], soft=False)  # within B's backoff: not even tried
    await p.purge_urls(["https://shop.test/x"])
    assert len(edge.to(B)) == 1 and p.node_stats[B].backlog == 3
    edge.down.clear()
    clock.now += 10  # B's backoff is over
    await p.purge_tags(["next"])
    to_b = edge.to(B)[1:]
    assert [
        (r.method, r.url.path, dict(r.headers).get("xkey-purge"), dict(r.headers).get("xkey-softpurge")) for r in to_b
    ] == [
        ("PURGE", "/", "hard1", None),
        ("PURGE", "/", None, "soft1"),
        ("PURGE", "/x", None, None),
        ("PURGE", "/", None, "next"),
    ]
    assert p.node_stats[B].backlog == 0 and p.node_stats[B].replays == 1


@pytest.mark.anyio
async def test_replay_brings_a_node_back_without_a_new_purge() -> None:
    edge, clock = Edge(), Clock()
    edge.down.add(C)
    p = purger(edge, clock)
    await p.purge_tags(["t"])
    assert await p.replay() == 1  # still down
    edge.down.clear()
    assert await p.replay(force=False) == 1  # its backoff is not over
    clock.now += 10
    assert await p.replay(force=False) == 0
    assert [dict(r.headers).get("xkey-softpurge") for r in edge.to(C)] == ["t", "t", "t"]


@pytest.mark.anyio
async def test_an_overflowing_backlog_replays_as_one_ban_of_everything() -> None:
    edge = Edge()
    edge.down.add(A)
    p = purger(edge, Clock(), nodes=(A, B), backlog_limit=2)
    await p.purge_tags(["a", "b", "c"])
    edge.down.clear()
    await p.replay()
    assert dict(edge.to(A)[-1].headers).get("readscale-ban-all") == "1"
    assert p.node_stats[A].backlog == 0


@pytest.mark.anyio
async def test_a_purge_no_node_got_is_raised_naming_them() -> None:
    edge = Edge()
    edge.down.update({A, B})
    p = purger(edge, Clock(), nodes=(A, B))
    with pytest.raises(PurgeError) as caught:
        await p.purge_tags(["t"])
    assert caught.value.nodes == (A, B)
    assert all(s.backlog == 1 for s in p.node_stats.values())


@pytest.mark.anyio
async def test_without_a_backlog_one_node_missing_a_purge_is_raised() -> None:
    edge = Edge()
    edge.down.add(B)
    p = purger(edge, Clock(), nodes=(A, B), backlog_limit=None)
    with pytest.raises(PurgeError) as caught:
        await p.purge_urls(["/x"])
    assert caught.value.nodes == (B,) and p.node_stats[B].backlog == 0


@pytest.mark.parametrize("bad", [[], ["ftp://x"], ["not a url"]])
def test_a_malformed_node_list_is_refused(bad: list[str]) -> None:
    with pytest.raises(ConfigurationError, match="edge node"):
        AsyncVarnishPurger(bad)
