"""The Memcached backend: readscale speaks memcached's meta protocol itself.

No Python client offers the meta protocol with values (pymemcache has no meta API and its
``raw_command`` drops the value line; aiomcache has none), and leases need it: ``mg`` with
``N`` (vivify) hands one client the fill (``W``) and tells the others (``Z``), and a
CAS-guarded ``ms`` refuses a fill once the lease is gone. The protocol lives in
``readscale._core.memcached.requests`` (sans-IO) and the meaning of items and leases in
``readscale._core.memcached.items``; this module only moves bytes.

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

from readscale._async.backends._memcached_leases import (
    REFRESH_PREFIX,
    TOMB_GET,
    clock_ms,
    floor_key_of,
    lease_token,
    lsn_hex,
    parse_lsn_hex,
    parse_right,
    refresh_key_of,
    tomb_key_of,
    tomb_lsn,
    unexpected_reply,
)
from readscale._async.backends._memcached_servers import NAME, NOOP, QUIET_GET, Server, parse_address, round_trip
from readscale._core.cache.fill import PRIMARY_ONLY
from readscale._core.cache.lease import LEASE_HELD_ELSEWHERE, TICKET_PREFIX, LeaseResult
from readscale._core.memcached.items import (
    DEFAULT_MAX_VALUE_SIZE,
    FENCE_FLAGS,
    POLL_FIRST_DELAY,
    VALUE_FLAGS,
    Fence,
    Found,
    ItemState,
    LeaseHeld,
    LeaseWon,
    Missing,
    ServerRing,
    fence_value,
    item_state,
    max_value_size,
    next_poll_delay,
)
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
    MetaArithmetic,
    MetaDelete,
    MetaGet,
    MetaSet,
    SetMode,
    Stats,
    wire_ttl,
)
from readscale._shared.primitives.locks import async_sleep
from readscale._shared.transport import AsyncStreamPool, AsyncTcpStream, Endpoint
from readscale.errors import CacheUnavailableError, ConfigurationError, ValueTooLargeError

if TYPE_CHECKING:
    from readscale._async.backends.base import AsyncBackend

__all__ = ["AsyncMemcachedBackend"]

_CAS_ATTEMPTS = 32


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
    ``readscale._core.memcached.requests.encode_key``); ``ValueTooLargeError`` before sending a
    value over ``max_value_size``. A batch with one bad key or value sends nothing.
    """

    name: str = NAME
    supports_leases: bool = True
    #: Tombstones as fences and ``<key>:tomb`` items (see memcached_items), compared
    #: under the CAS of the fill's right: the meta protocol's ``C`` makes it atomic.
    supports_tombstones: bool = True

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
        self._servers: list[Server] = []
        for host, port in map(parse_address, names):
            endpoint = Endpoint(host, port, connect_timeout_ms / 1000, read_timeout_ms / 1000, NAME)
            server = Server(endpoint, item_size_max)
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

    def _server_for(self, key: str) -> Server:
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

    async def _connect(self, server: Server) -> AsyncTcpStream:
        stream = await AsyncTcpStream.connect(server.endpoint)
        if server.item_size_max is None:
            try:
                replies = await round_trip(stream, Stats("settings").encode(), Status.END)
            except BaseException:
                await stream.close()
                raise
            for reply in replies:
                if isinstance(reply, StatReply) and reply.name == "item_size_max" and reply.value.isdigit():
                    server.item_size_max = int(reply.value)
        return stream

    async def _exchange(self, server: Server, payload: bytes, until: Status | None = None) -> list[AnyReply]:
        stream = await server.pool.acquire()
        try:
            replies = await round_trip(stream, payload, until)
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
        return unexpected_reply(reply, request)

    async def _give_back(self, server: Server, leases: Sequence[tuple[str, int]]) -> None:
        """Delete items whose lease a plain read won by accident (stale items answer W to
        any mg): no one would fill them and every lease taker would wait."""
        payload = b"".join(
            MetaDelete(key, compare_cas=cas, quiet=True, opaque=i).encode() for i, (key, cas) in enumerate(leases)
        )
        await self._exchange(server, payload + NOOP, Status.MN)

    # -- the backend protocol ------------------------------------------------------------

    async def get(self, key: str) -> bytes | None:
        server = self._server_for(key)
        (reply,) = await self._exchange(server, MetaGet(key, client_flags=True, cas=True).encode())
        match self._state(reply):
            case Found(value=value):
                return value
            case Missing() | LeaseHeld() | Fence():
                return None
            case LeaseWon(cas=cas):
                await self._give_back(server, [(key, cas)])
                return None
            case unreachable:
                assert_never(unreachable)

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        results: list[bytes | None] = [None] * len(keys)
        payloads = {  # every key is checked before anything is sent
            index: QUIET_GET.encode_each(keys, positions) + NOOP for index, positions in self._group(keys).items()
        }
        for index, payload in payloads.items():
            server = self._servers[index]
            won: list[tuple[str, int]] = []
            for reply in await self._exchange(server, payload, Status.MN):
                state = self._state(reply)
                i = reply.flags.opaque if isinstance(reply, Reply) else None
                if i is None or not 0 <= i < len(keys):
                    raise unexpected_reply(reply, "a pipelined mg")
                match state:
                    case Found(value=value):
                        results[i] = value
                    case Missing() | LeaseHeld() | Fence():
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
            + NOOP
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
            (index, b"".join(MetaDelete(keys[i], quiet=True, opaque=i).encode() for i in positions) + NOOP, positions)
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

    # -- fill rights, tombstones and fences ------------------------------------------------
    #
    # Tokens: a lease on a placeholder or a fence is "<cas>.<floor>", a ticket is
    # "t~<cas or add>.<floor>.<deadline>", a refresh lease "r:<id>.<cas>.<floor>"; <floor>
    # is the tombstone's LSN in hex ("-": none) when the right was taken, <deadline> the
    # ticket's end on this process's monotonic clock, in ms. The CAS makes the store
    # atomic against any invalidation since (it rewrites the key's item), so the floor
    # read with the right is the floor at the store.

    async def _item_and_floor(self, key: str, request: MetaGet) -> tuple[ItemState, int | None]:
        """``request`` for ``key`` and its tombstone, pipelined in that order on the key's
        server: an invalidation writes the tombstone before the fence, so a fence seen
        here comes with its tombstone."""
        server = self._server_for(key)
        payload = (
            request._replace(opaque=0, quiet=False).encode()
            + TOMB_GET._replace(key=tomb_key_of(key), opaque=1).encode()
        )
        replies = await self._exchange_n(server, payload, 2)
        return self._state(replies[0]), tomb_lsn(replies[1])

    async def _exchange_n(self, server: Server, payload: bytes, n: int) -> list[AnyReply]:
        stream = await server.pool.acquire()
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
                    message = f"{NAME} {stream.endpoint.address} refused a command: {reply.kind.value} {reply.message}"
                    raise CacheUnavailableError(message, backend=NAME)
                replies.append(reply)
            if parser.buffered:
                raise MetaProtocolError(f"{parser.buffered} bytes beyond the expected replies")
        except BaseException as exc:
            await server.pool.discard(stream)
            if isinstance(exc, CacheUnavailableError):
                await server.pool.drop_idle()
            raise
        await server.pool.release(stream)
        return replies

    async def lease(self, key: str, ttl: float) -> LeaseResult:
        """``mg <key> v f c t N<ttl>``: a hit, a won lease (the token is the placeholder's
        CAS), or a lease held elsewhere. On a fence (an invalidated key) the lease is taken
        by rewriting the fence with the lease's end, CAS-guarded: one client wins."""
        request = MetaGet(key, client_flags=True, cas=True, ttl=True, vivify=wire_ttl(ttl, time.time()))
        state, floor = await self._item_and_floor(key, request)
        match state:
            case Found(value=value):
                assert value is not None  # asked with v
                return LeaseResult(value=value)
            case LeaseWon(cas=cas):
                return LeaseResult(token=lease_token(cas, floor), floor_lsn=floor)
            case Fence() as fence:
                now_ms = clock_ms()
                if fence.leased(now_ms):
                    return LEASE_HELD_ELSEWHERE
                taken = await self._rewrite_fence(key, fence, now_ms + int(ttl * 1000), ttl)
                if taken is None:
                    return LEASE_HELD_ELSEWHERE  # another client took it, or an invalidation came
                return LeaseResult(token=lease_token(taken, floor), floor_lsn=floor)
            case LeaseHeld() | Missing():
                return LEASE_HELD_ELSEWHERE
            case unreachable:
                assert_never(unreachable)

    async def _rewrite_fence(self, key: str, fence: Fence, lease_until_ms: int | None, ttl: float) -> int | None:
        """Rewrite a fence (taking or giving back its lease), CAS-guarded; its new CAS, or
        None when the item changed meanwhile. The fence keeps at least its remaining life."""
        left = fence.ttl if fence.ttl is not None and fence.ttl > 0 else 0
        life = max(float(left), ttl, 1.0)
        request = MetaSet(
            key,
            fence_value(lease_until_ms),
            ttl=wire_ttl(life, time.time()),
            client_flags=FENCE_FLAGS,
            compare_cas=fence.cas,
            return_cas=True,
        )
        (reply,) = await self._exchange(self._server_for(key), request.encode())
        if isinstance(reply, Reply) and reply.status is Status.HD:
            return reply.flags.cas
        if isinstance(reply, Reply) and reply.status in (Status.EX, Status.NF, Status.NS):
            return None
        raise self._failure(reply, "ms (fence)", key)

    async def ticket(self, key: str, ttl: float) -> LeaseResult:
        """A fill right that excludes nobody: the CAS of whatever the key holds now (or
        "absent": the store then only adds), and the key's tombstone."""
        state, floor = await self._item_and_floor(key, MetaGet(key, client_flags=True, cas=True))
        match state:
            case Missing():
                cas: int | None = None
            case Found() | LeaseHeld():
                # A value being replaced, or someone's placeholder: the plain read that
                # told us did not return its CAS for LeaseHeld, so read it again.
                cas = await self._cas_of(key)
            case LeaseWon(cas=won) | Fence(cas=won):
                cas = won
            case unreachable:
                assert_never(unreachable)
        deadline = int((time.monotonic() + ttl) * 1000)
        return LeaseResult(
            token=f"{TICKET_PREFIX}{'add' if cas is None else cas}.{lsn_hex(floor)}.{deadline}", floor_lsn=floor
        )

    async def _cas_of(self, key: str) -> int | None:
        (reply,) = await self._exchange(self._server_for(key), MetaGet(key, value=False, cas=True).encode())
        if isinstance(reply, Reply) and reply.status is Status.EN:
            return None
        if isinstance(reply, Reply) and reply.flags.cas is not None:
            return reply.flags.cas
        raise unexpected_reply(reply, "mg c")

    async def ticket_many(self, keys: Sequence[str], ttl: float) -> list[LeaseResult]:
        return [await self.ticket(key, ttl) for key in keys]

    async def fill_many(self, items: Sequence[tuple[str, bytes, float, str, int | None]]) -> list[bool]:
        return [await self.fill(key, value, ttl, token, lsn) for key, value, ttl, token, lsn in items]

    async def refresh_lease(self, key: str, ttl: float) -> str | None:
        """``ms <key>:rl <id> ME``: one refresher per stale key; its store is guarded by
        the CAS the value had when the refresh began."""
        ident = secrets.token_hex(8)
        lease_key = refresh_key_of(key)
        server = self._server_for(key)
        request = MetaSet(lease_key, ident.encode(), ttl=wire_ttl(ttl, time.time()), mode=SetMode.ADD)
        (reply,) = await self._exchange(server, request.encode())
        if not (isinstance(reply, Reply) and reply.status in (Status.HD, Status.NS)):
            raise self._failure(reply, "ms (add)", lease_key)
        if reply.status is Status.NS:
            return None
        state, floor = await self._item_and_floor(key, MetaGet(key, value=False, client_flags=True, cas=True))
        cas = await self._cas_of(key) if isinstance(state, Found) else None
        if cas is None:  # no value to refresh any more (invalidated, expired): a miss fills it
            await self._exchange(server, MetaDelete(lease_key).encode())
            return None
        return f"{REFRESH_PREFIX}{ident}.{cas}.{lsn_hex(floor)}"

    async def fill(self, key: str, value: bytes, ttl: float, token: str, lsn: int | None = None) -> bool:
        """``ms ... C<cas>`` (or add mode for a ticket on an absent key): refused (False)
        once the key's item changed since the right was taken (an invalidation, another
        fill), or when the source ``lsn`` is older than the tombstone the right came with
        (the lease is then given back). A value over ``max_value_size`` raises
        ValueTooLargeError and leaves the lease held: release it."""
        self._check_size(key, value)
        right = parse_right(token)
        request = MetaSet(key, value, ttl=wire_ttl(ttl, time.time()), client_flags=VALUE_FLAGS)
        request.encode()  # validates the key even when the token is void
        if right is None:
            return False
        if right.deadline_ms is not None and time.monotonic() * 1000 > right.deadline_ms:
            return False  # a ticket older than its life: a fence it should have hit may be gone
        if right.floor is not None and (lsn is None or lsn < right.floor):
            await self.release(key, token)
            return False
        # An absent key's ticket only adds: an invalidation since would have left a fence.
        request = request._replace(mode=SetMode.ADD) if right.cas is None else request._replace(compare_cas=right.cas)
        server = self._server_for(key)
        (reply,) = await self._exchange(server, request.encode())
        if not (isinstance(reply, Reply) and reply.status in (Status.HD, Status.EX, Status.NF, Status.NS)):
            raise self._failure(reply, "ms", key, len(value))
        if right.refresh is not None:
            await self._exchange(server, MetaDelete(refresh_key_of(key)).encode())
        return reply.status is Status.HD

    async def release(self, key: str, token: str) -> None:
        """Give a right back: a placeholder is deleted and a fence's lease cleared (both
        only if still ours); a ticket holds nothing."""
        right = parse_right(token)
        if right is None or right.deadline_ms is not None:
            return
        server = self._server_for(key)
        if right.refresh is not None:
            await self._exchange(server, MetaDelete(refresh_key_of(key)).encode())
            return
        (reply,) = await self._exchange(server, MetaGet(key, client_flags=True, cas=True, ttl=True).encode())
        state = self._state(reply)
        if isinstance(state, Fence):
            if state.cas == right.cas:
                await self._rewrite_fence(key, state, None, 1.0)
            return
        if isinstance(state, LeaseWon | LeaseHeld) and right.cas is not None:
            (reply,) = await self._exchange(server, MetaDelete(key, compare_cas=right.cas).encode())
            if not (isinstance(reply, Reply) and reply.status in (Status.HD, Status.EX, Status.NF)):
                raise self._failure(reply, "md")

    async def invalidate(self, keys: Sequence[str], *, lsn: int | None = None, tombstone_ttl: float = 35.0) -> int:
        """For each key: raise its tombstone (``<key>:tomb``: the LSN and the expiry only
        grow), then replace whatever the key holds with a fence (a new CAS: every fill
        right taken before is void). How many values existed."""
        floor = PRIMARY_ONLY if lsn is None else lsn
        existed = 0
        for key in keys:
            await self._raise_floor(tomb_key_of(key), key, floor, tombstone_ttl)
            existed += await self._fence(key, tombstone_ttl)
        return existed

    async def invalidate_for_write(
        self, key: str, *, lsn: int | None, tombstone_ttl: float, ticket_ttl: float
    ) -> LeaseResult:
        """:meth:`invalidate`, then :meth:`ticket`: the fence's and the tombstone's CAS
        loops cannot share one round trip."""
        await self.invalidate([key], lsn=lsn, tombstone_ttl=tombstone_ttl)
        return await self.ticket(key, ticket_ttl)

    async def _raise_floor(self, floor_key: str, owner: str, lsn: int, life: float) -> None:
        """Raise a floor item (a tombstone, a counter's floor) by CAS: LSN and expiry only grow."""
        server = self._server_for(owner)
        for _ in range(_CAS_ATTEMPTS):
            (reply,) = await self._exchange(server, MetaGet(floor_key, cas=True, ttl=True).encode())
            now = time.time()
            if isinstance(reply, Reply) and reply.status is Status.EN:
                request = MetaSet(floor_key, lsn_hex(lsn).encode(), ttl=wire_ttl(life, now), mode=SetMode.ADD)
            elif isinstance(reply, Reply) and reply.status is Status.VA and reply.flags.cas is not None:
                old = parse_lsn_hex(reply.value)
                left = reply.flags.ttl if reply.flags.ttl is not None and reply.flags.ttl > 0 else 0
                value = lsn_hex(max(lsn, old if old is not None else 0)).encode()
                request = MetaSet(
                    floor_key, value, ttl=wire_ttl(max(life, float(left)), now), compare_cas=reply.flags.cas
                )
            else:
                raise unexpected_reply(reply, "mg (floor)")
            (stored,) = await self._exchange(server, request.encode())
            if isinstance(stored, Reply) and stored.status is Status.HD:
                return
            if not (isinstance(stored, Reply) and stored.status in (Status.NS, Status.EX, Status.NF)):
                raise self._failure(stored, "ms (floor)", floor_key)
        raise CacheUnavailableError(f"{NAME}: {floor_key} kept changing; its floor was not raised", backend=NAME)

    async def _fence(self, key: str, life: float) -> int:
        """Replace the key's item with a fence for ``life`` seconds; 1 if it held a value."""
        server = self._server_for(key)
        for _ in range(_CAS_ATTEMPTS):
            (reply,) = await self._exchange(server, MetaGet(key, client_flags=True, cas=True, ttl=True).encode())
            state = self._state(reply)
            now = time.time()
            fence = MetaSet(key, b"", ttl=wire_ttl(life, now), client_flags=FENCE_FLAGS)
            match state:
                case Missing():
                    request = fence._replace(mode=SetMode.ADD)
                case Fence(cas=fence_cas, ttl=left):
                    keep = float(left) if left is not None and left > 0 else 0.0
                    request = fence._replace(ttl=wire_ttl(max(life, keep), now), compare_cas=fence_cas)
                case Found() | LeaseWon() | LeaseHeld():
                    cas = reply.flags.cas if isinstance(reply, Reply) else None
                    if cas is None:
                        raise unexpected_reply(reply, "mg c")
                    request = fence._replace(compare_cas=cas)
                case unreachable:
                    assert_never(unreachable)
            (stored,) = await self._exchange(server, request.encode())
            if isinstance(stored, Reply) and stored.status is Status.HD:
                return 1 if isinstance(state, Found) else 0
            if not (isinstance(stored, Reply) and stored.status in (Status.NS, Status.EX, Status.NF)):
                raise self._failure(stored, "ms (fence)", key)
        raise CacheUnavailableError(f"{NAME}: {key} kept changing; it was not invalidated", backend=NAME)

    async def get_counters(self, keys: Sequence[str]) -> list[int]:
        return [await self._arith(key, 0) for key in keys]

    async def incr_counters(self, keys: Sequence[str]) -> list[int]:
        return [await self._arith(key, 1) for key in keys]

    async def bump_counters(self, keys: Sequence[str], *, lsn: int | None, floor_ttl: float) -> list[int]:
        floor = PRIMARY_ONLY if lsn is None else lsn
        out = []
        for key in keys:
            await self._raise_floor(floor_key_of(key), key, floor, floor_ttl)
            out.append(await self._arith(key, 1))
        return out

    async def counter_floors(self, keys: Sequence[str]) -> list[int | None]:
        out = []
        for key in keys:
            (reply,) = await self._exchange(self._server_for(key), TOMB_GET._replace(key=floor_key_of(key)).encode())
            out.append(tomb_lsn(reply))
        return out

    async def register(self, key: str, value: bytes) -> bytes:
        server = self._server_for(key)
        (reply,) = await self._exchange(server, MetaSet(key, value, mode=SetMode.ADD).encode())
        if not (isinstance(reply, Reply) and reply.status in (Status.HD, Status.NS)):
            raise self._failure(reply, "ms (add)", key)
        (reply,) = await self._exchange(server, MetaGet(key).encode())
        if isinstance(reply, Reply) and reply.status is Status.VA and reply.value is not None:
            return reply.value
        return value

    async def eviction_risk(self) -> str | None:
        risky = []
        for server in self._servers:
            replies = await self._exchange(server, Stats("settings").encode(), Status.END)
            for reply in replies:
                if isinstance(reply, StatReply) and reply.name == "evictions" and reply.value != "off":
                    risky.append(server.endpoint.address)
        if not risky:
            return None
        return f"{', '.join(risky)} evicts items when full (evictions on)"

    async def _arith(self, key: str, delta: int) -> int:
        # A counter created by this call starts at ``delta`` (memcached returns the initial
        # value on a vivifying miss): a bump of a counter nobody read yet is still a bump.
        request = MetaArithmetic(key, delta=delta, vivify=0, initial=delta, value=True)
        (reply,) = await self._exchange(self._server_for(key), request.encode())
        if isinstance(reply, Reply) and reply.status is Status.VA and reply.value is not None:
            return int(reply.value)
        raise self._failure(reply, "ma", key)

    async def wait_for_fill(self, key: str, timeout: float) -> bool:
        """Poll until the fill lands (True), or False when ``timeout`` passes or the lease
        is gone with nothing stored (released, expired or invalidated: lease again)."""
        server = self._server_for(key)
        payload = MetaGet(key, client_flags=True, cas=True).encode()
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
                case Fence() as fence:
                    if not fence.leased(clock_ms()):
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
            (reply,) = await self._exchange(server, NOOP)
            if not (isinstance(reply, Reply) and reply.status is Status.MN):
                raise unexpected_reply(reply, "mn")

    async def close(self) -> None:
        for server in self._servers:
            await server.pool.close()


if TYPE_CHECKING:

    def _conforms(backend: AsyncMemcachedBackend) -> AsyncBackend:
        return backend
