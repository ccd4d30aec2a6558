"""TCP streams and small connection pools, written as sync/async twins.

Like ``_primitives``, this is one of the few places where sync and async code truly
differ, so each class is hand-written twice (httpcore's ``_synchronization.py`` is the
model); drivers use the ``Async`` names and ``scripts/unasync.py`` maps them to the sync
ones. The names (``TcpStream``, ``StreamPool``) avoid clashing with psycopg_pool's.

Foreign errors stop here: every socket or asyncio failure and every timeout becomes
``CacheUnavailableError`` naming the backend and the address (``map_exceptions``), with
the original attached as ``__cause__``.

Pools are bounded. A stream is handed out only if it still looks alive (the peer has
not closed it), and ``discard`` is for any stream whose state is unknown after an error
or a cancellation. After a failure the driver calls ``drop_idle``: when a server died,
its other idle streams are dead too, and the next call should connect afresh.
"""

from __future__ import annotations

import asyncio
import contextlib
import select
import socket
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass

from readscale.errors import CacheUnavailableError

READ_SIZE = 64 * 1024  # below glibc's mmap threshold: a 256 KiB recv buffer doubled the cost of a get


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where to connect and how long to wait, in seconds."""

    host: str
    port: int
    connect_timeout: float
    read_timeout: float
    backend: str

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


def unavailable(endpoint: Endpoint, action: str, timeout: float, exc: OSError | EOFError) -> CacheUnavailableError:
    """The CacheUnavailableError for a socket or asyncio error (``raise ... from exc``)."""
    if isinstance(exc, TimeoutError):  # socket.timeout and asyncio's timeout are both TimeoutError
        message = f"{endpoint.backend} {endpoint.address}: {action} did not complete within {timeout * 1000:g} ms"
    else:
        message = f"{endpoint.backend} {endpoint.address}: {action} failed: {exc or type(exc).__name__}"
    return CacheUnavailableError(message, backend=endpoint.backend)


@contextlib.contextmanager
def map_exceptions(endpoint: Endpoint, action: str, timeout: float) -> Iterator[None]:
    """Turn socket and asyncio errors into CacheUnavailableError naming ``action``. (The
    hot read and write paths inline it: a generator context manager costs a microsecond.)"""
    try:
        yield
    except (OSError, EOFError) as exc:
        raise unavailable(endpoint, action, timeout, exc) from exc


def _closed_by_peer(endpoint: Endpoint) -> CacheUnavailableError:
    return CacheUnavailableError(
        f"{endpoint.backend} {endpoint.address}: the server closed the connection", backend=endpoint.backend
    )


# -- streams ---------------------------------------------------------------------------------


class AsyncTcpStream:
    """One TCP connection (asyncio)."""

    def __init__(self, endpoint: Endpoint, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.endpoint = endpoint
        self._reader = reader
        self._writer = writer

    @classmethod
    async def connect(cls, endpoint: Endpoint) -> AsyncTcpStream:
        with map_exceptions(endpoint, "connect", endpoint.connect_timeout):
            async with asyncio.timeout(endpoint.connect_timeout):
                reader, writer = await asyncio.open_connection(endpoint.host, endpoint.port, limit=READ_SIZE)
        return cls(endpoint, reader, writer)  # asyncio sets TCP_NODELAY on TCP transports

    def alive(self) -> bool:
        """False once the peer closed or reset the connection."""
        return not (self._writer.is_closing() or self._reader.at_eof())

    async def write(self, data: bytes) -> None:
        try:
            self._writer.write(data)
            if self._writer.transport.get_write_buffer_size():
                async with asyncio.timeout(self.endpoint.read_timeout):
                    await self._writer.drain()
        except (OSError, EOFError) as exc:
            raise unavailable(self.endpoint, "write", self.endpoint.read_timeout, exc) from exc

    async def read(self) -> bytes:
        """Some bytes (at least one) within the read timeout."""
        try:
            async with asyncio.timeout(self.endpoint.read_timeout):
                data = await self._reader.read(READ_SIZE)
        except (OSError, EOFError) as exc:
            raise unavailable(self.endpoint, "read", self.endpoint.read_timeout, exc) from exc
        if not data:
            raise _closed_by_peer(self.endpoint)
        return data

    async def close(self) -> None:
        """Close at once (no goodbye to wait for: the pool closes idle or broken streams)."""
        self._writer.transport.abort()


class TcpStream:
    """One TCP connection (blocking socket)."""

    def __init__(self, endpoint: Endpoint, sock: socket.socket) -> None:
        self.endpoint = endpoint
        self._sock = sock
        self._poller = select.poll()
        self._poller.register(sock, select.POLLIN)

    @classmethod
    def connect(cls, endpoint: Endpoint) -> TcpStream:
        with map_exceptions(endpoint, "connect", endpoint.connect_timeout):
            sock = socket.create_connection((endpoint.host, endpoint.port), timeout=endpoint.connect_timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.settimeout(endpoint.read_timeout)
        except OSError:
            sock.close()
            raise
        return cls(endpoint, sock)

    def alive(self) -> bool:
        """False once the peer closed the connection or sent bytes nobody asked for."""
        try:
            return not self._poller.poll(0)
        except OSError:
            return False

    def write(self, data: bytes) -> None:
        try:
            self._sock.sendall(data)
        except OSError as exc:
            raise unavailable(self.endpoint, "write", self.endpoint.read_timeout, exc) from exc

    def read(self) -> bytes:
        """Some bytes (at least one) within the read timeout."""
        try:
            data = self._sock.recv(READ_SIZE)
        except OSError as exc:
            raise unavailable(self.endpoint, "read", self.endpoint.read_timeout, exc) from exc
        if not data:
            raise _closed_by_peer(self.endpoint)
        return data

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.close()


# -- pools ---------------------------------------------------------------------------------


def _exhausted(endpoint: Endpoint, size: int, timeout: float) -> CacheUnavailableError:
    return CacheUnavailableError(
        f"{endpoint.backend} {endpoint.address}: all {size} connections stayed busy for {timeout * 1000:g} ms",
        backend=endpoint.backend,
    )


def _closed(endpoint: Endpoint) -> CacheUnavailableError:
    return CacheUnavailableError(
        f"{endpoint.backend} {endpoint.address}: the client was closed", backend=endpoint.backend
    )


class AsyncStreamPool:
    """At most ``max_size`` streams to one endpoint; callers beyond wait ``acquire_timeout``.
    For one event loop (asyncio's semaphore and streams belong to the loop they run on)."""

    def __init__(
        self,
        endpoint: Endpoint,
        connect: Callable[[], Awaitable[AsyncTcpStream]],
        *,
        max_size: int,
        acquire_timeout: float,
    ) -> None:
        self.endpoint = endpoint
        self.max_size = max_size
        self._connect = connect
        self._acquire_timeout = acquire_timeout
        self._slots = asyncio.Semaphore(max_size)
        self._idle: deque[AsyncTcpStream] = deque()
        self._closed = False

    async def acquire(self) -> AsyncTcpStream:
        if self._closed:
            raise _closed(self.endpoint)
        if self._slots.locked():
            try:
                async with asyncio.timeout(self._acquire_timeout):
                    await self._slots.acquire()
            except TimeoutError:
                raise _exhausted(self.endpoint, self.max_size, self._acquire_timeout) from None
        else:
            await self._slots.acquire()
        try:
            if self._closed:  # closed while this caller waited
                raise _closed(self.endpoint)
            while self._idle:
                stream = self._idle.pop()
                if stream.alive():
                    return stream
                await stream.close()
            return await self._connect()
        except BaseException:
            self._slots.release()
            raise

    async def release(self, stream: AsyncTcpStream) -> None:
        """Give back a stream that is in step (every reply read)."""
        if self._closed:
            await stream.close()
        else:
            self._idle.append(stream)
        self._slots.release()

    async def discard(self, stream: AsyncTcpStream) -> None:
        """Close a stream whose state is unknown and free its slot."""
        await stream.close()
        self._slots.release()

    async def drop_idle(self) -> None:
        while self._idle:
            await self._idle.pop().close()

    async def close(self) -> None:
        self._closed = True
        await self.drop_idle()


class StreamPool:
    """At most ``max_size`` streams to one endpoint; callers beyond wait ``acquire_timeout``.
    Thread-safe: one lock guards the count and the idle streams (a condition wakes a waiter
    when a stream comes back)."""

    def __init__(
        self,
        endpoint: Endpoint,
        connect: Callable[[], TcpStream],
        *,
        max_size: int,
        acquire_timeout: float,
    ) -> None:
        self.endpoint = endpoint
        self.max_size = max_size
        self._connect = connect
        self._acquire_timeout = acquire_timeout
        self._in_use = 0
        self._idle: deque[TcpStream] = deque()
        self._freed = threading.Condition(threading.Lock())
        self._closed = False

    def acquire(self) -> TcpStream:
        with self._freed:
            if self._closed:
                raise _closed(self.endpoint)
            if self._in_use >= self.max_size and not self._freed.wait_for(
                lambda: self._in_use < self.max_size or self._closed, self._acquire_timeout
            ):
                raise _exhausted(self.endpoint, self.max_size, self._acquire_timeout)
            if self._closed:
                raise _closed(self.endpoint)
            self._in_use += 1
        try:
            while (stream := self._pop_idle()) is not None:
                if stream.alive():
                    return stream
                stream.close()
            return self._connect()
        except BaseException:
            self._free()
            raise

    def _pop_idle(self) -> TcpStream | None:
        with self._freed:
            return self._idle.pop() if self._idle else None

    def _free(self) -> None:
        with self._freed:
            self._in_use -= 1
            self._freed.notify()

    def release(self, stream: TcpStream) -> None:
        """Give back a stream that is in step (every reply read)."""
        with self._freed:
            keep = not self._closed
            if keep:
                self._idle.append(stream)
            self._in_use -= 1
            self._freed.notify()
        if not keep:
            stream.close()

    def discard(self, stream: TcpStream) -> None:
        """Close a stream whose state is unknown and free its slot."""
        stream.close()
        self._free()

    def drop_idle(self) -> None:
        while (stream := self._pop_idle()) is not None:
            stream.close()

    def close(self) -> None:
        with self._freed:
            self._closed = True
            self._freed.notify_all()
        self.drop_idle()
