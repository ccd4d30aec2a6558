"""Monotonic reads through each read API of the router (issue 12, defect 1).

A read's guard proves the replica has replayed the session's token *before* the read's
snapshot; the snapshot itself may be taken later (a slow statement, a long ``read()``
block, a library that runs its query after ``route_read``) and see commits the guard
did not. The session's next read must not be routed to a replica behind what that
snapshot saw. The scenario (tests/replica_helpers.py): r2 replays 0.5 s late, a writer
bumps a counter every 10 ms, sessions read late on one node and read again 0.3 s later.
Each test records every read of every session and checks the history: 0 go-backs, while
the control shows r2 was behind the first read (a read routed there would have gone back).
"""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
import pytest

from readscale import LATEST, causal_context
from readscale._async.replicas.router import AsyncReplicaRouter
from readscale._shared.primitives.locks import async_sleep
from readscale.replicas import PRIMARY, current_context
from readscale.stack import Stack
from readscale.testing.concurrency import async_gather
from tests.replica_helpers import (
    GAP,
    LATE,
    LATE_READ_SQL,
    READ_SQL,
    MonotonicHistory,
    prepare_monotonic,
    r2_delayed,
    router_settings,
    steady_writes,
)

pytestmark = [pytest.mark.stack, pytest.mark.chaos]

SESSIONS = 12
PAIRS = 4
Row = tuple[Any, ...]


async def fetch_late(router: AsyncReplicaRouter) -> Row:
    rows = await router.fetch(LATE_READ_SQL, (LATE,))
    return rows[0]


async def fetch_now(router: AsyncReplicaRouter) -> Row:
    rows = await router.fetch(READ_SQL)
    return rows[0]


async def fetch_one_late(router: AsyncReplicaRouter) -> Row:
    row = await router.fetch_one(LATE_READ_SQL, (LATE,))
    assert row is not None
    return row


async def fetch_one_now(router: AsyncReplicaRouter) -> Row:
    row = await router.fetch_one(READ_SQL)
    assert row is not None
    return row


async def block_read(router: AsyncReplicaRouter, *, late: float, ending: str) -> Row:
    """One ``read()`` block whose statement runs ``late`` seconds after the guard, leaving
    the connection as ``ending`` says: idle, inside an open REPEATABLE READ transaction,
    or inside a failed transaction."""
    async with router.read() as conn:
        if ending == "repeatable read":
            await conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        elif ending == "failed":
            await conn.execute("BEGIN")
        await async_sleep(late)
        row = await (await conn.execute(READ_SQL)).fetchone()
        if ending == "failed":
            with pytest.raises(psycopg.errors.DivisionByZero):
                await conn.execute("SELECT 1 / 0")
    assert row is not None
    return row


class Routed:
    """``route_read`` as another library uses it: the router picks and guards a node, the
    statement then runs on that library's own connection to it."""

    def __init__(self, router: AsyncReplicaRouter, dsns: dict[str, str]) -> None:
        self.router = router
        self.dsns = dsns
        self.conns: dict[str, psycopg.AsyncConnection[Any]] = {}

    async def read(self, *, late: float) -> Row:
        name = await self.router.route_read()
        conn = self.conns.get(name)
        if conn is None:
            conn = self.conns[name] = await psycopg.AsyncConnection.connect(self.dsns[name], autocommit=True)
        await async_sleep(late)
        row = await (await conn.execute(READ_SQL)).fetchone()
        assert row is not None
        return row

    async def close(self) -> None:
        for conn in self.conns.values():
            await conn.close()


async def run_sessions(
    stack: Stack,
    router: AsyncReplicaRouter,
    first: Callable[[AsyncReplicaRouter, Any], Awaitable[Row]],
    second: Callable[[AsyncReplicaRouter, Any], Awaitable[Row]],
    make_state: Callable[[], Any] = lambda: None,
) -> MonotonicHistory:
    history = MonotonicHistory.of(stack)
    r2_dsn = stack.replica("r2").dsn

    async def session(i: int) -> None:
        state = make_state()
        control = await psycopg.AsyncConnection.connect(r2_dsn, autocommit=True)
        try:
            with causal_context():
                step = 0
                for _ in range(PAIRS):
                    value, port = await first(router, state)
                    history.record(i, step, value, port)
                    await async_sleep(GAP)
                    seen = await (await control.execute(READ_SQL)).fetchone()
                    assert seen is not None
                    history.control(int(value), seen[0])
                    value, port = await second(router, state)
                    history.record(i, step + 1, value, port)
                    step += 2
        finally:
            await control.close()
            if state is not None:
                await state.close()

    with steady_writes(stack):
        await async_gather([lambda i=i: session(i) for i in range(SESSIONS)])
    return history


