"""Write-behind while Redis dies and comes back (AOF on): the flusher waits the outage
out and goes on; writers get an error for each write that was not acknowledged, and
every acknowledged one reaches the database. A dict with the version rule stands in for
the database, so the test needs Redis only."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest

from readscale._async.backends.redis import AsyncRedisBackend
from readscale._async.cache import AsyncCache
from readscale._async.flusher import AsyncFlusher
from readscale._async.writebehind import AsyncWriteBehind
from readscale._core.policy import CachePolicy, Tier
from readscale._core.writebehind import FailureKind, FlusherSettings, WriteBehindSettings, version_wins
from readscale._primitives import async_sleep
from readscale.errors import CacheUnavailableError
from readscale.settings import RedisSettings
from readscale.stack import Stack, StackConfig
from readscale.testing.concurrency import async_gather
from readscale.writebehind_common import WriteRecord

pytestmark = [pytest.mark.stack, pytest.mark.chaos]

POLICY = CachePolicy(name="chaos", ttl=600.0, jitter=0.0, early_refresh=0.0, tiers=frozenset({Tier.L2}))


class MemoryWriter:
    """A database in a dict, applying the version rule the real writers follow."""

    def __init__(self) -> None:
        self.rows: dict[str, tuple[int, object]] = {}
        self.transactions = 0

    async def write_batch(self, records: Sequence[WriteRecord]) -> int:
        applied = 0
        for r in records:
            if version_wins(r.version, self.rows.get(r.key, (None, None))[0]):
                self.rows[r.key] = (r.version, r.value)
                applied += 1
        self.transactions += 1
        return applied

    def failure_kind(self, exc: Exception) -> FailureKind:
        return FailureKind.TRANSIENT


async def until(condition: Callable[[], bool]) -> None:
    for _ in range(3000):
        if condition():
            return
        await async_sleep(0.01)
    raise AssertionError("timed out")


@pytest.mark.anyio
async def test_the_flusher_and_the_writers_live_through_a_redis_restart(
    readscale_stack_factory: Callable[[StackConfig], Stack],
) -> None:
    stack = readscale_stack_factory(StackConfig(postgres=False, redis_aof=True))
    url = stack.redis.url
    cache = AsyncCache(AsyncRedisBackend(RedisSettings(url=url)), policy=POLICY)
    wb = AsyncWriteBehind(cache, WriteBehindSettings(queue="chaos"))
    db = MemoryWriter()
    flusher = AsyncFlusher(
        db, url, settings=FlusherSettings(queue="chaos", block=0.05, batch_wait=0.01, retry_base=0.01, retry_cap=0.1)
    )
    acknowledged: dict[str, int] = {}
    refused = 0

    async def write(i: int) -> None:
        nonlocal refused
        while True:
            try:
                acknowledged[f"k{i}"] = await wb.write_behind(f"k{i}", {"n": i})
                return
            except CacheUnavailableError:
                refused += 1  # not acknowledged: try again
                await async_sleep(0.02)

    async def scenario() -> None:
        try:
            for i in range(10):
                await write(i)
            await until(lambda: len(db.rows) == 10)
            stack.kill("redis")
            with pytest.raises(CacheUnavailableError):
                await wb.write_behind("k-down", {"n": -1})
            await until(lambda: flusher.stats.redis_errors > 0)
            stack.start("redis")
            for i in range(10, 20):
                await write(i)
            await until(lambda: len(db.rows) == 20)
        finally:
            flusher.stop()

    async def run() -> None:
        await flusher.run()

    try:
        await async_gather([run, scenario])
    finally:
        await flusher.aclose()
        await cache.aclose()
    assert {k: v for k, (v, _) in db.rows.items()} == acknowledged
    assert "k-down" not in db.rows
    assert wb.stats.errors >= 1
    assert flusher.stats.redis_errors >= 1
