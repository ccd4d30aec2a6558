"""The Memcached backend: readscale speaks memcached's meta protocol itself.

No Python client offers the meta protocol with values (pymemcache has no meta API and its
``raw_command`` drops the value line; aiomcache has none), and leases need it: ``mg`` with
``N`` (vivify) hands one client the fill (``W``) and tells the others (``Z``), and a
CAS-guarded ``ms`` refuses a fill once the lease is gone. The protocol lives in
``readscale._core.memcached_meta`` (sans-IO) and the meaning of items and leases in
``readscale._core.memcached_items``; this module only moves bytes.

Multi-key calls are pipelined: one write and one read sequence per server, each request
quiet (``q``: no reply for a miss, a stored value or a deleted key) and tagged with its
position (``O``), closed by ``mn``. Servers of a batch are visited one after the other.

memcached has no notifications, so ``wait_for_fill`` polls the key with an exponential
backoff (1 ms doubling to 50 ms); where a Redis is at hand, readscale's invalidation bus
can wake waiters instead.
"""

from __future__ import annotations

import functools
import secrets
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, assert_never

from readscale._core.memcached_items import (
    DEFAULT_MAX_VALUE_SIZE,
    POLL_FIRST_DELAY,
    VALUE_FLAGS,
    Found,
    ItemState,
    LeaseHeld,
    LeaseWon,
    Missing,
    ServerRing,
    item_state,
    max_value_size,
    next_poll_delay,
    parse_token,
)
from readscale._core.memcached_meta import (
    MetaArithmetic,
    MetaDelete,
    MetaGet,
    MetaNoop,
    MetaSet,
    SetMode,
    Stats,
    wire_ttl,
)
from readscale._core.memcached_replies import (
    AnyReply,
    ErrorKind,
    ErrorReply,
    MetaParser,
    MetaProtocolError,
    Reply,
    StatReply,
    Status,
)
from readscale._primitives import async_sleep
from readscale._transport import AsyncStreamPool, AsyncTcpStream, Endpoint
from readscale.backends_common import LEASE_HELD_ELSEWHERE, LeaseResult
from readscale.errors import CacheUnavailableError, ConfigurationError, ValueTooLargeError

if TYPE_CHECKING:
    from readscale._async.backends.base import AsyncBackend

__all__ = ["AsyncMemcachedBackend"]

NAME = "memcached"
_REFRESH_PREFIX = "r:"


def _refresh_key(key: str) -> str:
    return f"{key}:rl"


_NOOP = MetaNoop().encode()
_QUIET_GET = MetaGet("", client_flags=True, cas=True, quiet=True)


