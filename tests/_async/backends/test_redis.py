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


def _count_checkouts(pool: object) -> list[int]:
    """Count the connections handed out by redis-py's pool from now on."""
    counted = [0]
    checkout = pool.get_connection  # type: ignore[attr-defined]

    async def get_connection(*args: object, **kwargs: object) -> object:
        counted[0] += 1
        return await checkout(*args, **kwargs)

    pool.get_connection = get_connection  # type: ignore[attr-defined]
    return counted


@pytest.mark.anyio
async def test_reads_run_on_a_kept_connection_not_a_pool_checkout_each(redis_url: str) -> None:
    backend = AsyncRedisBackend(RedisSettings(url=redis_url, max_connections=2))
    try:
        await backend.set("kept", b"v", 60)
        checkouts = _count_checkouts(backend.client.connection_pool)
        for _ in range(20):
            assert await backend.get("kept") == b"v"
            assert await backend.get_many(["kept", "absent"]) == [b"v", None]
        assert checkouts[0] == 1
    finally:
        await backend.close()


@pytest.mark.anyio
async def test_the_kept_connections_and_the_clients_stay_within_max_connections(redis_url: str) -> None:
    backend = AsyncRedisBackend(RedisSettings(url=redis_url, max_connections=1, pool_timeout_ms=200))
    try:
        await backend.delete("w")
        for n in range(5):  # a read keeps the one connection; a write must still get it
            assert await backend.get("w") == (None if n == 0 else b"%d" % (n - 1))
            await backend.set("w", b"%d" % n, 60)
        pool = backend.client.connection_pool
        assert len(pool._available_connections) + len(pool._in_use_connections) == 1
    finally:
        await backend.close()


@pytest.mark.anyio
async def test_a_kept_connection_the_server_closed_is_replaced_by_the_one_retry(redis_url: str) -> None:
    backend = AsyncRedisBackend(RedisSettings(url=redis_url, max_connections=1))
    try:
        await backend.set("k", b"v", 60)
        assert await backend.get("k") == b"v"
        killed = await backend.client.client_kill_filter(_type="normal", skipme=False)
        assert killed >= 1
        assert await backend.get("k") == b"v"
        assert await backend.get_many(["k"]) == [b"v"]
    finally:
        await backend.close()


@pytest.mark.anyio
async def test_a_read_cut_off_mid_reply_leaves_no_half_read_reply_behind(redis_url: str) -> None:
    backend = AsyncRedisBackend(RedisSettings(url=redis_url, max_connections=1))
    try:
        await backend.set("a", b"A", 60)
        await backend.set("b", b"B", 60)
        assert await backend.get("a") == b"A"
        (conn,) = backend.client.connection_pool._in_use_connections  # the one kept
        read = conn.read_response

        async def fail_once(*args: object, **kwargs: object) -> object:
            conn.read_response = read
            raise OSError("cut off")

        conn.read_response = fail_once
        with pytest.raises(CacheUnavailableError):
            await backend.get("a")  # the reply to this GET was never read
        assert await backend.get("b") == b"B"  # not "A": the connection was closed, not reused
    finally:
        await backend.close()
