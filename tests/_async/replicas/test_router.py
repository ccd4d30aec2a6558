"""The router's contract on the shared stack: writes and their tokens, tokens from other
histories, lag reporting, the integration hooks, and misuse."""

from __future__ import annotations

import contextlib

import psycopg
import pytest

from readscale import LATEST, TimeWindow, causal_context
from readscale._async.replicas.router import AsyncReplicaRouter
from readscale.errors import ConfigurationError, ReadscaleError
from readscale.replicas import PRIMARY, CausalToken, current_context, use_mode
from readscale.stack import Stack
from tests.replica_helpers import restore_replicas, router_settings

pytestmark = pytest.mark.stack


async def make_table(router: AsyncReplicaRouter) -> None:
    async with router.write() as conn:
        await conn.execute("CREATE TABLE IF NOT EXISTS router_probe (id int PRIMARY KEY, v text)")
        await conn.execute("TRUNCATE router_probe")
        await conn.execute("INSERT INTO router_probe VALUES (1, 'one')")


async def failing_write(router: AsyncReplicaRouter) -> None:
    async with router.write() as conn:
        await conn.execute("UPDATE router_probe SET v = 'rolled back' WHERE id = 1")
        raise RuntimeError("boom")


async def write_swallowing_an_error(router: AsyncReplicaRouter) -> None:
    async with router.write() as conn:
        await conn.execute("UPDATE router_probe SET v = 'lost' WHERE id = 1")
        # The mistake under test: the error is swallowed, the aborted transaction goes on.
        with contextlib.suppress(psycopg.errors.UndefinedTable):
            await conn.execute("SELECT * FROM no_such_table")


async def empty_write(router: AsyncReplicaRouter) -> None:
    async with router.write():
        pass


@pytest.mark.anyio
async def test_a_write_advances_the_token_and_a_failed_write_does_not(pg_stack: Stack) -> None:
    async with AsyncReplicaRouter(router_settings(pg_stack)) as router:
        await make_table(router)
        with causal_context() as ctx:
            assert ctx.token is None
            async with router.write() as conn:
                await conn.execute("UPDATE router_probe SET v = 'two' WHERE id = 1")
            first = ctx.token
            assert first is not None
            assert ctx.written_at is not None
            with pytest.raises(RuntimeError, match="boom"):
                await failing_write(router)
            assert ctx.token == first, "a rolled-back write mints no token"
            assert await router.fetch_one("SELECT v FROM router_probe WHERE id = 1") == ("two",)
            # A block that commits by itself still gets a token read after its commit.
            async with router.write() as conn:
                await conn.execute("UPDATE router_probe SET v = 'three' WHERE id = 1")
                await conn.execute("COMMIT")
            assert ctx.token is not None
            assert ctx.token.lsn > first.lsn
            assert await router.fetch_one("SELECT v FROM router_probe WHERE id = 1") == ("three",)
        assert router.stats().writes == 3


@pytest.mark.anyio
async def test_a_swallowed_error_in_a_write_is_not_committed_silently(pg_stack: Stack) -> None:
    async with AsyncReplicaRouter(router_settings(pg_stack)) as router:
        await make_table(router)
        with causal_context(), pytest.raises(ReadscaleError, match="rolled back, not committed"):
            await write_swallowing_an_error(router)
        assert await router.fetch_one("SELECT v FROM router_probe WHERE id = 1", mode=LATEST) == ("one",)


@pytest.mark.anyio
async def test_query_errors_propagate_unchanged_and_are_not_retried(pg_stack: Stack) -> None:
    async with AsyncReplicaRouter(router_settings(pg_stack)) as router:
        with pytest.raises(psycopg.errors.UndefinedTable):
            await router.fetch("SELECT * FROM no_such_table")
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            await router.fetch("CREATE TABLE on_a_replica (id int)")
        stats = router.stats()
    assert (stats.retries, stats.refusals, stats.replica_reads) == (0, 0, 0)