@pytest.fixture
def monotonic_stack(lagging_stack: Stack) -> Stack:
    prepare_monotonic(lagging_stack)
    return lagging_stack


def settings_for(stack: Stack) -> Any:
    return router_settings(stack, wait_budget=1.0, max_pool_size=SESSIONS + 5, poll_interval=0.05)


def check(history: MonotonicHistory) -> None:
    assert len(history.reads) == SESSIONS * PAIRS * 2
    assert history.would_go_back() > 0, f"the scenario must put r2 behind first reads: {history.summary()}"
    assert history.go_backs() == [], history.summary()


@pytest.mark.anyio
@pytest.mark.parametrize("api", ["fetch", "fetch_one"])
async def test_fetch_never_goes_back_after_a_read_whose_snapshot_saw_past_its_guard(
    monotonic_stack: Stack, api: str
) -> None:
    late, now = (fetch_late, fetch_now) if api == "fetch" else (fetch_one_late, fetch_one_now)
    async with AsyncReplicaRouter(settings_for(monotonic_stack)) as router:
        with r2_delayed(monotonic_stack):
            history = await run_sessions(monotonic_stack, router, lambda r, _: late(r), lambda r, _: now(r))
        stats = router.stats()
    check(history)
    assert stats.settles == 0, "the position comes back in the read's own round trip"


@pytest.mark.anyio
@pytest.mark.parametrize("ending", ["idle", "repeatable read", "failed"])
async def test_a_read_block_merges_what_its_statements_saw_whatever_state_it_ends_in(
    monotonic_stack: Stack, ending: str
) -> None:
    async with AsyncReplicaRouter(settings_for(monotonic_stack)) as router:
        with r2_delayed(monotonic_stack):
            history = await run_sessions(
                monotonic_stack,
                router,
                lambda r, _: block_read(r, late=LATE, ending=ending),
                lambda r, _: block_read(r, late=0, ending="idle"),
            )
        stats = router.stats()
    check(history)
    assert stats.settles == 0, "each block's position was read on its own connection when it ended"


@pytest.mark.anyio
async def test_route_read_never_goes_back_when_the_statement_runs_on_another_connection(
    monotonic_stack: Stack,
) -> None:
    async with AsyncReplicaRouter(settings_for(monotonic_stack)) as router:
        dsns = dict(router.settings.replica_dsns)
        dsns["primary"] = router.settings.primary
        with r2_delayed(monotonic_stack):
            history = await run_sessions(
                monotonic_stack,
                router,
                lambda r, routed: routed.read(late=LATE),
                lambda r, routed: routed.read(late=0),
                make_state=lambda: Routed(router, dsns),
            )
    check(history)


@pytest.mark.anyio
async def test_a_read_nested_in_an_open_block_never_goes_back(monotonic_stack: Stack) -> None:
    """While a ``read()`` block is open its statements are unsettled: a read the session
    makes inside it stays on the block's node (or reads its position first)."""

    async def nested(router: AsyncReplicaRouter, _: Any) -> Row:
        async with router.read() as conn:
            await async_sleep(LATE)
            row = await (await conn.execute(READ_SQL)).fetchone()
            assert row is not None
            await async_sleep(GAP)
            inner = await router.fetch_one(READ_SQL)
        assert inner is not None
        return row[0] if inner[0] >= row[0] else -1, inner[1]

    async with AsyncReplicaRouter(settings_for(monotonic_stack)) as router:
        with r2_delayed(monotonic_stack):
            history = await run_sessions(monotonic_stack, router, nested, lambda r, _: fetch_one_now(r))
    assert history.reads, history.summary()
    assert all(value >= 0 for _, _, value, _ in history.reads), "a read inside a block went back"
    assert history.go_backs() == [], history.summary()


async def positions(router: AsyncReplicaRouter) -> dict[str, int]:
    await router.poll()
    return {s.name: s.replay_lsn for s in router.status() if s.replay_lsn is not None}


