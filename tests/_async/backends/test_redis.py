"""The contract suite on real Redis and Redis Cluster servers, plus Redis-specific checks."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from readscale import RedisSettings
from readscale._async.backends.redis import AsyncRedisBackend, AsyncRedisClusterBackend
from readscale.errors import CacheUnavailableError
from readscale.testing.concurrency import async_gather
from readscale.testing.contract import AsyncBackendContract

pytestmark = pytest.mark.stack


class TestAsyncRedis(AsyncBackendContract):
    short_ttl = 0.2
    expiry_wait = 0.5

    @pytest.fixture
    async def backend(self, redis_url: str) -> AsyncIterator[AsyncRedisBackend]:
        backend = AsyncRedisBackend(RedisSettings(url=redis_url), max_value_size=64 * 1024)
        yield backend
        await backend.close()


class TestAsyncRedisCluster(AsyncBackendContract):
    short_ttl = 0.2
    expiry_wait = 0.5

    @pytest.fixture
    async def backend(self, redis_cluster_nodes: list[str]) -> AsyncIterator[AsyncRedisClusterBackend]:
        backend = AsyncRedisClusterBackend(
            RedisSettings(url=f"redis://{redis_cluster_nodes[0]}/0"), max_value_size=64 * 1024
        )
        yield backend
        await backend.close()


@pytest.mark.anyio
async def test_a_burst_queues_at_the_gate_instead_of_opening_connections(redis_url: str) -> None:
    backend = AsyncRedisBackend(RedisSettings(url=redis_url, max_connections=2))
    try:
        await backend.set("burst", b"v", 60)
        results = await async_gather([lambda: backend.get("burst") for _ in range(50)])
        assert results == [b"v"] * 50
        pool = backend.client.connection_pool
        assert len(pool._available_connections) + len(pool._in_use_connections) <= 2
    finally:
        await backend.close()


@pytest.mark.anyio
async def test_callers_beyond_max_connections_give_up_after_the_pool_timeout(silent_address: str) -> None:
    settings = RedisSettings(
        url=f"redis://{silent_address}/0",
        max_connections=1,
        pool_timeout_ms=20,
        socket_timeout_ms=500,
        connect_timeout_ms=500,
    )
    backend = AsyncRedisBackend(settings)
    try:
        results = await async_gather([lambda: backend.get("a"), lambda: backend.get("b")], return_exceptions=True)
        assert all(isinstance(result, CacheUnavailableError) for result in results)
        busy = [result for result in results if isinstance(result, CacheUnavailableError) and result.busy]
        assert len(busy) == 1
        assert "No connection available within 0.02 s" in str(busy[0])
    finally:
        await backend.close()