def _parse_address(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")  # "[::1]:11211"
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigurationError(f"a memcached address is host:port, got {address!r}")
    return host, int(port)


class _Server:
    __slots__ = ("endpoint", "item_size_max", "pool")

    def __init__(self, endpoint: Endpoint, item_size_max: int | None) -> None:
        self.endpoint = endpoint
        self.item_size_max = item_size_max  # learnt from `stats settings` on first connect
        self.pool: AsyncStreamPool


async def _round_trip(stream: AsyncTcpStream, payload: bytes, until: Status | None) -> list[AnyReply]:
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
            # memcached may now read the rest of the request as commands: the caller
            # discards this stream.
            message = f"{NAME} {stream.endpoint.address} refused a command: {reply.kind.value} {reply.message}"
            raise CacheUnavailableError(message, backend=NAME)
        if until is None:
            replies.append(reply)
            break
        if isinstance(reply, Reply) and reply.status is until:
            break
        replies.append(reply)
    if parser.buffered:
        raise MetaProtocolError(f"{parser.buffered} bytes beyond the expected replies")
    return replies


def _unexpected(reply: AnyReply, request: str) -> MetaProtocolError:
    return MetaProtocolError(f"unexpected reply to {request}: {reply!r}"[:200])


class AsyncMemcachedBackend:
    """A cache backend on one or more memcached servers (1.6 or newer: meta protocol).

    Arguments: ``address`` (``"127.0.0.1:11211"``) or ``addresses`` (keys spread by a
    consistent-hash ring); timeouts in milliseconds: ``connect_timeout_ms``,
    ``read_timeout_ms`` (each wait for bytes from the server), ``pool_timeout_ms`` (wait
    for a free connection when all ``pool_size`` connections of a server are busy);
    ``item_size_max`` (the server's ``-I``; by default read from ``stats settings`` on the
    first connection, as a proxy may not answer it); ``max_value_size`` (a lower cap).

    Raises ``CacheUnavailableError`` when a server is down, slow past a timeout or refuses a
    command; ``InvalidKeyError`` for a key memcached cannot hold (see
    ``readscale._core.memcached_meta.encode_key``); ``ValueTooLargeError`` before sending a
    value over ``max_value_size``. A batch with one bad key or value sends nothing.
    """

    name: str = NAME
    supports_leases: bool = True
    #: memcached has no atomic compare for LSNs: invalidate() deletes values and lease
    #: placeholders (so in-flight fills are refused) but records no tombstone.
    supports_tombstones: bool = False

    def __init__(
        self,
        address: str | None = None,
        *,
        addresses: Sequence[str] | None = None,
        connect_timeout_ms: float = 250,
        read_timeout_ms: float = 250,
        pool_size: int = 16,
        pool_timeout_ms: float = 1000,
        item_size_max: int | None = None,
        max_value_size: int | None = None,
    ) -> None:
        if (address is None) == (addresses is None):
            raise ConfigurationError("give memcached either address or addresses")
        names = [address] if address is not None else list(addresses or [])
        for label, number in (
            ("connect_timeout_ms", connect_timeout_ms),
            ("read_timeout_ms", read_timeout_ms),
            ("pool_timeout_ms", pool_timeout_ms),
            ("pool_size", pool_size),
        ):
            if not number > 0:
                raise ConfigurationError(f"memcached {label} must be > 0, got {number!r}")
        self._ring = ServerRing(names)
        self._servers: list[_Server] = []
        for host, port in map(_parse_address, names):
            endpoint = Endpoint(host, port, connect_timeout_ms / 1000, read_timeout_ms / 1000, NAME)
            server = _Server(endpoint, item_size_max)
            server.pool = AsyncStreamPool(
                endpoint,
                functools.partial(self._connect, server),
                max_size=pool_size,
                acquire_timeout=pool_timeout_ms / 1000,
            )
            self._servers.append(server)
        self._max_value_cap = max_value_size

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

    def _check_size(self, key: str, value: bytes) -> None:
        limit = self.max_value_size
        if len(value) > limit:
            raise ValueTooLargeError(key, len(value), limit)

    # -- connections ---------------------------------------------------------------------

    def _server_for(self, key: str) -> _Server:
        if len(self._servers) == 1:
            return self._servers[0]
        return self._servers[self._ring.index(key.encode("utf-8", "surrogatepass"))]

    def _group(self, keys: Sequence[str]) -> dict[int, list[int]]:
        """Positions of ``keys`` per server (by the server's position)."""
        groups: dict[int, list[int]] = {}
        for i, key in enumerate(keys):
            index = 0 if len(self._servers) == 1 else self._ring.index(key.encode("utf-8", "surrogatepass"))
            groups.setdefault(index, []).append(i)
        return groups

    async def _connect(self, server: _Server) -> AsyncTcpStream:
        stream = await AsyncTcpStream.connect(server.endpoint)
        if server.item_size_max is None:
            try:
                replies = await _round_trip(stream, Stats("settings").encode(), Status.END)
            except BaseException:
                await stream.close()
                raise
            for reply in replies:
                if isinstance(reply, StatReply) and reply.name == "item_size_max" and reply.value.isdigit():
                    server.item_size_max = int(reply.value)
        return stream

    async def _exchange(self, server: _Server, payload: bytes, until: Status | None = None) -> list[AnyReply]:
        stream = await server.pool.acquire()
        try:
            replies = await _round_trip(stream, payload, until)
        except BaseException as exc:
            await server.pool.discard(stream)
            if isinstance(exc, CacheUnavailableError):
                await server.pool.drop_idle()  # a dead server's other idle streams are dead too
            raise
        await server.pool.release(stream)
        return replies

    # -- replies ---------------------------------------------------------------------------

    def _state(self, reply: AnyReply) -> ItemState:
        if isinstance(reply, Reply) and reply.status in (Status.VA, Status.HD, Status.EN):
            return item_state(reply)
        raise self._failure(reply, "mg")

    def _failure(self, reply: AnyReply, request: str, key: str | None = None, size: int = 0) -> Exception:
        if isinstance(reply, ErrorReply) and reply.kind is ErrorKind.SERVER_ERROR:
            if "too large" in reply.message and key is not None:
                return ValueTooLargeError(key, size, self.max_value_size)
            return CacheUnavailableError(f"{NAME} failed {request}: SERVER_ERROR {reply.message}", backend=NAME)
        if isinstance(reply, Reply) and reply.status in (Status.NS, Status.EX, Status.NF):
            return CacheUnavailableError(f"{NAME} did not store {key!r}: {reply.status.value}", backend=NAME)
        return _unexpected(reply, request)

    async def _give_back(self, server: _Server, leases: Sequence[tuple[str, int]]) -> None:
        """Delete items whose lease a plain read won by accident (stale items answer W to
        any mg): no one would fill them and every lease taker would wait."""
        payload = b"".join(
            MetaDelete(key, compare_cas=cas, quiet=True, opaque=i).encode() for i, (key, cas) in enumerate(leases)
        )
        await self._exchange(server, payload + _NOOP, Status.MN)

    # -- the backend protocol ------------------------------------------------------------

    async def get(self, key: str) -> bytes | None:
        server = self._server_for(key)
        (reply,) = await self._exchange(server, MetaGet(key, client_flags=True, cas=True).encode())
        match self._state(reply):
            case Found(value=value):
                return value
            case Missing() | LeaseHeld():
                return None
            case LeaseWon(cas=cas):
                await self._give_back(server, [(key, cas)])
                return None
            case unreachable:
                assert_never(unreachable)

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        results: list[bytes | None] = [None] * len(keys)
        payloads = {  # every key is checked before anything is sent
            index: _QUIET_GET.encode_each(keys, positions) + _NOOP for index, positions in self._group(keys).items()
        }
        for index, payload in payloads.items():
            server = self._servers[index]
            won: list[tuple[str, int]] = []
            for reply in await self._exchange(server, payload, Status.MN):
                state = self._state(reply)
                i = reply.flags.opaque if isinstance(reply, Reply) else None
                if i is None or not 0 <= i < len(keys):
                    raise _unexpected(reply, "a pipelined mg")
                match state:
                    case Found(value=value):
                        results[i] = value
                    case Missing() | LeaseHeld():
                        pass
                    case LeaseWon(cas=cas):
                        won.append((keys[i], cas))
                    case unreachable:
                        assert_never(unreachable)
            if won:
                await self._give_back(server, won)
        return results

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        self._check_size(key, value)
        payload = MetaSet(key, value, ttl=wire_ttl(ttl, time.time()), client_flags=VALUE_FLAGS).encode()
        (reply,) = await self._exchange(self._server_for(key), payload)
        if not (isinstance(reply, Reply) and reply.status is Status.HD):
            raise self._failure(reply, "ms", key, len(value))

    async def set_many(self, items: Sequence[tuple[str, bytes, float]]) -> None:
        for key, value, _ in items:
            self._check_size(key, value)
        now = time.time()
        payloads = {  # every key and TTL is checked before anything is sent
            index: b"".join(
                MetaSet(key, value, ttl=wire_ttl(ttl, now), client_flags=VALUE_FLAGS, quiet=True, opaque=i).encode()
                for i in positions
                for key, value, ttl in (items[i],)
            )
            + _NOOP
            for index, positions in self._group([key for key, _, _ in items]).items()
        }
        for index, payload in payloads.items():
            for reply in await self._exchange(self._servers[index], payload, Status.MN):  # quiet: only failures
                i = reply.flags.opaque if isinstance(reply, Reply) else None
                if i is not None and 0 <= i < len(items):
                    raise self._failure(reply, "a pipelined ms", items[i][0], len(items[i][1]))
                raise self._failure(reply, "a pipelined ms")

    async def delete(self, key: str) -> bool:
        (reply,) = await self._exchange(self._server_for(key), MetaDelete(key).encode())
        if isinstance(reply, Reply) and reply.status in (Status.HD, Status.NF):
            return reply.status is Status.HD
        raise self._failure(reply, "md")

    async def delete_many(self, keys: Sequence[str]) -> int:
        batches = [  # every key is checked before anything is sent
            (index, b"".join(MetaDelete(keys[i], quiet=True, opaque=i).encode() for i in positions) + _NOOP, positions)
            for index, positions in self._group(keys).items()
        ]
        existed = 0
        for index, payload, positions in batches:
            replies = await self._exchange(self._servers[index], payload, Status.MN)
            for reply in replies:  # quiet md answers only the keys that were not there
                if not (isinstance(reply, Reply) and reply.status is Status.NF):
                    raise self._failure(reply, "a pipelined md")
            existed += len(positions) - len(replies)
        return existed

    async def lease(self, key: str, ttl: float) -> LeaseResult:
        """``mg <key> v f c N<ttl>``: a hit, a won lease (the token is the placeholder's
        CAS), or a lease held elsewhere. A stale item (``md <key> I``) is a miss: the
        first taker wins its refill."""
        request = MetaGet(key, client_flags=True, cas=True, vivify=wire_ttl(ttl, time.time()))
        (reply,) = await self._exchange(self._server_for(key), request.encode())
        match self._state(reply):
            case Found(value=value):
                assert value is not None  # asked with v
                return LeaseResult(value=value)
            case LeaseWon() as won:
                return LeaseResult(token=won.token)
            case LeaseHeld() | Missing():
                return LEASE_HELD_ELSEWHERE
            case unreachable:
                assert_never(unreachable)

    async def refresh_lease(self, key: str, ttl: float) -> str | None:
        """``ms <key>:rl <token> ME``: an add-mode companion item; its holder refreshes."""
        token = _REFRESH_PREFIX + secrets.token_hex(8)
        lease_key = _refresh_key(key)
        request = MetaSet(lease_key, token.encode(), ttl=wire_ttl(ttl, time.time()), mode=SetMode.ADD)
        (reply,) = await self._exchange(self._server_for(key), request.encode())
        if isinstance(reply, Reply) and reply.status in (Status.HD, Status.NS):
            return token if reply.status is Status.HD else None
        raise self._failure(reply, "ms (add)", lease_key)

    async def fill(self, key: str, value: bytes, ttl: float, token: str, lsn: int | None = None) -> bool:
        """``ms ... C<token>``: refused (False) once the placeholder was overwritten,
        deleted or expired. A value over ``max_value_size`` raises ValueTooLargeError and
        leaves the lease held: release it. ``lsn`` is ignored (no tombstones here)."""
        self._check_size(key, value)
        if token.startswith(_REFRESH_PREFIX):
            return await self._refresh_fill(key, value, ttl, token)
        cas = parse_token(token)
        request = MetaSet(key, value, ttl=wire_ttl(ttl, time.time()), client_flags=VALUE_FLAGS, compare_cas=cas)
        payload = request.encode()  # validates the key even when the token is void
        if cas is None:
            return False
        (reply,) = await self._exchange(self._server_for(key), payload)
        if isinstance(reply, Reply) and reply.status in (Status.HD, Status.EX, Status.NF, Status.NS):
            return reply.status is Status.HD
        raise self._failure(reply, "ms", key, len(value))

    async def _refresh_fill(self, key: str, value: bytes, ttl: float, token: str) -> bool:
        server = self._server_for(key)
        lease_key = _refresh_key(key)
        (held,) = await self._exchange(server, MetaGet(lease_key).encode())
        if not (isinstance(held, Reply) and held.status is Status.VA and held.value == token.encode()):
            return False
        await self.set(key, value, ttl)
        await self._exchange(server, MetaDelete(lease_key).encode())
        return True

    async def invalidate(self, keys: Sequence[str], *, lsn: int | None = None, tombstone_ttl: float = 30.0) -> int:
        """Delete values and lease placeholders (a fill under an older lease is then
        refused by its CAS). No tombstone: see ``supports_tombstones``."""
        return await self.delete_many(keys)

    async def get_counters(self, keys: Sequence[str]) -> list[int]:
        return [await self._arith(key, 0) for key in keys]

    async def incr_counters(self, keys: Sequence[str]) -> list[int]:
        return [await self._arith(key, 1) for key in keys]

    async def _arith(self, key: str, delta: int) -> int:
        request = MetaArithmetic(key, delta=delta, vivify=0, initial=0, value=True)
        (reply,) = await self._exchange(self._server_for(key), request.encode())
        if isinstance(reply, Reply) and reply.status is Status.VA and reply.value is not None:
            return int(reply.value)
        raise self._failure(reply, "ma", key)

    async def release(self, key: str, token: str) -> None:
        """``md <key> C<token>``: removes the placeholder only if it is still ours."""
        if token.startswith(_REFRESH_PREFIX):
            await self._exchange(self._server_for(key), MetaDelete(_refresh_key(key)).encode())
            return
        cas = parse_token(token)
        payload = MetaDelete(key, compare_cas=cas).encode()
        if cas is None:
            return
        (reply,) = await self._exchange(self._server_for(key), payload)
        if not (isinstance(reply, Reply) and reply.status in (Status.HD, Status.EX, Status.NF)):
            raise self._failure(reply, "md")

    async def wait_for_fill(self, key: str, timeout: float) -> bool:
        """Poll until the fill lands (True), or False when ``timeout`` passes or the lease
        is gone with nothing stored (released, expired or deleted: the caller leases again)."""
        server = self._server_for(key)
        payload = MetaGet(key, value=False, client_flags=True, cas=True, size=True).encode()
        deadline = time.monotonic() + timeout
        delay = POLL_FIRST_DELAY
        while True:
            (reply,) = await self._exchange(server, payload)
            match self._state(reply):
                case Found():
                    return True
                case Missing():
                    return False
                case LeaseWon(cas=cas):
                    await self._give_back(server, [(key, cas)])
                    return False
                case LeaseHeld():
                    pass
                case unreachable:
                    assert_never(unreachable)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            await async_sleep(min(delay, remaining))
            delay = next_poll_delay(delay)

    async def ping(self) -> None:
        for server in self._servers:
            (reply,) = await self._exchange(server, _NOOP)
            if not (isinstance(reply, Reply) and reply.status is Status.MN):
                raise _unexpected(reply, "mn")

    async def close(self) -> None:
        for server in self._servers:
            await server.pool.close()


if TYPE_CHECKING:

    def _conforms(backend: AsyncMemcachedBackend) -> AsyncBackend:
        return backend
