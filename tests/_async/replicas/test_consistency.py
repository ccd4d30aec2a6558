"""Acceptance: read-your-writes and monotonic reads on the stack's real streaming replicas.

Faults (a paused replay, an apply delay) go to the shared stack and are undone by the
``lagging_stack`` fixture whatever the test's outcome.
"""

from __future__ import annotations

import itertools
from typing import Any

import psycopg
import pytest

from readscale import LATEST, BoundedStaleness, ReplicaSettings, TimeWindow, causal_context
from readscale._async.replicas.router import AsyncReplicaRouter
from readscale._core.cache.fill import PRIMARY_ONLY, entry_position
from readscale._shared.cache.fill_scope import fill_scope
from readscale._shared.primitives.locks import async_sleep
from readscale.stack import Stack
from readscale.testing.concurrency import async_gather
from tests._async.replicas.support import replayed_everywhere
from tests.replica_helpers import router_settings

pytestmark = [pytest.mark.stack, pytest.mark.chaos]


async def setup_table(router: AsyncReplicaRouter, table: str, rows: int) -> None:
    async with router.write() as conn:
        await conn.execute(f"CREATE TABLE IF NOT EXISTS {table} (id int PRIMARY KEY, n bigint NOT NULL)")
        await conn.execute(f"TRUNCATE {table}")
        await conn.execute(f"INSERT INTO {table} SELECT g, 0 FROM generate_series(0, {rows - 1}) g")
    await replayed_everywhere(router)


async def increment(router: AsyncReplicaRouter, table: str, row: int) -> int:
    async with router.write() as conn:
        cur = await conn.execute(f"UPDATE {table} SET n = n + 1 WHERE id = %s RETURNING n", (row,))
        got = await cur.fetchone()
    assert got is not None
    return int(got[0])


@pytest.mark.anyio
async def test_a_fill_that_reads_the_primary_learns_its_position_before_the_read(pg_stack: Stack) -> None:
    """A cache fill sent to the primary (a tombstone of unknown position) reports the
    primary's position read before its query, in the same round trip, so the entry
    records a real read position; before, it recorded none and a read_your_writes entry
    was never served to a session that wrote."""
    async with AsyncReplicaRouter(router_settings(pg_stack)) as router:
        await setup_table(router, "fill_position", 2)
        with causal_context():
            await increment(router, "fill_position", 0)
            token = router.context.token
            assert token is not None
            with fill_scope(PRIMARY_ONLY, 30.0) as scope:
                assert await router.fetch_one("SELECT n FROM fill_position WHERE id = %s", (0,)) == (1,)
        (read,) = scope.reads
        assert read.primary
        assert read.position is not None and read.position >= token.lsn
        assert entry_position(scope.reads) == read.position - 1


@pytest.mark.anyio
async def test_read_your_writes_with_one_replica_paused_and_the_other_delayed(lagging_stack: Stack) -> None:
    """2,000 write-then-read pairs from 20 concurrent sessions: 0 reads miss their own write."""
    sessions, pairs = 20, 100
    settings = router_settings(lagging_stack, wait_budget=0.5, max_pool_size=sessions + 5)
    async with AsyncReplicaRouter(settings) as router:
        await setup_table(router, "ryw_probe", sessions)
        lagging_stack.pause_replay("r1")
        lagging_stack.set_apply_delay("r2", 0.2)
        misses: list[tuple[int, int, int]] = []

        async def session(i: int) -> None:
            with causal_context():
                for _ in range(pairs):
                    wrote = await increment(router, "ryw_probe", i)
                    row = await router.fetch_one("SELECT n FROM ryw_probe WHERE id = %s", (i,))
                    assert row is not None
                    if row[0] != wrote:
                        misses.append((i, wrote, row[0]))

        await async_gather([lambda i=i: session(i) for i in range(sessions)])
        stats = router.stats()
        served = {s.name: s.reads for s in router.status()}

    assert misses == []
    assert stats.writes == sessions * pairs + 1
    assert stats.replica_reads + stats.primary_reads == sessions * pairs
    assert served["r1"] == 0, "the paused replica never replays a session's write"
    assert served["r2"] > 0, "the delayed replica serves the reads it has caught up with"
    assert stats.waits > 0


