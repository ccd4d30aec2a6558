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


class _StreamProtocol(asyncio.Protocol):
    """What the event loop hands an :class:`AsyncTcpStream`: the bytes received since the
    last read (each chunk as the transport gave it, no copy), the one waiter of the read
    in progress, and whether the connection is gone."""

    __slots__ = ("chunks", "drained", "lost", "lost_error", "transport", "waiter")

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.chunks: list[bytes] = []
        self.waiter: asyncio.Future[None] | None = None
        self.drained: asyncio.Future[None] | None = None  # set while the transport's write buffer is full
        self.lost = False
        self.lost_error: OSError | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.chunks.append(data)
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def eof_received(self) -> bool:
        self._wake()
        return False  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if isinstance(exc, OSError):
            self.lost_error = exc
        self._wake()
        drained = self.drained
        if drained is not None and not drained.done():
            drained.set_result(None)

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def pause_writing(self) -> None:
        if self.drained is None or self.drained.done():
            self.drained = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        drained = self.drained
        if drained is not None and not drained.done():
            drained.set_result(None)


def _time_out(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


class AsyncTcpStream:
    """One TCP connection (asyncio), on a protocol rather than a StreamReader: a read takes
    whatever arrived as it arrived (one chunk: the very bytes object the transport read),
    waits on one future with one timer, and so costs neither the reader's buffer copies nor
    an ``asyncio.timeout`` context per call."""

    __slots__ = ("_loop", "_protocol", "_transport", "endpoint")

    def __init__(self, endpoint: Endpoint, transport: asyncio.Transport, protocol: _StreamProtocol) -> None:
        self.endpoint = endpoint
        self._loop = asyncio.get_running_loop()
        self._transport = transport
        self._protocol = protocol

    @classmethod
    async def connect(cls, endpoint: Endpoint) -> AsyncTcpStream:
        loop = asyncio.get_running_loop()
        with map_exceptions(endpoint, "connect", endpoint.connect_timeout):
            async with asyncio.timeout(endpoint.connect_timeout):
                transport, protocol = await loop.create_connection(_StreamProtocol, endpoint.host, endpoint.port)
        return cls(endpoint, transport, protocol)  # asyncio sets TCP_NODELAY on TCP transports

    def alive(self) -> bool:
        """False once the peer closed or reset the connection, or sent bytes nobody asked
        for (the stream is out of step)."""
        return not (self._lost() or self._protocol.chunks)

    def _lost(self) -> bool:
        return self._protocol.lost or self._transport.is_closing()

    async def write(self, data: bytes) -> None:
        protocol = self._protocol
        if self._lost():
            error = protocol.lost_error or ConnectionResetError("connection lost")
            raise unavailable(self.endpoint, "write", self.endpoint.read_timeout, error)
        try:
            self._transport.write(data)
        except OSError as exc:
            raise unavailable(self.endpoint, "write", self.endpoint.read_timeout, exc) from exc
        drained = protocol.drained
        if drained is not None and not drained.done():  # the write buffer is over its high mark
            try:
                async with asyncio.timeout(self.endpoint.read_timeout):
                    await drained
            except TimeoutError as exc:
                raise unavailable(self.endpoint, "write", self.endpoint.read_timeout, exc) from exc
            if self._lost():
                error = protocol.lost_error or ConnectionResetError("connection lost")
                raise unavailable(self.endpoint, "write", self.endpoint.read_timeout, error)

    async def read(self) -> bytes:
        """Some bytes (at least one) within the read timeout."""
        protocol = self._protocol
        chunks = protocol.chunks
        if not chunks:
            if self._lost():
                raise self._gone()
            waiter = protocol.waiter = self._loop.create_future()
            timer = self._loop.call_later(self.endpoint.read_timeout, _time_out, waiter)
            try:
                await waiter
            except TimeoutError as exc:
                raise unavailable(self.endpoint, "read", self.endpoint.read_timeout, exc) from exc
            finally:
                timer.cancel()
                protocol.waiter = None
            if not chunks:
                raise self._gone()
        protocol.chunks = []
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def _gone(self) -> CacheUnavailableError:
        error = self._protocol.lost_error
        if error is not None:
            return unavailable(self.endpoint, "read", self.endpoint.read_timeout, error)
        return _closed_by_peer(self.endpoint)

    async def close(self) -> None:
        """Close at once (no goodbye to wait for: the pool closes idle or broken streams)."""
        self._transport.abort()


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
