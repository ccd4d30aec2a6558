"""The pytest plugin behind ``readscale.testing`` (see that module for the fixtures)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

from readscale.stack import Stack, StackConfig
from readscale.testing.http import readscale_app_server_factory  # noqa: F401 (a fixture)
from readscale.testing.shared import SharedStack, new_stack_root

if TYPE_CHECKING:
    import redis
    import redis.asyncio
    import redis.cluster

    from readscale import PostgresSettings, RedisSettings


@pytest.fixture(scope="session")
def readscale_stack() -> Iterator[SharedStack]:
    shared = SharedStack()
    try:
        yield shared
    finally:
        shared.close()


@pytest.fixture(scope="session")
def pg_stack(readscale_stack: SharedStack) -> Stack:
    return readscale_stack.postgres()


@pytest.fixture(scope="session")
def pg_primary_dsn(pg_stack: Stack) -> str:
    return pg_stack.primary.dsn


@pytest.fixture(scope="session")
def pg_replica_dsns(pg_stack: Stack) -> list[str]:
    return [replica.dsn for replica in pg_stack.replicas]


@pytest.fixture(scope="session")
def redis_url(readscale_stack: SharedStack) -> str:
    return readscale_stack.redis().url


@pytest.fixture(scope="session")
def durable_redis_url(readscale_stack: SharedStack) -> str:
    """A Redis with AOF and ``appendfsync always``, as write-behind's default mode needs."""
    return readscale_stack.durable_redis().url


@pytest.fixture(scope="session")
def secure_redis_settings(readscale_stack: SharedStack) -> RedisSettings:
    """Settings for a Redis reachable only over TLS, as the ACL user ``readscale``."""
    from readscale import RedisSettings
    from readscale.testing.shared import SECURE_USER, SECURE_USER_PASSWORD

    node = readscale_stack.secure_redis()
    return RedisSettings(
        url=f"rediss://127.0.0.1:{node.port}/0",
        username=SECURE_USER,
        password=SECURE_USER_PASSWORD,
        ssl_ca_certs=node.ca_file,
    )


@pytest.fixture(scope="session")
def secure_pg_stack(readscale_stack: SharedStack) -> Stack:
    """A PostgreSQL primary and one replica (r1) with SSL on, apart from ``pg_stack``.

    The role ``readscale_app`` may log in only over TLS with its password (SCRAM);
    the superuser DSNs (``node.dsn``) still work for setting up and inspecting.
    """
    return readscale_stack.secure_postgres()


@pytest.fixture(scope="session")
def secure_pg_settings(secure_pg_stack: Stack) -> PostgresSettings:
    """Credentials and TLS for ``secure_pg_stack``: apply them to its nodes' DSNs
    (``ReplicaSettings(..., postgres=secure_pg_settings)``, ``settings.apply(node.dsn)``)."""
    from readscale import PostgresSettings
    from readscale.testing.shared import SECURE_PG_PASSWORD, SECURE_PG_USER

    return PostgresSettings(
        user=SECURE_PG_USER,
        password=SECURE_PG_PASSWORD,
        sslmode="verify-full",
        sslrootcert=secure_pg_stack.primary.ca_file,
        connect_timeout=5,
    )


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    import redis as redis_py

    client = redis_py.Redis.from_url(redis_url, protocol=2)
    client.flushall()
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
async def async_redis_client(redis_url: str) -> AsyncIterator[redis.asyncio.Redis]:
    import redis.asyncio as redis_asyncio

    client = redis_asyncio.Redis.from_url(redis_url, protocol=2)
    await client.flushall()
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture(scope="session")
def redis_cluster_nodes(readscale_stack: SharedStack) -> list[str]:
    return [f"127.0.0.1:{node.port}" for node in readscale_stack.cluster()]


@pytest.fixture
def redis_cluster_client(redis_cluster_nodes: list[str]) -> Iterator[redis.cluster.RedisCluster]:
    from redis.cluster import ClusterNode, RedisCluster

    pairs = [n.split(":") for n in redis_cluster_nodes]
    nodes = [ClusterNode(host, int(port)) for host, port in pairs]  # type: ignore[no-untyped-call]
    client = RedisCluster(startup_nodes=nodes, protocol=2)
    client.flushall(target_nodes=RedisCluster.PRIMARIES)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture(scope="session")
def memcached_address(readscale_stack: SharedStack) -> str:
    return readscale_stack.memcached().address


@pytest.fixture
def readscale_stack_factory() -> Iterator[Callable[..., Stack]]:
    """Private stacks for tests that stop, kill or reconfigure servers."""
    made: list[tuple[Stack, Any]] = []

    def factory(config: StackConfig | None = None) -> Stack:
        root = new_stack_root("readscale-private-")
        stack = Stack(root / "stack")
        made.append((stack, root))
        return stack.up(config or StackConfig())

    try:
        yield factory
    finally:
        for stack, root in made:
            stack.down()
            root.rmdir()
