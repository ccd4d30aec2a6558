"""readscale's own pytest fixtures hand out working clients to real servers."""

from __future__ import annotations

import json
import socket

import psycopg
import pytest
import redis
import redis.asyncio
from redis.cluster import RedisCluster

from readscale.stack import Stack

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


def test_the_secured_postgres_shows_its_ca_and_role_never_a_password(secure_pg_stack: Stack) -> None:
    from readscale.testing.shared import SECURE_PG_PASSWORD

    endpoints = secure_pg_stack.endpoints()
    primary = endpoints["postgres"]["primary"]
    assert primary["ca_file"] == secure_pg_stack.primary.ca_file
    assert primary["app_dsn"].startswith("postgresql://readscale_app@127.0.0.1:")
    assert "sslmode=verify-full" in primary["app_dsn"]
    assert SECURE_PG_PASSWORD not in json.dumps(endpoints)
    assert SECURE_PG_PASSWORD not in secure_pg_stack.state_path.read_text()
    assert secure_pg_stack.state_path.stat().st_mode & 0o077 == 0, "the state file is its owner's alone"
    with psycopg.connect(secure_pg_stack.primary.dsn) as conn:  # the superuser, for the stack's own tools
        assert conn.execute("SHOW ssl").fetchone() == ("on",)
