"""The servers of the Memcached backend and the exchange with each: addresses, the ring
that picks a key's server, one connection pool per server, a round trip on a pooled
connection, and what a failure costs (the connection is discarded; after an outage the
server's idle connections too, as they are dead as well).

The largest value the servers take lives here too (each server's ``item_size_max``,
learnt on its first connection), and so does the meaning of a reply that is not an
answer (a refusal, ``SERVER_ERROR``): the plain operations and the lease protocol both
read replies through :class:`AsyncServers`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

from readscale._core.memcached.hits import read_one, read_pipeline
from readscale._core.memcached.items import DEFAULT_MAX_VALUE_SIZE, ItemState, ServerRing, item_state, max_value_size
from readscale._core.memcached.replies import (
    AnyReply,
    ErrorKind,
    ErrorReply,
    MetaParser,
    MetaProtocolError,
    Reply,
    StatReply,
    Status,
)
from readscale._core.memcached.requests import (
    MetaGet,
    MetaNoop,
    Stats,
)
from readscale._shared.tracing import CLIENT, TRACING, span
from readscale._shared.transport import AsyncStreamPool, AsyncTcpStream, Endpoint
from readscale.errors import CacheUnavailableError, ConfigurationError, ValueTooLargeError

NAME = "memcached"
NOOP = MetaNoop().encode()
QUIET_GET = MetaGet("", client_flags=True, cas=True, quiet=True)
GET_TAIL = MetaGet("", client_flags=True, cas=True).tail()


def parse_address(address: str) -> tuple[str, int]:
    """``host:port`` (``[::1]:11211`` for IPv6) split, or one line naming the wrong part."""
    if not isinstance(address, str):
        raise ConfigurationError(f"a memcached address is a host:port string, got {type(address).__name__}")
    host, sep, port = address.rpartition(":")
    bracketed = host.startswith("[") and host.endswith("]")
    if not sep:
        problem = "the port is missing"
    elif not host or host == "[]":
        problem = "the host is missing"
    elif (":" in host or "[" in host or "]" in host) and not (bracketed and "[" not in host[1:-1]):
        problem = "an IPv6 host goes in brackets, as in [::1]:11211"
    elif any(ch.isspace() for ch in host):
        problem = "the host holds whitespace"
    elif not port.isdigit() or not 0 < int(port) < 65536:
        problem = f"the port must be a number from 1 to 65535, got {port!r}"
    else:
        return host.removeprefix("[").removesuffix("]"), int(port)
    raise ConfigurationError(f"a memcached address is host:port, got {address!r}: {problem}")


def commands_of(payload: bytes) -> list[str]:
    """The meta commands in ``payload`` (for a span's ``db.operation.name``), without the
    ``mn`` that closes a pipeline; an ``ms`` request's data block is skipped by its length."""
    commands: list[str] = []
    pos = 0
    while pos < len(payload):
        end = payload.find(b"\r\n", pos)
        if end < 0:
            break
        parts = payload[pos:end].split(b" ", 3)
        pos = end + 2
        if parts[0] == b"ms" and len(parts) > 2 and parts[2].isdigit():
            pos += int(parts[2]) + 2
        if parts[0] != b"mn":
            commands.append(parts[0].decode("ascii", "replace"))
    return commands


def span_attributes(endpoint: Endpoint, payload: bytes) -> tuple[str, dict[str, str | int]]:
    """A round trip's span name and attributes (semantic conventions for database client
    spans: the name is the operation; a pipeline of several requests is a batch)."""
    commands = commands_of(payload) or ["mn"]
    operation = commands[0]
    attributes: dict[str, str | int] = {"db.system.name": NAME}
    if len(commands) > 1:
        operation = f"BATCH {operation}" if len(set(commands)) == 1 else "BATCH"
        attributes["db.operation.batch.size"] = len(commands)
    attributes["db.operation.name"] = operation
    attributes["server.address"] = endpoint.host
    attributes["server.port"] = endpoint.port
    return operation, attributes


def unexpected_reply(reply: AnyReply, request: str) -> MetaProtocolError:
    return MetaProtocolError(f"unexpected reply to {request}: {reply!r}"[:200])


def refused(stream: AsyncTcpStream, reply: ErrorReply) -> CacheUnavailableError:
    # memcached may now read the rest of the request as commands: the caller discards
    # this stream.
    message = f"{NAME} {stream.endpoint.address} refused a command: {reply.kind.value} {reply.message}"
    return CacheUnavailableError(message, backend=NAME)


async def round_trip(stream: AsyncTcpStream, payload: bytes, until: Status | None) -> list[AnyReply]:
    """Write ``payload``; read one reply, or (``until``) every reply before that status."""
    await stream.write(payload)
    parser = MetaParser()
    replies: list[AnyReply] = []
    while True:
        reply = parser.next_reply()
        if reply is None:
            parser.feed(await stream.read())
            continue
        if isinstance(reply, ErrorReply) and reply.kind is not ErrorKind.SERVER_ERROR:
            raise refused(stream, reply)
        if until is None:
            replies.append(reply)
            break
        if isinstance(reply, Reply) and reply.status is until:
            break
        replies.append(reply)
    if parser.buffered:
        raise MetaProtocolError(f"{parser.buffered} bytes beyond the expected replies")
    return replies


class AsyncServer:
    """One memcached server: its endpoint, its pool of connections, and the largest item
    it takes (``item_size_max``: given, or read from ``stats settings`` on the first
    connection, as a proxy may not answer it)."""

    __slots__ = ("endpoint", "item_size_max", "pool")

    def __init__(self, endpoint: Endpoint, item_size_max: int | None, *, pool_size: int, pool_timeout: float) -> None:
        self.endpoint = endpoint
        self.item_size_max = item_size_max
        self.pool = AsyncStreamPool(endpoint, self._connect, max_size=pool_size, acquire_timeout=pool_timeout)

    async def _connect(self) -> AsyncTcpStream:
        stream = await AsyncTcpStream.connect(self.endpoint)
        if self.item_size_max is None:
            try:
                replies = await round_trip(stream, Stats("settings").encode(), Status.END)
            except BaseException:
                await stream.close()
                raise
            for reply in replies:
                if isinstance(reply, StatReply) and reply.name == "item_size_max" and reply.value.isdigit():
                    self.item_size_max = int(reply.value)
        return stream

    async def exchange(self, payload: bytes, until: Status | None = None) -> list[AnyReply]:
        """One round trip (see :func:`round_trip`) on a pooled connection."""
        if TRACING.tracer is None:
            return await self._exchange(payload, until)
        name, attributes = span_attributes(self.endpoint, payload)
        with span(name, attributes, CLIENT):
            return await self._exchange(payload, until)

    async def _exchange(self, payload: bytes, until: Status | None) -> list[AnyReply]:
        stream = await self.pool.acquire()
        try:
            replies = await round_trip(stream, payload, until)
        except BaseException as exc:
            await self.pool.discard(stream)
            if isinstance(exc, CacheUnavailableError):
                await self.pool.drop_idle()  # a dead server's other idle streams are dead too
            raise
        await self.pool.release(stream)
        return replies

    async def get_value(self, payload: bytes) -> bytes | AnyReply:
        """One ``mg ... v f c``: a plain hit's value, else its reply (see ``hits``). The
        hot path of ``get``: one write, one read for a value that fits one."""
        if TRACING.tracer is None:
            return await self._get_value(payload)
        name, attributes = span_attributes(self.endpoint, payload)
        with span(name, attributes, CLIENT):
            return await self._get_value(payload)

    async def _get_value(self, payload: bytes) -> bytes | AnyReply:
        stream = await self.pool.acquire()
        try:
            await stream.write(payload)
            data = await stream.read()
            reply = read_one(data)
            if reply is None:  # a value longer than one read: parse it as it comes
                parser = MetaParser()
                parser.feed(data)
                while (reply := parser.next_reply()) is None:
                    parser.feed(await stream.read())
                if parser.buffered:
                    raise MetaProtocolError(f"{parser.buffered} bytes beyond the expected replies")
            if isinstance(reply, ErrorReply) and reply.kind is not ErrorKind.SERVER_ERROR:
                raise refused(stream, reply)
        except BaseException as exc:
            await self.pool.discard(stream)
            if isinstance(exc, CacheUnavailableError):
                await self.pool.drop_idle()
            raise
        await self.pool.release(stream)
        return reply

    async def get_values(self, payload: bytes, values: list[bytes | None]) -> list[AnyReply]:
        """A pipeline of quiet ``mg ... v f c q O<i>`` closed by ``mn``: plain hits'
        values land in ``values[i]``; the other replies are returned, in order."""
        if TRACING.tracer is None:
            return await self._get_values(payload, values)
        name, attributes = span_attributes(self.endpoint, payload)
        with span(name, attributes, CLIENT):
            return await self._get_values(payload, values)

    async def _get_values(self, payload: bytes, values: list[bytes | None]) -> list[AnyReply]:
        stream = await self.pool.acquire()
        try:
            await stream.write(payload)
            others: list[AnyReply] = []
            data = await stream.read()
            pos, done = read_pipeline(data, 0, values, others)
            while not done:
                for reply in others:
                    if isinstance(reply, ErrorReply) and reply.kind is not ErrorKind.SERVER_ERROR:
                        raise refused(stream, reply)
                data = data[pos:] + await stream.read()
                pos, done = read_pipeline(data, 0, values, others)
            if pos != len(data):
                raise MetaProtocolError(f"{len(data) - pos} bytes beyond the expected replies")
            for reply in others:
                if isinstance(reply, ErrorReply) and reply.kind is not ErrorKind.SERVER_ERROR:
                    raise refused(stream, reply)
        except BaseException as exc:
            await self.pool.discard(stream)
            if isinstance(exc, CacheUnavailableError):
                await self.pool.drop_idle()
            raise
        await self.pool.release(stream)
        return others

    async def exchange_n(self, payload: bytes, n: int) -> list[AnyReply]:
        """``payload`` holds ``n`` requests that each get a reply: read the ``n`` replies."""
        if TRACING.tracer is None:
            return await self._exchange_n(payload, n)
        name, attributes = span_attributes(self.endpoint, payload)
        with span(name, attributes, CLIENT):
            return await self._exchange_n(payload, n)

    async def _exchange_n(self, payload: bytes, n: int) -> list[AnyReply]:
        stream = await self.pool.acquire()
        try:
            await stream.write(payload)
            parser = MetaParser()
            replies: list[AnyReply] = []
            while len(replies) < n:
                reply = parser.next_reply()
                if reply is None:
                    parser.feed(await stream.read())
                    continue
                if isinstance(reply, ErrorReply) and reply.kind is not ErrorKind.SERVER_ERROR:
                    raise refused(stream, reply)
                replies.append(reply)
            if parser.buffered:
                raise MetaProtocolError(f"{parser.buffered} bytes beyond the expected replies")
        except BaseException as exc:
            await self.pool.discard(stream)
            if isinstance(exc, CacheUnavailableError):
                await self.pool.drop_idle()
            raise
        await self.pool.release(stream)
        return replies


class AsyncServers:
    """The backend's servers (keys spread by a consistent-hash ring), the largest value
    they all take, and the errors their replies mean."""

    def __init__(
        self,
        names: Sequence[str],
        *,
        connect_timeout_ms: float,
        read_timeout_ms: float,
        pool_size: int,
        pool_timeout_ms: float,
        item_size_max: int | None,
        max_value_size: int | None,
    ) -> None:
        self._ring = ServerRing(names)
        self._servers: list[AsyncServer] = []
        for host, port in map(parse_address, names):
            endpoint = Endpoint(host, port, connect_timeout_ms / 1000, read_timeout_ms / 1000, NAME)
            server = AsyncServer(endpoint, item_size_max, pool_size=pool_size, pool_timeout=pool_timeout_ms / 1000)
            self._servers.append(server)
        self._max_value_cap = max_value_size

    def __iter__(self) -> Iterator[AsyncServer]:
        return iter(self._servers)

    def for_key(self, key: str) -> AsyncServer:
        if len(self._servers) == 1:
            return self._servers[0]
        return self._servers[self._ring.index(key.encode("utf-8", "surrogatepass"))]

    def group(self, keys: Sequence[str]) -> Mapping[AsyncServer, Sequence[int]]:
        """Positions of ``keys`` per server, the servers in the order of their first key."""
        if len(self._servers) == 1:  # one server: every key is its, no key need be hashed
            return {self._servers[0]: range(len(keys))} if keys else {}
        groups: dict[AsyncServer, list[int]] = {}
        for i, key in enumerate(keys):
            index = self._ring.index(key.encode("utf-8", "surrogatepass"))
            groups.setdefault(self._servers[index], []).append(i)
        return groups

    # -- limits ------------------------------------------------------------------------

    @property
    def max_value_size(self) -> int:
        """The largest value every server takes under any key (see memcached_items)."""
        known = [s.item_size_max for s in self._servers if s.item_size_max is not None]
        limit = max_value_size(min(known)) if known else DEFAULT_MAX_VALUE_SIZE
        return limit if self._max_value_cap is None else min(limit, self._max_value_cap)

    @max_value_size.setter
    def max_value_size(self, cap: int | None) -> None:
        self._max_value_cap = cap

    def check_size(self, key: str, value: bytes) -> None:
        limit = self.max_value_size
        if len(value) > limit:
            raise ValueTooLargeError(key, len(value), limit)

    # -- replies ---------------------------------------------------------------------------

    def state(self, reply: AnyReply) -> ItemState:
        """What an ``mg`` found (see memcached_items), or the error its reply means."""
        if isinstance(reply, Reply) and reply.status in (Status.VA, Status.HD, Status.EN):
            return item_state(reply)
        raise self.failure(reply, "mg")

    def failure(self, reply: AnyReply, request: str, key: str | None = None, size: int = 0) -> Exception:
        """The error a reply other than the expected one means."""
        if isinstance(reply, ErrorReply) and reply.kind is ErrorKind.SERVER_ERROR:
            if "too large" in reply.message and key is not None:
                return ValueTooLargeError(key, size, self.max_value_size)
            return CacheUnavailableError(f"{NAME} failed {request}: SERVER_ERROR {reply.message}", backend=NAME)
        if isinstance(reply, Reply) and reply.status in (Status.NS, Status.EX, Status.NF):
            return CacheUnavailableError(f"{NAME} did not store {key!r}: {reply.status.value}", backend=NAME)
        return unexpected_reply(reply, request)

    async def close(self) -> None:
        for server in self._servers:
            await server.pool.close()
