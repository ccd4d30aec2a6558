"""The Redis backend's connection gate, and a short lane for its hottest commands, as
twins (asyncio and sync; the backends are generated, these are written by hand).

**The gate** bounds the backend's concurrency as :class:`AsyncSemaphore` does: callers
queue (up to ``timeout``) instead of failing when the pool would be exhausted.

**The lane.** A free slot of the gate may also hold a connection the lane took from
redis-py's pool and kept. ``GET`` and ``MGET`` (every cache read) run on it directly: the
command is packed here and the reply read by the connection's own parser (hiredis when
installed). That skips what redis-py does around each command (a pool checkout under a
lock with a readiness poll of the socket, a retry closure, response callbacks, the
observability hooks): about half of a hit's client-side cost on this machine
(``readscale bench cache``). Everything else goes through the client as before: a slot
that holds a kept connection gives it back to the pool first, so the lane and the client
never hold more than ``value`` connections between them (the pool's size is the gate's
plus the fill listener's).

Invariants:

- A kept connection never holds a half-read reply: any error during a lane command
  disconnects it (it reconnects on its next use) and hands it back to the pool.
- A lane command that failed on a connection error or a timeout is tried once more on
  the same, reconnected, connection: what the client's ``Retry(NoBackoff(), 1)`` does
  (``RedisBackend._make_client``); a second failure reaches the caller. The lane
  reconnects with ``connect()`` itself: a command sent on a closed connection would
  reconnect to the address it had, which under Sentinel is the old master (redis-py's
  ``send_packed_command`` bypasses ``SentinelManagedConnection.connect``).
- Sync only: after a fork the kept connections belong to the parent; the child forgets
  them (never closes them) and starts with empty slots, as redis-py's pool does.
- Under Sentinel, a kept connection to another server than the master the pool knows
  now is closed before its next command (it reconnects through the sentinels). A
  coordinated failover demotes the old master without killing it: the lane would
  otherwise go on reading a replica (that kept what it held while it resynchronised).
  redis-py's pool learns the new master when one of its connections connects again,
  which a write does at once (the old master refuses it: READONLY).

The lane is used only on a client the backend made itself (``lane=True``): a client
given by the caller (or a cluster client) keeps redis-py's full path.
"""

from __future__ import annotations

import asyncio
import os
import queue
from collections.abc import Callable
from types import TracebackType
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

#: The errors a lane command is tried again after (redis-py's Retry's defaults).
RETRIED = (RedisConnectionError, RedisTimeoutError)


def pack_get(key: str) -> list[bytes]:
    """``GET key`` in RESP (as one buffer, in the list redis-py's connections send)."""
    raw = key.encode()
    return [b"*2\r\n$3\r\nGET\r\n$%d\r\n%b\r\n" % (len(raw), raw)]


#: The RESP text between two MGET arguments for each key length: the CRLF closing the
#: previous argument and the next one's ``$<length>`` line.
_HEADS = tuple(f"\r\n${n}\r\n" for n in range(1024))


def pack_mget(keys: list[str]) -> list[bytes]:
    """``MGET keys...`` in RESP.

    ASCII keys (characters are bytes) of fewer than 1024 characters, the common case,
    are packed with no Python step per key: the length lines are looked up, interleaved
    with the keys by slice assignment, and the whole is joined and encoded once.
    """
    parts = [""] * (2 * len(keys))
    parts[1::2] = keys
    try:
        parts[0::2] = map(_HEADS.__getitem__, map(len, keys))
    except IndexError:  # a long key
        text = None
    else:
        text = "".join(parts)
    if text is not None and text.isascii():
        return [b"*%d\r\n$4\r\nMGET%b\r\n" % (len(keys) + 1, text.encode())]
    head = [b"*%d\r\n$4\r\nMGET\r\n" % (len(keys) + 1)]
    for key in keys:
        raw = key.encode()
        head.append(b"$%d\r\n%b\r\n" % (len(raw), raw))
    return [b"".join(head)]


def stray_check(pool: Any) -> Callable[[Any], bool] | None:
    """For a Sentinel master pool, whether a kept connection is to another server than
    the master the pool knows now; None for any other pool (nothing to check)."""
    if pool is None or not getattr(pool, "is_master", False) or not hasattr(pool, "master_address"):
        return None

    def stray(conn: Any) -> bool:
        address = pool.master_address
        return address is not None and (conn.host, conn.port) != tuple(address)

    return stray


def _busy(timeout: float | None, value: int) -> TimeoutError:
    return TimeoutError(f"No connection available within {timeout:g} s ({value} in use)")