@pytest.mark.anyio
async def test_unsettled_reads_on_two_nodes_are_settled_before_the_next_read_routes(pg_stack: Stack) -> None:
    """One position read per unsettled node, then the read routes with a target that
    covers them; a settled session reads with no extra round trip."""
    async with AsyncReplicaRouter(router_settings(pg_stack)) as router:
        with causal_context() as ctx:
            router.note_read("r1")
            router.note_read("r2")
            before = await positions(router)
            await router.fetch_one("SELECT 1")
            stats = router.stats()
            assert stats.settles == 2
            assert ctx.token is not None
            assert ctx.token.lsn >= max(before["r1"], before["r2"])
            assert ctx.unsettled(router) == {}
            await router.fetch_one("SELECT 1")
            assert router.stats().settles == 2, "nothing left to settle: no extra round trip"


@pytest.mark.anyio
async def test_a_session_stays_on_its_unsettled_node_and_its_guard_settles_it(pg_stack: Stack) -> None:
    async with AsyncReplicaRouter(router_settings(pg_stack)) as router:
        ports = {r.port: r.name for r in pg_stack.replicas}
        with causal_context() as ctx:
            for node in ("r1", "r2", "r1", "r2"):
                router.note_read(node)
                row = await router.fetch_one("SELECT inet_server_port()")
                assert row is not None
                assert ports[row[0]] == node, "the read stayed on the node its session read last"
                assert ctx.unsettled(router) == {}
        assert router.stats().settles == 0, "the guard did the settling"


@pytest.mark.anyio
async def test_a_context_every_session_shares_settles_instead_of_staying(pg_stack: Stack) -> None:
    """Without a causal context the router's process-wide one is used: staying on the
    last node there would pile every session's reads onto one replica."""
    async with AsyncReplicaRouter(router_settings(pg_stack)) as router:
        assert current_context() is None
        router.note_read("r1")
        await router.fetch_one("SELECT 1")
        assert router.stats().settles == 1
        assert router.default_context.unsettled(router) == {}


@pytest.mark.anyio
async def test_a_primary_read_is_settled_by_the_primary_position_and_a_write_settles_everything(
    pg_stack: Stack,
) -> None:
    async with AsyncReplicaRouter(router_settings(pg_stack)) as router:
        with causal_context() as ctx:
            router.note_read(PRIMARY)
            await router.poll()
            primary_before = router.status()[0].replay_lsn
            assert primary_before is not None
            await router.fetch_one("SELECT 1")
            assert router.stats().settles == 1
            assert ctx.token is not None
            assert ctx.token.lsn >= primary_before
            router.note_read("r1")
            router.note_read(PRIMARY)
            async with router.write() as conn:
                await conn.execute("SELECT 1")
            assert ctx.unsettled(router) == {}, "the commit's position bounds every earlier read"
            router.note_read("r2")
            await router.observe_commit()
            assert ctx.unsettled(router) == {}
            router.note_read("r2")
            await router.fetch_one("SELECT 1", mode=LATEST)
            assert ctx.unsettled(router) == {}, "a latest read's target bounds them too"
            router.note_read("r2")
            await router.settle()
            assert ctx.unsettled(router) == {}
        assert router.stats().settles == 2


@pytest.mark.anyio
async def test_an_unsettled_node_that_cannot_tell_its_position_is_bounded_by_the_primary(pg_stack: Stack) -> None:
    """A replica that is gone cannot say how far the session's reads there saw; no
    replica replays past the primary, so its position bounds them."""
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        gone = f"postgresql://postgres@127.0.0.1:{closed.getsockname()[1]}/postgres"
    replicas = {r.name: r.dsn for r in pg_stack.replicas} | {"r3": gone}
    settings = router_settings(pg_stack, replicas=replicas, connect_timeout=0.5, acquire_timeout=0.5)
    async with AsyncReplicaRouter(settings) as router:
        with causal_context() as ctx:
            router.note_read("r3")
            await router.poll()
            primary_before = router.status()[0].replay_lsn
            assert primary_before is not None
            await router.fetch_one("SELECT 1")
            assert ctx.token is not None
            assert ctx.token.lsn >= primary_before
            assert ctx.unsettled(router) == {}
        stats = router.stats()
    assert stats.settles == 2, "r3 (no answer), then the primary"
    assert stats.positions_unknown == 0
