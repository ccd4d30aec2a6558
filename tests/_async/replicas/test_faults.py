"""Acceptance: replicas and the primary failing under load, on private stacks of real servers."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from readscale import LATEST, BoundedStaleness, causal_context
from readscale._async.replicas.router import AsyncReplicaRouter
from readscale._shared.primitives.locks import async_sleep
from readscale.errors import PrimaryUnavailableError, ReplicaUnavailableError
from readscale.replicas import HealthPolicy
from readscale.stack import Stack, StackConfig
from readscale.testing.concurrency import async_gather
from tests._async.replicas.support import replayed_everywhere
from tests.replica_helpers import router_settings

pytestmark = [pytest.mark.stack, pytest.mark.chaos, pytest.mark.slow]

FAST_HEALTH = HealthPolicy(eject_after=2, readmit_after=2)


@pytest.fixture
def private_stack(readscale_stack_factory: Callable[[StackConfig], Stack]) -> Stack:
    return readscale_stack_factory(StackConfig(redis=False))


def health_of(router: AsyncReplicaRouter) -> dict[str, str]:
    return {s.name: s.status for s in router.status()}


async def wait_for_status(router: AsyncReplicaRouter, name: str, status: str, limit: float = 60.0) -> None:
    waited = 0.0
    while health_of(router)[name] != status:
        assert waited < limit, f"{name} never became {status}: {router.status()}"
        await async_sleep(0.05)
        waited += 0.05


async def fill(router: AsyncReplicaRouter, table: str, rows: int = 100) -> None:
    async with router.write() as conn:
        await conn.execute(f"CREATE TABLE IF NOT EXISTS {table} (id int PRIMARY KEY, v text)")
        await conn.execute(f"TRUNCATE {table}")
        await conn.execute(f"INSERT INTO {table} SELECT g, 'v' || g FROM generate_series(1, {rows}) g")
    await replayed_everywhere(router)


async def set_first_row(router: AsyncReplicaRouter, value: str) -> None:
    async with router.write() as conn:
        await conn.execute("UPDATE primary_down_probe SET v = %s WHERE id = 1", (value,))


@pytest.mark.anyio
async def test_a_replica_killed_under_read_load_fails_no_read_and_rejoins(private_stack: Stack) -> None:
    settings = router_settings(private_stack, poll_interval=0.05, health=FAST_HEALTH, max_pool_size=12)
    async with AsyncReplicaRouter(settings) as router:
        await fill(router, "kill_probe")
        failures: list[BaseException] = []
        reads = 0
        killed = False

        async def reader(i: int) -> None:
            nonlocal reads
            with causal_context():
                for j in range(150):
                    try:
                        row = await router.fetch_one(
                            "SELECT v FROM kill_probe WHERE id = %s", (1 + (i * 150 + j) % 100,)
                        )
                        assert row is not None
                        reads += 1
                    except Exception as exc:  # counted, not raised: the assertion below shows them all
                        failures.append(exc)

        async def chaos() -> None:
            nonlocal killed
            while router.stats().replica_reads < 200:
                await async_sleep(0.005)
            private_stack.kill("r1")
            killed = True

        await async_gather([*(lambda i=i: reader(i) for i in range(8)), chaos])
        assert killed
        assert failures == []
        assert reads == 8 * 150
        await wait_for_status(router, "r1", "down")
        before = {s.name: s.reads for s in router.status()}
        assert router.stats().retries >= 0

        private_stack.start("r1")
        await wait_for_status(router, "r1", "admitted")

        async def reader_after(i: int) -> None:
            with causal_context():
                for j in range(50):
                    async with router.read() as conn:
                        await conn.execute("SELECT v FROM kill_probe WHERE id = %s", (1 + (i + j) % 100,))

        await async_gather([lambda i=i: reader_after(i) for i in range(6)])
        after = {s.name: s.reads for s in router.status()}
    assert after["r1"] > before["r1"], "the replica serves reads again once readmitted"


@pytest.mark.anyio
async def test_primary_down_writes_fail_clearly_and_reads_continue(private_stack: Stack) -> None:
    settings = router_settings(private_stack, poll_interval=0.05, health=FAST_HEALTH, wait_budget=0.05)
    async with AsyncReplicaRouter(settings) as router:
        await fill(router, "primary_down_probe")
        with causal_context() as session:
            async with router.write() as conn:
                await conn.execute("UPDATE primary_down_probe SET v = 'written' WHERE id = 1")
            assert await router.fetch_one("SELECT v FROM primary_down_probe WHERE id = 1") == ("written",)

            private_stack.kill("primary")
            await wait_for_status(router, "primary", "down")
            with pytest.raises(PrimaryUnavailableError, match="primary is down") as err:
                await set_first_row(router, "lost")
            assert err.value.retry_after is not None
            assert err.value.retry_after > 0
            # The session's own write was replayed before the crash: replicas serve it.
            for _ in range(20):
                assert await router.fetch_one("SELECT v FROM primary_down_probe WHERE id = 1") == ("written",)
            with pytest.raises(ReplicaUnavailableError, match="latest read needs the primary"):
                await router.fetch_one("SELECT 1", mode=LATEST)
            token_before = session.token

        with causal_context():  # a new visitor reads fine too
            assert await router.fetch_one("SELECT count(*) FROM primary_down_probe") == (100,)

        during_outage = router.stats()
        private_stack.start("primary")
        await wait_for_status(router, "primary", "admitted")
        with causal_context(session):
            async with router.write() as conn:
                await conn.execute("UPDATE primary_down_probe SET v = 'again' WHERE id = 1")
            assert session.token is not None
            assert token_before is not None
            assert session.token.lsn > token_before.lsn
            assert await router.fetch_one("SELECT v FROM primary_down_probe WHERE id = 1") == ("again",)
    assert during_outage.primary_reads == 0, "the primary served no read while it was down"
    assert during_outage.refusals == 1, "only the latest read was refused"


@pytest.mark.anyio
async def test_ejection_never_kills_a_running_read(lagging_stack: Stack) -> None:
    health = HealthPolicy(eject_after=1, readmit_after=1, max_lag=0.2)
    settings = router_settings(lagging_stack, poll_interval=0.05, health=health)
    ports = {r.port: r.name for r in lagging_stack.replicas}
    async with AsyncReplicaRouter(settings) as router:
        await fill(router, "eject_probe", rows=10)
        async with router.read(mode=BoundedStaleness(3600)) as conn:
            row = await (await conn.execute("SELECT inet_server_port()")).fetchone()
            assert row is not None
            name = ports[row[0]]
            lagging_stack.pause_replay(name)
            with causal_context():
                for i in range(8):
                    async with router.write() as wconn:
                        await wconn.execute("UPDATE eject_probe SET v = %s WHERE id = 1", (f"w{i}",))
                    await async_sleep(0.05)
            await wait_for_status(router, name, "ejected")
            # Still running on the ejected replica, and it finishes normally.
            count = await (await conn.execute("SELECT count(*) FROM eject_probe")).fetchone()
            status_during = health_of(router)[name]
        lagging_stack.resume_replay(name)
        await wait_for_status(router, name, "admitted")
    assert count == (10,)
    assert status_during == "ejected"


@pytest.mark.anyio
async def test_the_cap_keeps_one_replica_in_when_both_lag(lagging_stack: Stack) -> None:
    health = HealthPolicy(eject_after=1, readmit_after=1, max_lag=0.2, max_ejected_fraction=0.5)
    settings = router_settings(lagging_stack, poll_interval=0.05, health=health)
    async with AsyncReplicaRouter(settings) as router:
        await fill(router, "cap_probe", rows=1)
        lagging_stack.pause_replay("r1")
        lagging_stack.pause_replay("r2")
        with causal_context():
            for i in range(10):
                async with router.write() as conn:
                    await conn.execute("UPDATE cap_probe SET v = %s WHERE id = 1", (f"w{i}",))
                await async_sleep(0.05)
        for _ in range(10):
            await router.poll()
        statuses = sorted(s.status for s in router.status() if s.role == "replica")
        reasons = [s.reason for s in router.status() if s.role == "replica" and s.status == "admitted"]
    assert statuses == ["admitted", "ejected"]
    assert reasons[0] is not None
    assert "kept" in reasons[0]