@pytest.mark.anyio
async def test_monotonic_reads_across_replicas_with_different_lags(lagging_stack: Stack) -> None:
    """1,000 reads of a counter while it moves: a session never sees it go back, although
    the same reads alternated over the two replicas directly do."""
    writer_settings = router_settings(lagging_stack)
    reader_settings = router_settings(lagging_stack, wait_budget=0.5, seed=7)
    async with AsyncReplicaRouter(writer_settings) as writer, AsyncReplicaRouter(reader_settings) as reader:
        await setup_table(writer, "mono_probe", 1)
        lagging_stack.set_apply_delay("r1", 0.1)
        done = False
        routed: list[int] = []
        direct: list[int] = []

        async def write_in_bursts() -> None:
            with causal_context():
                while not done:
                    for _ in range(20):
                        await increment(writer, "mono_probe", 0)
                    await async_sleep(0.15)

        async def read_through_the_router() -> None:
            nonlocal done
            try:
                with causal_context():
                    for _ in range(1000):
                        row = await reader.fetch_one("SELECT n FROM mono_probe WHERE id = 0")
                        assert row is not None
                        routed.append(int(row[0]))
            finally:
                done = True

        async def read_directly_alternating() -> None:
            dsns = [r.dsn for r in lagging_stack.replicas]
            conns = [await psycopg.AsyncConnection.connect(dsn, autocommit=True) for dsn in dsns]
            try:
                i = 0
                while not done:
                    cur = await conns[i % 2].execute("SELECT n FROM mono_probe WHERE id = 0")
                    got = await cur.fetchone()
                    direct.append(int(got[0]) if got else 0)
                    i += 1
                    await async_sleep(0.001)
            finally:
                for conn in conns:
                    await conn.close()

        await async_gather([write_in_bursts, read_through_the_router, read_directly_alternating])
        served = {s.name: s.reads for s in reader.status()}

    def steps_back(values: list[int]) -> int:
        return sum(1 for a, b in itertools.pairwise(values) if b < a)

    assert len(routed) == 1000
    assert steps_back(routed) == 0
    assert steps_back(direct) > 0, "the scenario must make naive reads go back in time"
    assert served["r1"] > 0
    assert served["r2"] > 0, f"reads should alternate over both replicas: {served}"


@pytest.mark.anyio
async def test_latest_sees_another_sessions_write_and_session_mode_may_not(lagging_stack: Stack) -> None:
    settings = router_settings(lagging_stack, wait_budget=0.05)
    async with AsyncReplicaRouter(settings) as router:
        await setup_table(router, "latest_probe", 1)
        lagging_stack.pause_replay("r1")
        lagging_stack.pause_replay("r2")
        with causal_context():
            wrote = await increment(router, "latest_probe", 0)
        with causal_context():  # another user, no token
            stale = await router.fetch_one("SELECT n FROM latest_probe WHERE id = 0")
            fresh = await router.fetch_one("SELECT n FROM latest_probe WHERE id = 0", mode=LATEST)
        stats = router.stats()
    assert stale == (wrote - 1,), "without a token any replica will do, even a paused one"
    assert fresh == (wrote,)
    assert stats.primary_reads == 1, "latest fell back to the primary: both replicas paused"


@pytest.mark.anyio
async def test_bounded_staleness_skips_a_replica_too_far_behind(lagging_stack: Stack) -> None:
    settings = router_settings(lagging_stack, poll_interval=0.05, wait_budget=0.0)
    async with AsyncReplicaRouter(settings) as router:
        await setup_table(router, "bounded_probe", 1)
        lagging_stack.pause_replay("r1")
        with causal_context():
            for _ in range(5):
                await increment(router, "bounded_probe", 0)
                await async_sleep(0.1)
        await router.poll()
        lag = {s.name: s.lag_seconds for s in router.status()}
        assert lag["r1"] is not None
        assert lag["r1"] >= 0.3
        with causal_context():
            for _ in range(50):
                await router.fetch_one("SELECT n FROM bounded_probe WHERE id = 0", mode=BoundedStaleness(0.2))
        tight = {s.name: s.reads for s in router.status()}

        async def loose_reader() -> None:
            with causal_context():
                for _ in range(10):
                    async with router.read(mode=BoundedStaleness(3600)) as conn:
                        await conn.execute("SELECT pg_sleep(0.005)")

        await async_gather([loose_reader for _ in range(8)])
        loose = {s.name: s.reads - tight[s.name] for s in router.status()}
    assert (tight["r1"], tight["r2"]) == (0, 50), "a tight bound sends every read to the current replica"
    assert loose["r1"] > 0, "a generous bound lets the lagging replica share the load"
    assert loose["r1"] + loose["r2"] == 80


