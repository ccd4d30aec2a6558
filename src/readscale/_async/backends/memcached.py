"""The Memcached backend: readscale speaks memcached's meta protocol itself.

No asyncio client offers the meta protocol with leases (meta-memcache speaks it, sync
only; pymemcache has no meta API and its ``raw_command`` drops the value line; aiomcache
has none), and leases need it: ``mg`` with
``N`` (vivify) hands one client the fill (``W``) and tells the others (``Z``), and a
CAS-guarded ``ms`` refuses a fill once the lease is gone. The protocol lives in
``readscale._core.memcached.requests`` (sans-IO) and the meaning of items and leases in
``readscale._core.memcached.items``; the drivers only move bytes. This module holds the
plain operations (get, set, delete, counters); the lease and tombstone protocol is in
``_memcached_leases`` and the exchange with each server in ``_memcached_servers``.

Multi-key calls are pipelined: one write and one read sequence per server, each request
quiet (``q``: no reply for a miss, a stored value or a deleted key) and tagged with its
position (``O``), closed by ``mn``. Servers of a batch are visited one after the other.

memcached has no notifications, so ``wait_for_fill`` polls the key with an exponential
backoff (1 ms doubling to 50 ms); where a Redis is at hand, readscale's invalidation bus
can wake waiters instead.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, assert_never

from readscale._async.backends._memcached_leases import (
    TOMB_GET,
    AsyncMemcachedLeases,
    floor_key_of,
    tomb_lsn,
)
from readscale._async.backends._memcached_servers import (
    GET_TAIL,
    NAME,
    NOOP,
    QUIET_GET,
    AsyncServers,
    unexpected_reply,
)
from readscale._core.cache.fill import PRIMARY_ONLY
from readscale._core.cache.lease import LeaseResult
from readscale._core.memcached.items import VALUE_FLAGS, Fence, Found, LeaseHeld, LeaseWon, Missing
from readscale._core.memcached.replies import Reply, StatReply, Status
from readscale._core.memcached.requests import (
    MetaArithmetic,
    MetaDelete,
    MetaGet,
    MetaSet,
    SetMode,
    Stats,
    encode_get,
    wire_ttl,
)
from readscale.errors import ConfigurationError

if TYPE_CHECKING:
    from readscale._async.backends.base import AsyncBackend

__all__ = ["AsyncMemcachedBackend"]


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
        self._servers = AsyncServers(
            names,
            connect_timeout_ms=connect_timeout_ms,
            read_timeout_ms=read_timeout_ms,
            pool_size=pool_size,
            pool_timeout_ms=pool_timeout_ms,
            item_size_max=item_size_max,
            max_value_size=max_value_size,
        )
        self._leases = AsyncMemcachedLeases(self._servers)

    @property
    def max_value_size(self) -> int:
        """The largest value every server takes under any key (see memcached_items)."""
        return self._servers.max_value_size

    @max_value_size.setter
    def max_value_size(self, cap: int | None) -> None:
        self._servers.max_value_size = cap

    # -- the backend protocol ------------------------------------------------------------

    async def get(self, key: str) -> bytes | None:
        servers = self._servers
        server = servers.for_key(key)
        reply = await server.get_value(encode_get(key, GET_TAIL))
        if isinstance(reply, bytes):  # a plain hit
            return reply
        match servers.state(reply):
            case Found(value=value):
                return value
            case Missing() | LeaseHeld() | Fence():
                return None
            case LeaseWon(cas=cas):
                await self._leases.give_back(server, [(key, cas)])
                return None
            case unreachable:
                assert_never(unreachable)

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        servers = self._servers
        results: list[bytes | None] = [None] * len(keys)
        payloads = {  # every key is checked before anything is sent
            server: QUIET_GET.encode_each(keys, positions) + NOOP for server, positions in servers.group(keys).items()
        }
        for server, payload in payloads.items():
            won: list[tuple[str, int]] = []
            for reply in await server.get_values(payload, results):  # plain hits are in results
                state = servers.state(reply)
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
                await self._leases.give_back(server, won)
        return results

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        self._servers.check_size(key, value)
        payload = MetaSet(key, value, ttl=wire_ttl(ttl, time.time()), client_flags=VALUE_FLAGS).encode()
        (reply,) = await self._servers.for_key(key).exchange(payload)
        if not (isinstance(reply, Reply) and reply.status is Status.HD):
            raise self._servers.failure(reply, "ms", key, len(value))

    async def set_many(self, items: Sequence[tuple[str, bytes, float]]) -> None:
        servers = self._servers
        for key, value, _ in items:
            servers.check_size(key, value)
        now = time.time()
        payloads = {  # every key and TTL is checked before anything is sent
            server: b"".join(
                MetaSet(key, value, ttl=wire_ttl(ttl, now), client_flags=VALUE_FLAGS, quiet=True, opaque=i).encode()
                for i in positions
                for key, value, ttl in (items[i],)
            )
            + NOOP
            for server, positions in servers.group([key for key, _, _ in items]).items()
        }
        for server, payload in payloads.items():
            for reply in await server.exchange(payload, Status.MN):  # quiet: only failures
                i = reply.flags.opaque if isinstance(reply, Reply) else None
                if i is not None and 0 <= i < len(items):
                    raise servers.failure(reply, "a pipelined ms", items[i][0], len(items[i][1]))
                raise servers.failure(reply, "a pipelined ms")

    async def delete(self, key: str) -> bool:
        (reply,) = await self._servers.for_key(key).exchange(MetaDelete(key).encode())
        if isinstance(reply, Reply) and reply.status in (Status.HD, Status.NF):
            return reply.status is Status.HD
        raise self._servers.failure(reply, "md")

    async def delete_many(self, keys: Sequence[str]) -> int:
        batches = [  # every key is checked before anything is sent
            (server, b"".join(MetaDelete(keys[i], quiet=True, opaque=i).encode() for i in positions) + NOOP, positions)
            for server, positions in self._servers.group(keys).items()
        ]
        existed = 0
        for server, payload, positions in batches:
            replies = await server.exchange(payload, Status.MN)
            for reply in replies:  # quiet md answers only the keys that were not there
                if not (isinstance(reply, Reply) and reply.status is Status.NF):
                    raise self._servers.failure(reply, "a pipelined md")
            existed += len(positions) - len(replies)
        return existed

    # -- single-key writes of a cache-contract face (Django's add, incr, touch, clear) -------

    async def add(self, key: str, value: bytes, ttl: float) -> bool:
        """Store ``value`` only if ``key`` holds no item (``ms`` mode add); whether it was stored."""
        self._servers.check_size(key, value)
        payload = MetaSet(
            key, value, ttl=wire_ttl(ttl, time.time()), client_flags=VALUE_FLAGS, mode=SetMode.ADD
        ).encode()
        (reply,) = await self._servers.for_key(key).exchange(payload)
        if isinstance(reply, Reply) and reply.status in (Status.HD, Status.NS):
            return reply.status is Status.HD
        raise self._servers.failure(reply, "ms (add)", key, len(value))

    async def swap(self, key: str, expected: bytes, value: bytes, ttl: float) -> bool:
        """Replace ``key``'s value with ``value`` only if it still is ``expected``: read it
        with its CAS, then ``ms ... C<cas>`` (a write in between fails it); whether it was."""
        self._servers.check_size(key, value)
        server = self._servers.for_key(key)
        (reply,) = await server.exchange(MetaGet(key, client_flags=True, cas=True).encode())
        match self._servers.state(reply):
            case Found(value=found) if found == expected and isinstance(reply, Reply) and reply.flags.cas:
                cas = reply.flags.cas
            case _:
                return False
        payload = MetaSet(
            key, value, ttl=wire_ttl(ttl, time.time()), client_flags=VALUE_FLAGS, compare_cas=cas
        ).encode()
        (reply,) = await server.exchange(payload)
        if isinstance(reply, Reply) and reply.status in (Status.HD, Status.EX, Status.NF):
            return reply.status is Status.HD
        raise self._servers.failure(reply, "ms (compare and set)", key, len(value))

    async def flush_all(self) -> None:
        """Drop every item of every server (``flush_all``): memcached cannot list keys, so
        this is how a cache of its own is cleared (what Django's memcached backends do)."""
        for server in self._servers:
            await server.exchange(b"flush_all noreply\r\n" + NOOP, Status.MN)

    # -- fill rights, tombstones and fences: the protocol is in _memcached_leases ------------

    async def lease(self, key: str, ttl: float) -> LeaseResult:
        """``mg <key> v f c t N<ttl>``: a hit, a won lease (the token is the placeholder's
        CAS), or a lease held elsewhere. On a fence (an invalidated key) the lease is taken
        by rewriting the fence with the lease's end, CAS-guarded: one client wins."""
        return await self._leases.lease(key, ttl)

    async def ticket(self, key: str, ttl: float) -> LeaseResult:
        """A fill right that excludes nobody: the CAS of whatever the key holds now (or
        "absent": the store then only adds), and the key's tombstone."""
        return await self._leases.ticket(key, ttl)

    async def ticket_many(self, keys: Sequence[str], ttl: float) -> list[LeaseResult]:
        return await self._leases.ticket_many(keys, ttl)

    async def fill_many(self, items: Sequence[tuple[str, bytes, float, str, int | None]]) -> list[bool]:
        return await self._leases.fill_many(items)

    async def refresh_lease(self, key: str, ttl: float) -> str | None:
        """``ms <key>:rl <id> ME``: one refresher per stale key; its store is guarded by
        the CAS the value had when the refresh began."""
        return await self._leases.refresh_lease(key, ttl)

    async def fill(self, key: str, value: bytes, ttl: float, token: str, lsn: int | None = None) -> bool:
        """``ms ... C<cas>`` (or add mode for a ticket on an absent key): refused (False)
        once the key's item changed since the right was taken (an invalidation, another
        fill), or when the source ``lsn`` is older than the tombstone the right came with
        (the lease is then given back). A value over ``max_value_size`` raises
        ValueTooLargeError and leaves the lease held: release it."""
        return await self._leases.fill(key, value, ttl, token, lsn)

    async def release(self, key: str, token: str) -> None:
        """Give a right back: a placeholder is deleted and a fence's lease cleared (both
        only if still ours); a ticket holds nothing."""
        await self._leases.release(key, token)

    async def invalidate(self, keys: Sequence[str], *, lsn: int | None = None, tombstone_ttl: float = 35.0) -> int:
        """For each key: raise its tombstone (``<key>:tomb``: the LSN and the expiry only
        grow), then replace whatever the key holds with a fence (a new CAS: every fill
        right taken before is void). How many values existed."""
        return await self._leases.invalidate(keys, lsn=lsn, tombstone_ttl=tombstone_ttl)

    async def invalidate_for_write(
        self, key: str, *, lsn: int | None, tombstone_ttl: float, ticket_ttl: float
    ) -> LeaseResult:
        """:meth:`invalidate`, then :meth:`ticket`: the fence's and the tombstone's CAS
        loops cannot share one round trip."""
        return await self._leases.invalidate_for_write(key, lsn=lsn, tombstone_ttl=tombstone_ttl, ticket_ttl=ticket_ttl)

    async def wait_for_fill(self, key: str, timeout: float) -> bool:
        """Poll until the fill lands (True), or False when ``timeout`` passes or the lease
        is gone with nothing stored (released, expired or invalidated: lease again)."""
        return await self._leases.wait_for_fill(key, timeout)

    # -- counters ------------------------------------------------------------------------

    async def get_counters(self, keys: Sequence[str]) -> list[int]:
        return [await self._arith(key, 0) for key in keys]

    async def incr_counters(self, keys: Sequence[str]) -> list[int]:
        return [await self._arith(key, 1) for key in keys]

    async def bump_counters(self, keys: Sequence[str], *, lsn: int | None, floor_ttl: float) -> list[int]:
        floor = PRIMARY_ONLY if lsn is None else lsn
        out = []
        for key in keys:
            await self._leases.raise_floor(floor_key_of(key), key, floor, floor_ttl)
            out.append(await self._arith(key, 1))
        return out

    async def counter_floors(self, keys: Sequence[str]) -> list[int | None]:
        out = []
        for key in keys:
            (reply,) = await self._servers.for_key(key).exchange(TOMB_GET._replace(key=floor_key_of(key)).encode())
            out.append(tomb_lsn(reply))
        return out

    async def _arith(self, key: str, delta: int) -> int:
        # A counter created by this call starts at ``delta`` (memcached returns the initial
        # value on a vivifying miss): a bump of a counter nobody read yet is still a bump.
        request = MetaArithmetic(key, delta=delta, vivify=0, initial=delta, value=True)
        (reply,) = await self._servers.for_key(key).exchange(request.encode())
        if isinstance(reply, Reply) and reply.status is Status.VA and reply.value is not None:
            return int(reply.value)
        raise self._servers.failure(reply, "ma", key)

    # -- the rest ------------------------------------------------------------------------

    async def register(self, key: str, value: bytes) -> bytes:
        server = self._servers.for_key(key)
        (reply,) = await server.exchange(MetaSet(key, value, mode=SetMode.ADD).encode())
        if not (isinstance(reply, Reply) and reply.status in (Status.HD, Status.NS)):
            raise self._servers.failure(reply, "ms (add)", key)
        (reply,) = await server.exchange(MetaGet(key).encode())
        if isinstance(reply, Reply) and reply.status is Status.VA and reply.value is not None:
            return reply.value
        return value

    async def eviction_risk(self) -> str | None:
        risky = []
        for server in self._servers:
            replies = await server.exchange(Stats("settings").encode(), Status.END)
            for reply in replies:
                if isinstance(reply, StatReply) and reply.name == "evictions" and reply.value != "off":
                    risky.append(server.endpoint.address)
        if not risky:
            return None
        return f"{', '.join(risky)} evicts items when full (evictions on)"

    async def ping(self) -> None:
        for server in self._servers:
            (reply,) = await server.exchange(NOOP)
            if not (isinstance(reply, Reply) and reply.status is Status.MN):
                raise unexpected_reply(reply, "mn")

    async def close(self) -> None:
        await self._servers.close()


if TYPE_CHECKING:

    def _conforms(backend: AsyncMemcachedBackend) -> AsyncBackend:
        return backend
