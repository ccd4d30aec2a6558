"""The lease and tombstone protocol of the Memcached backend, on meta commands: leases
(``mg`` with ``N`` on a miss, a CAS-guarded rewrite on a fence), tickets, fills guarded by
the CAS of their right, releases, refresh leases, fences and floors (tombstones and the
floors of counters, raised by CAS loops), and the wait for a fill.

The keys beside an entry (tombstone, floor, refresh lock), LSNs as fixed-width hex and
the tokens the backend issues for a lease, a ticket or a refresh lease
(:func:`parse_right` refuses any other) are here too. Every right lives in its token and
on the servers: :class:`AsyncMemcachedLeases` holds nothing but the servers it talks to.

Tokens: a lease on a placeholder or a fence is "<cas>.<floor>", a ticket is
"t~<cas or add>.<floor>.<deadline>", a refresh lease "r:<id>.<cas>.<floor>"; <floor> is
the tombstone's LSN in hex ("-": none) when the right was taken, <deadline> the ticket's
end on this process's monotonic clock, in ms. The CAS makes the store atomic against any
invalidation since (it rewrites the key's item), so the floor read with the right is the
floor at the store.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Sequence
from typing import NamedTuple, assert_never

from readscale._async.backends._memcached_servers import NAME, NOOP, AsyncServer, AsyncServers, unexpected_reply
from readscale._core.cache.fill import PRIMARY_ONLY
from readscale._core.cache.lease import LEASE_HELD_ELSEWHERE, TICKET_PREFIX, LeaseResult
from readscale._core.memcached.items import (
    FENCE_FLAGS,
    POLL_FIRST_DELAY,
    VALUE_FLAGS,
    Fence,
    Found,
    ItemState,
    LeaseHeld,
    LeaseWon,
    Missing,
    fence_value,
    next_poll_delay,
    parse_token,
)
from readscale._core.memcached.replies import AnyReply, Reply, Status
from readscale._core.memcached.requests import MetaDelete, MetaGet, MetaSet, SetMode, wire_ttl
from readscale._shared.primitives.locks import async_sleep
from readscale.errors import CacheUnavailableError

_CAS_ATTEMPTS = 32

REFRESH_PREFIX = "r:"
TOMB_GET = MetaGet("", ttl=False)


def refresh_key_of(key: str) -> str:
    return f"{key}:rl"


def tomb_key_of(key: str) -> str:
    """A key's tombstone (its LSN), kept on the key's server."""
    return f"{key}:tomb"


def floor_key_of(counter: str) -> str:
    return f"{counter}:floor"


def clock_ms() -> int:
    return int(time.time() * 1000)


def lsn_hex(lsn: int | None) -> str:
    return "-" if lsn is None else f"{lsn:016x}"


def parse_lsn_hex(raw: bytes | str | None) -> int | None:
    if not raw or raw in ("-", b"-"):
        return None
    try:
        return int(raw, 16)
    except ValueError:
        return None


def tomb_lsn(reply: AnyReply) -> int | None:
    if isinstance(reply, Reply) and reply.status is Status.VA:
        return parse_lsn_hex(reply.value)
    if isinstance(reply, Reply) and reply.status is Status.EN:
        return None
    raise unexpected_reply(reply, "mg (tombstone)")


def lease_token(cas: int, floor: int | None) -> str:
    return f"{cas}.{lsn_hex(floor)}"


class Right(NamedTuple):
    cas: int | None  # None: the key was absent (a ticket's store only adds)
    floor: int | None
    deadline_ms: int | None = None  # tickets only
    refresh: str | None = None  # refresh leases only


def parse_right(token: str) -> Right | None:
    """A token this backend issued, or None for anything else (a forged or foreign one)."""
    try:
        if token.startswith(TICKET_PREFIX):
            cas_text, floor, deadline = token[len(TICKET_PREFIX) :].split(".")
            cas = None if cas_text == "add" else parse_token(cas_text)
            if cas is None and cas_text != "add":
                return None
            return Right(cas, parse_lsn_hex(floor), int(deadline))
        if token.startswith(REFRESH_PREFIX):
            ident, cas_text, floor = token[len(REFRESH_PREFIX) :].split(".")
            cas = parse_token(cas_text)
            return None if cas is None else Right(cas, parse_lsn_hex(floor), refresh=ident)
        cas_text, floor = token.split(".")
        cas = parse_token(cas_text)
        return None if cas is None else Right(cas, parse_lsn_hex(floor))
    except ValueError:
        return None


class AsyncMemcachedLeases:
    """The lease and tombstone protocol on the backend's servers. The backend's methods of
    the same names say what each call promises; these say how."""

    def __init__(self, servers: AsyncServers) -> None:
        self._servers = servers

    async def give_back(self, server: AsyncServer, leases: Sequence[tuple[str, int]]) -> None:
        """Delete items whose lease a plain read won by accident (stale items answer W to
        any mg): no one would fill them and every lease taker would wait."""
        payload = b"".join(
            MetaDelete(key, compare_cas=cas, quiet=True, opaque=i).encode() for i, (key, cas) in enumerate(leases)
        )
        await server.exchange(payload + NOOP, Status.MN)

    async def _item_and_floor(self, key: str, request: MetaGet) -> tuple[ItemState, int | None]:
        """``request`` for ``key`` and its tombstone, pipelined in that order on the key's
        server: an invalidation writes the tombstone before the fence, so a fence seen
        here comes with its tombstone."""
        payload = (
            request._replace(opaque=0, quiet=False).encode()
            + TOMB_GET._replace(key=tomb_key_of(key), opaque=1).encode()
        )
        replies = await self._servers.for_key(key).exchange_n(payload, 2)
        return self._servers.state(replies[0]), tomb_lsn(replies[1])

    async def lease(self, key: str, ttl: float) -> LeaseResult:
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
        (reply,) = await self._servers.for_key(key).exchange(request.encode())
        if isinstance(reply, Reply) and reply.status is Status.HD:
            return reply.flags.cas
        if isinstance(reply, Reply) and reply.status in (Status.EX, Status.NF, Status.NS):
            return None
        raise self._servers.failure(reply, "ms (fence)", key)

    async def ticket(self, key: str, ttl: float) -> LeaseResult:
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
        (reply,) = await self._servers.for_key(key).exchange(MetaGet(key, value=False, cas=True).encode())
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
        ident = secrets.token_hex(8)
        lease_key = refresh_key_of(key)
        server = self._servers.for_key(key)
        request = MetaSet(lease_key, ident.encode(), ttl=wire_ttl(ttl, time.time()), mode=SetMode.ADD)
        (reply,) = await server.exchange(request.encode())
        if not (isinstance(reply, Reply) and reply.status in (Status.HD, Status.NS)):
            raise self._servers.failure(reply, "ms (add)", lease_key)
        if reply.status is Status.NS:
            return None
        state, floor = await self._item_and_floor(key, MetaGet(key, value=False, client_flags=True, cas=True))
        cas = await self._cas_of(key) if isinstance(state, Found) else None
        if cas is None:  # no value to refresh any more (invalidated, expired): a miss fills it
            await server.exchange(MetaDelete(lease_key).encode())
            return None
        return f"{REFRESH_PREFIX}{ident}.{cas}.{lsn_hex(floor)}"

    async def fill(self, key: str, value: bytes, ttl: float, token: str, lsn: int | None = None) -> bool:
        self._servers.check_size(key, value)
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
        server = self._servers.for_key(key)
        (reply,) = await server.exchange(request.encode())
        if not (isinstance(reply, Reply) and reply.status in (Status.HD, Status.EX, Status.NF, Status.NS)):
            raise self._servers.failure(reply, "ms", key, len(value))
        if right.refresh is not None:
            await server.exchange(MetaDelete(refresh_key_of(key)).encode())
        return reply.status is Status.HD

    async def release(self, key: str, token: str) -> None:
        right = parse_right(token)
        if right is None or right.deadline_ms is not None:
            return
        server = self._servers.for_key(key)
        if right.refresh is not None:
            await server.exchange(MetaDelete(refresh_key_of(key)).encode())
            return
        (reply,) = await server.exchange(MetaGet(key, client_flags=True, cas=True, ttl=True).encode())
        state = self._servers.state(reply)
        if isinstance(state, Fence):
            if state.cas == right.cas:
                await self._rewrite_fence(key, state, None, 1.0)
            return
        if isinstance(state, LeaseWon | LeaseHeld) and right.cas is not None:
            (reply,) = await server.exchange(MetaDelete(key, compare_cas=right.cas).encode())
            if not (isinstance(reply, Reply) and reply.status in (Status.HD, Status.EX, Status.NF)):
                raise self._servers.failure(reply, "md")

    async def invalidate(self, keys: Sequence[str], *, lsn: int | None, tombstone_ttl: float) -> int:
        floor = PRIMARY_ONLY if lsn is None else lsn
        existed = 0
        for key in keys:
            await self.raise_floor(tomb_key_of(key), key, floor, tombstone_ttl)
            existed += await self._fence(key, tombstone_ttl)
        return existed

    async def invalidate_for_write(
        self, key: str, *, lsn: int | None, tombstone_ttl: float, ticket_ttl: float
    ) -> LeaseResult:
        await self.invalidate([key], lsn=lsn, tombstone_ttl=tombstone_ttl)
        return await self.ticket(key, ticket_ttl)

    async def raise_floor(self, floor_key: str, owner: str, lsn: int, life: float) -> None:
        """Raise a floor item (a tombstone, a counter's floor) by CAS: LSN and expiry only grow."""
        server = self._servers.for_key(owner)
        for _ in range(_CAS_ATTEMPTS):
            (reply,) = await server.exchange(MetaGet(floor_key, cas=True, ttl=True).encode())
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
            (stored,) = await server.exchange(request.encode())
            if isinstance(stored, Reply) and stored.status is Status.HD:
                return
            if not (isinstance(stored, Reply) and stored.status in (Status.NS, Status.EX, Status.NF)):
                raise self._servers.failure(stored, "ms (floor)", floor_key)
        raise CacheUnavailableError(f"{NAME}: {floor_key} kept changing; its floor was not raised", backend=NAME)

    async def _fence(self, key: str, life: float) -> int:
        """Replace the key's item with a fence for ``life`` seconds; 1 if it held a value."""
        server = self._servers.for_key(key)
        for _ in range(_CAS_ATTEMPTS):
            (reply,) = await server.exchange(MetaGet(key, client_flags=True, cas=True, ttl=True).encode())
            state = self._servers.state(reply)
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
            (stored,) = await server.exchange(request.encode())
            if isinstance(stored, Reply) and stored.status is Status.HD:
                return 1 if isinstance(state, Found) else 0
            if not (isinstance(stored, Reply) and stored.status in (Status.NS, Status.EX, Status.NF)):
                raise self._servers.failure(stored, "ms (fence)", key)
        raise CacheUnavailableError(f"{NAME}: {key} kept changing; it was not invalidated", backend=NAME)

    async def wait_for_fill(self, key: str, timeout: float) -> bool:
        server = self._servers.for_key(key)
        payload = MetaGet(key, client_flags=True, cas=True).encode()
        deadline = time.monotonic() + timeout
        delay = POLL_FIRST_DELAY
        while True:
            (reply,) = await server.exchange(payload)
            match self._servers.state(reply):
                case Found():
                    return True
                case Missing():
                    return False
                case LeaseWon(cas=cas):
                    await self.give_back(server, [(key, cas)])
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
