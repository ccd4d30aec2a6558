"""The Redis lane's reconnects, on fake connections (no server): under Sentinel a kept
connection to another server than the master the pool knows is reconnected before its
next command, and a failed command is retried on a connection reconnected with
``connect()`` (the Sentinel-aware one), never by the implicit reconnect of a send, which
goes back to the address the connection had. ``tests/_async/backends/test_sentinel.py``
runs a real coordinated failover."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis.connection import Connection
from redis.exceptions import ConnectionError as RedisConnectionError

from readscale._shared.redis_lane import AsyncRedisLane, RedisLane, pack_get, pack_mget, stray_check


class Conn:
    def __init__(self, pool: Any, fail: int = 0) -> None:
        self.pool = pool
        self.host, self.port = pool.master_address
        self.log: list[Any] = []
        self.fail = fail

    def connect(self) -> None:
        self.host, self.port = self.pool.master_address  # what SentinelManagedConnection does
        self.log.append(("connect", self.port))

    def disconnect(self, nowait: bool = False) -> None:
        self.log.append("disconnect")

    def send_packed_command(self, command: list[bytes]) -> None:
        if self.fail:
            self.fail -= 1
            raise RedisConnectionError("closed by the server")
        self.log.append(("send", self.port))

    def read_response(self) -> bytes:
        return b"v"


class AsyncConn(Conn):
    async def connect(self) -> None:  # type: ignore[override]
        Conn.connect(self)

    async def disconnect(self, nowait: bool = False) -> None:  # type: ignore[override]
        Conn.disconnect(self)

    async def send_packed_command(self, command: list[bytes]) -> None:  # type: ignore[override]
        Conn.send_packed_command(self, command)

    async def read_response(self) -> bytes:  # type: ignore[override]
        return Conn.read_response(self)


class SentinelPool:
    """A master pool as redis-py's SentinelConnectionPool: ``master_address`` is the
    master it knows now."""

    is_master = True

    def __init__(self, conn_class: type[Conn] = Conn) -> None:
        self.master_address = ("127.0.0.1", 1)
        self.conn_class = conn_class
        self.made: list[Conn] = []

    def get_connection(self) -> Conn:
        conn = self.conn_class(self)
        self.made.append(conn)
        return conn

    def release(self, conn: Conn) -> None:
        pass


class AsyncSentinelPool(SentinelPool):
    async def get_connection(self) -> Conn:  # type: ignore[override]
        return SentinelPool.get_connection(self)

    async def release(self, conn: Conn) -> None:  # type: ignore[override]
        pass


def test_only_a_sentinel_master_pool_is_checked() -> None:
    class Plain:
        pass

    assert stray_check(None) is None
    assert stray_check(Plain()) is None
    replicas = SentinelPool()
    replicas.is_master = False
    assert stray_check(replicas) is None
    assert stray_check(SentinelPool()) is not None


def test_a_kept_connection_to_a_former_master_is_reconnected_first() -> None:
    pool = SentinelPool()
    lane = RedisLane(2, pool=pool)
    assert lane.get("k") == b"v"
    (conn,) = pool.made
    pool.master_address = ("127.0.0.1", 2)  # a failover the pool has learned of
    assert lane.get("k") == b"v"
    assert pool.made == [conn]  # the same, kept connection...
    assert conn.log == [("send", 1), "disconnect", ("connect", 2), ("send", 2)]  # ...to the new master


def test_a_failed_command_is_retried_on_a_connection_reconnected_with_connect() -> None:
    pool = SentinelPool()
    lane = RedisLane(2, pool=pool)
    lane.get("k")
    (conn,) = pool.made
    conn.fail = 1  # the server closed it (a sentinel reconfiguring it)
    pool.master_address = ("127.0.0.1", 2)
    assert lane.get("k") == b"v"
    assert conn.log[-3:] == ["disconnect", ("connect", 2), ("send", 2)]


@pytest.mark.anyio
async def test_async_a_kept_connection_to_a_former_master_is_reconnected_first() -> None:
    pool = AsyncSentinelPool(AsyncConn)
    lane = AsyncRedisLane(2, pool=pool)
    assert await lane.get("k") == b"v"
    (conn,) = pool.made
    pool.master_address = ("127.0.0.1", 2)
    assert await lane.get("k") == b"v"
    assert pool.made == [conn]
    assert conn.log == [("send", 1), "disconnect", ("connect", 2), ("send", 2)]


@pytest.mark.anyio
async def test_async_a_failed_command_is_retried_on_a_connection_reconnected_with_connect() -> None:
    pool = AsyncSentinelPool(AsyncConn)
    lane = AsyncRedisLane(2, pool=pool)
    await lane.get("k")
    (conn,) = pool.made
    conn.fail = 1
    pool.master_address = ("127.0.0.1", 2)
    assert await lane.get("k") == b"v"
    assert conn.log[-3:] == ["disconnect", ("connect", 2), ("send", 2)]


# -- the packing: byte for byte what redis-py sends for the same command ---------------

keys = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=1100)


def _redis_py(*args: str) -> bytes:
    return b"".join(Connection().pack_command(*args))


@given(st.lists(keys | st.text("abc:{}0123456789", min_size=1, max_size=30), min_size=1, max_size=40))
def test_pack_mget_is_what_redis_py_sends(batch: list[str]) -> None:
    assert b"".join(pack_mget(batch)) == _redis_py("MGET", *batch)


def test_pack_mget_ascii_long_and_non_ascii_keys() -> None:
    for batch in (["rs:a"], ["x" * 1023, "y" * 1024, "é", "k"], [f"doc:{i}" for i in range(100)]):
        assert b"".join(pack_mget(batch)) == _redis_py("MGET", *batch)


@given(keys)
def test_pack_get_is_what_redis_py_sends(key: str) -> None:
    assert b"".join(pack_get(key)) == _redis_py("GET", key)