@pytest.mark.anyio
async def test_a_token_from_another_cluster_or_timeline_is_reset_not_compared(pg_stack: Stack) -> None:
    async with AsyncReplicaRouter(router_settings(pg_stack)) as router:
        await make_table(router)
        live = router.status()
        assert live
        foreign = CausalToken(system_identifier=12345, timeline=1, lsn=2**60)
        with causal_context(foreign) as ctx:
            assert await router.fetch_one("SELECT v FROM router_probe WHERE id = 1") == ("one",)
            assert ctx.token is not None
            assert ctx.token.system_identifier != 12345, "replaced by the live cluster's position"
            assert ctx.resets == 1
        with causal_context() as ctx:
            async with router.write() as conn:
                await conn.execute("SELECT 1")
            assert ctx.token is not None
            other_timeline = CausalToken(ctx.token.system_identifier, ctx.token.timeline + 1, 2**60)
        with causal_context(other_timeline):
            assert await router.fetch_one("SELECT 1") == (1,)
        stats = router.stats()
    assert stats.tokens_reset == 2
    assert stats.primary_reads == 0, "a reset token waits for nothing"


@pytest.mark.anyio
async def test_lag_is_reported_in_bytes_and_seconds_and_an_idle_primary_is_not_lag(pg_stack: Stack) -> None:
    restore_replicas(pg_stack)
    try:
        async with AsyncReplicaRouter(router_settings(pg_stack, poll_interval=0.05)) as router:
            await make_table(router)
            pg_stack.pause_replay("r1")
            for _ in range(5):
                async with router.write() as conn:
                    await conn.execute("UPDATE router_probe SET v = repeat('x', 500) WHERE id = 1")
            await router.poll()
            status = {s.name: s for s in router.status()}
            assert status["r1"].lag_bytes is not None
            assert status["r1"].lag_bytes > 0
            assert status["r1"].lag_seconds is not None
            assert status["r1"].lag_seconds > 0
            pg_stack.resume_replay("r1")
            for _ in range(100):
                await router.poll()
                if {s.name: s.lag_bytes for s in router.status()}["r1"] == 0:
                    break
            status = {s.name: s for s in router.status()}
    finally:
        restore_replicas(pg_stack)
    assert status["r1"].lag_bytes == 0
    assert status["r1"].lag_seconds == 0.0
    assert status["r2"].lag_seconds == 0.0
    assert status[PRIMARY].role == "primary"


@pytest.mark.anyio
async def test_route_read_and_observe_commit_serve_other_libraries(pg_stack: Stack) -> None:
    async with AsyncReplicaRouter(router_settings(pg_stack)) as router:
        await make_table(router)
        with causal_context() as ctx:
            # A commit made on a connection the router does not own (an ORM's).
            async with await psycopg.AsyncConnection.connect(pg_stack.primary.dsn, autocommit=True) as conn:
                await conn.execute("UPDATE router_probe SET v = 'orm' WHERE id = 1")
            token = await router.observe_commit()
            assert ctx.token == token
            name = await router.route_read()
            assert name in ("r1", "r2")
            dsn = {r.name: r.dsn for r in pg_stack.replicas}[name]
            async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
                row = await (await conn.execute("SELECT v FROM router_probe WHERE id = 1")).fetchone()
            assert row == ("orm",)
            with use_mode(TimeWindow(3600)):
                assert await router.route_read() == PRIMARY, "use_mode applies to reads that name no mode"


@pytest.mark.anyio
async def test_without_a_context_the_router_uses_one_for_the_whole_process(pg_stack: Stack) -> None:
    async with AsyncReplicaRouter(router_settings(pg_stack)) as router:
        assert current_context() is None
        await make_table(router)
        assert router.default_context.token is not None
        assert await router.fetch_one("SELECT v FROM router_probe WHERE id = 1") == ("one",)


@pytest.mark.anyio
async def test_a_closed_router_refuses_clearly(pg_stack: Stack) -> None:
    router = AsyncReplicaRouter(router_settings(pg_stack))
    with pytest.raises(ConfigurationError, match="not open"):
        await router.fetch("SELECT 1")
    with pytest.raises(ConfigurationError, match="not open"):
        await empty_write(router)
