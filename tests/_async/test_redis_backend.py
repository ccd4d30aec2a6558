"""The contract suite on real Redis and Redis Cluster servers, plus Redis-specific checks."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from readscale._async.backends.redis import AsyncRedisBackend, AsyncRedisClusterBackend
from readscale.settings import RedisSettings
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
