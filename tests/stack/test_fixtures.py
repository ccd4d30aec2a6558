"""readscale's own pytest fixtures hand out working clients to real servers."""

from __future__ import annotations

import socket

import psycopg
import pytest
import redis
import redis.asyncio
from redis.cluster import RedisCluster

pytestmark = pytest.mark.stack


def test_postgres_fixtures(pg_primary_dsn: str, pg_replica_dsns: list[str]) -> None:
    assert len(pg_replica_dsns) == 2
    with psycopg.connect(pg_primary_dsn) as conn:
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (False,)
    for dsn in pg_replica_dsns:
        with psycopg.connect(dsn) as conn:
            assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (True,)


def test_redis_client_starts_empty(redis_client: redis.Redis) -> None:
    assert redis_client.dbsize() == 0
    redis_client.set("left-behind", 1)


def test_redis_client_is_flushed_between_tests(redis_client: redis.Redis) -> None:
    assert redis_client.get("left-behind") is None


@pytest.mark.anyio
async def test_async_redis_client(async_redis_client: redis.asyncio.Redis) -> None:
    await async_redis_client.set("k", "v")
    assert await async_redis_client.get("k") == b"v"


def test_redis_cluster_client(redis_cluster_client: RedisCluster) -> None:
    keys = {f"k{i}": str(i) for i in range(30)}
    redis_cluster_client.mset_nonatomic(keys)
    assert redis_cluster_client.mget_nonatomic(list(keys)) == [v.encode() for v in keys.values()]
    assert len({redis_cluster_client.keyslot(k) for k in keys}) > 1


def test_memcached_address(memcached_address: str) -> None:
    host, port = memcached_address.split(":")
    with socket.create_connection((host, int(port)), timeout=2) as sock:
        sock.sendall(b"version\r\n")
        assert sock.recv(64).startswith(b"VERSION 1.6")