@pytest.mark.anyio
async def test_the_time_window_rule_reads_stale_data_where_the_token_does_not(lagging_stack: Stack) -> None:
    settings = router_settings(lagging_stack, wait_budget=0.05)
    async with AsyncReplicaRouter(settings) as router:
        await setup_table(router, "window_probe", 1)
        lagging_stack.pause_replay("r1")
        lagging_stack.pause_replay("r2")
        with causal_context():
            wrote = await increment(router, "window_probe", 0)
            pinned = await router.fetch_one("SELECT n FROM window_probe WHERE id = 0", mode=TimeWindow(3600))
            expired = await router.fetch_one("SELECT n FROM window_probe WHERE id = 0", mode=TimeWindow(0))
            by_token = await router.fetch_one("SELECT n FROM window_probe WHERE id = 0")
        stats = router.stats()
    assert pinned == (wrote,), "inside its window the rule reads the primary"
    assert expired == (wrote - 1,), "past its window the rule reads a lagging replica: stale"
    assert by_token == (wrote,), "the token waits, then falls back to the primary"
    assert stats.time_window_primary_reads == 1
    assert stats.primary_reads == 1


@pytest.mark.anyio
async def test_all_replicas_paused_fall_back_within_the_budget_and_the_rate_limit_holds(
    lagging_stack: Stack,
) -> None:
    from readscale.errors import ReplicaUnavailableError
    from readscale.replicas import PrimaryProtection

    protection = PrimaryProtection(rate=0.0, burst=5, max_wait=0.0)
    settings = router_settings(lagging_stack, wait_budget=0.05, protection=protection)
    async with AsyncReplicaRouter(settings) as router:
        await setup_table(router, "fallback_probe", 1)
        lagging_stack.pause_replay("r1")
        lagging_stack.pause_replay("r2")
        results: list[Any] = []
        with causal_context():
            wrote = await increment(router, "fallback_probe", 0)
            for _ in range(20):
                try:
                    results.append(await router.fetch_one("SELECT n FROM fallback_probe WHERE id = 0"))
                except ReplicaUnavailableError as exc:
                    results.append(exc)
        stats = router.stats()
    served = [r for r in results if not isinstance(r, Exception)]
    refused = [r for r in results if isinstance(r, ReplicaUnavailableError)]
    assert served == [(wrote,)] * 5, "the burst is served by the primary, fresh"
    assert len(refused) == 15
    assert all(e.retry_after is not None and e.retry_after > 0 for e in refused)
    assert (stats.primary_reads, stats.refusals, stats.waits, stats.replica_reads) == (5, 15, 20, 0)


@pytest.mark.anyio
async def test_an_insert_position_token_is_safe_with_synchronous_commit_off(lagging_stack: Stack) -> None:
    settings = router_settings(lagging_stack, token_source="insert", wait_budget=1.0)
    async with AsyncReplicaRouter(settings) as router:
        await setup_table(router, "async_commit_probe", 1)
        lagging_stack.set_apply_delay("r1", 0.05)
        misses = 0
        with causal_context():
            # Each pair waits for the WAL writer's flush (wal_writer_delay, 200 ms): keep it short.
            for _ in range(25):
                async with router.write() as conn:
                    await conn.execute("SET LOCAL synchronous_commit = off")
                    cur = await conn.execute("UPDATE async_commit_probe SET n = n + 1 WHERE id = 0 RETURNING n")
                    wrote = await cur.fetchone()
                row = await router.fetch_one("SELECT n FROM async_commit_probe WHERE id = 0")
                misses += row != wrote
    assert misses == 0


def test_settings_helper_names_the_stack_replicas(pg_stack: Stack) -> None:
    settings: ReplicaSettings = router_settings(pg_stack)
    assert [name for name, _ in settings.replica_dsns] == ["r1", "r2"]