class AsyncRedisLane:
    """The gate (``async with lane:``) and the lane's ``get`` and ``mget`` (see the module)."""

    def __init__(self, value: int, timeout: float | None = None, *, pool: Any = None) -> None:
        self._sem = asyncio.Semaphore(value)
        self._value = value
        self._timeout = timeout
        #: redis-py's pool the kept connections come from; None: no lane.
        self.pool = pool
        #: Kept connections: never more than the free slots (``_free``).
        self._idle: list[Any] = []
        self._free = value
        self._stray = stray_check(pool)

    async def _acquire(self) -> None:
        sem = self._sem
        if self._timeout is None or not sem.locked():
            await sem.acquire()
        else:
            try:
                await asyncio.wait_for(sem.acquire(), self._timeout)
            except TimeoutError:
                raise _busy(self._timeout, self._value) from None
        self._free -= 1

    def _release(self) -> None:
        self._free += 1
        self._sem.release()

    async def __aenter__(self) -> AsyncRedisLane:
        await self._acquire()
        if len(self._idle) > self._free:  # this caller will take a connection from the pool
            try:
                await self.pool.release(self._idle.pop())
            except BaseException:
                self._release()
                raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._release()

    async def get(self, key: str) -> bytes | None:
        """``GET key`` on a kept connection."""
        reply: bytes | None = await self._run(pack_get(key))
        return reply

    async def mget(self, keys: list[str]) -> list[bytes | None]:
        """``MGET keys`` on a kept connection (``keys`` not empty)."""
        reply: list[bytes | None] = await self._run(pack_mget(keys))
        return reply

    async def _run(self, command: list[bytes]) -> Any:
        await self._acquire()
        conn = self._idle.pop() if self._idle else None
        try:
            if conn is None:
                conn = await self.pool.get_connection()
            elif self._stray is not None and self._stray(conn):
                await conn.disconnect()
                await conn.connect()  # to the master the sentinels name now
            try:
                reply = await self._once(conn, command)
            except RETRIED:
                await conn.connect()
                reply = await self._once(conn, command)
        except BaseException:
            if conn is not None:
                await self.pool.release(conn)
            raise
        else:
            self._idle.append(conn)
        finally:
            self._release()
        return reply

    @staticmethod
    async def _once(conn: Any, command: list[bytes]) -> Any:
        try:
            await conn.send_packed_command(command)
            return await conn.read_response()
        except BaseException:
            await conn.disconnect(nowait=True)
            raise


class RedisLane:
    """The sync twin of :class:`AsyncRedisLane`.

    The slots are tokens in a C queue (taking and giving one back costs about a tenth of
    a Python-level semaphore); the kept connections a list, last kept first reused (so a
    process that reads one call at a time keeps one connection, as redis-py's pool does).
    A lane command puts its connection back before its slot, and a client command gives
    kept connections back to the pool until no more are kept than slots are free: the
    lane and the client then never hold more than ``value`` connections between them,
    whatever the threads' interleaving."""

    def __init__(self, value: int, timeout: float | None = None, *, pool: Any = None) -> None:
        self._value = value
        self._timeout = timeout
        self.pool = pool
        self._pid = os.getpid()
        self._tokens: queue.SimpleQueue[None] = self._new_tokens()
        self._idle: list[Any] = []
        self._stray = stray_check(pool)

    def _new_tokens(self) -> queue.SimpleQueue[None]:
        tokens: queue.SimpleQueue[None] = queue.SimpleQueue()
        for _ in range(self._value):
            tokens.put(None)
        return tokens

    def _take(self) -> None:
        if self._pid != os.getpid():  # forked: the kept connections are the parent's
            self._pid = os.getpid()
            self._tokens = self._new_tokens()
            self._idle = []
        try:
            self._tokens.get(timeout=self._timeout)
        except queue.Empty:
            raise _busy(self._timeout, self._value) from None

    def __enter__(self) -> RedisLane:
        self._take()
        idle = self._idle
        try:
            while len(idle) > self._tokens.qsize():  # this caller will take one from the pool
                try:
                    conn = idle.pop()
                except IndexError:
                    break
                self.pool.release(conn)
        except BaseException:
            self._tokens.put(None)
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._tokens.put(None)

    def get(self, key: str) -> bytes | None:
        """``GET key`` on a kept connection."""
        reply: bytes | None = self._run(pack_get(key))
        return reply

    def mget(self, keys: list[str]) -> list[bytes | None]:
        """``MGET keys`` on a kept connection (``keys`` not empty)."""
        reply: list[bytes | None] = self._run(pack_mget(keys))
        return reply

    def _run(self, command: list[bytes]) -> Any:
        self._take()
        conn = None
        try:
            try:
                conn = self._idle.pop()
            except IndexError:
                conn = self.pool.get_connection()
            else:
                if self._stray is not None and self._stray(conn):
                    conn.disconnect()
                    conn.connect()  # to the master the sentinels name now
            try:
                reply = self._once(conn, command)
            except RETRIED:
                conn.connect()
                reply = self._once(conn, command)
        except BaseException:
            if conn is not None:
                self.pool.release(conn)
            self._tokens.put(None)
            raise
        self._idle.append(conn)  # before the slot: never more kept than free slots
        self._tokens.put(None)
        return reply

    @staticmethod
    def _once(conn: Any, command: list[bytes]) -> Any:
        try:
            conn.send_packed_command(command)
            return conn.read_response()
        except BaseException:
            conn.disconnect()
            raise


__all__ = ["AsyncRedisLane", "RedisLane", "pack_get", "pack_mget"]
