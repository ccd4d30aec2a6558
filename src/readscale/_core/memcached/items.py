"""What a memcached item means to readscale, and which server holds a key.

Leases follow the memcache lease design (Nishtala et al., "Scaling Memcache at
Facebook", NSDI 2013, section 3.2.1): on a miss one client wins the right to fill the key
and every other client waits for that fill instead of loading too. memcached 1.6 has it
built in through meta flags (protocol.txt, "Meta Get" N, W, Z, X):

- ``mg <key> v f c N<ttl>`` on a miss creates an empty placeholder item that lives
  ``ttl`` seconds and answers ``W`` (won) to this client, ``Z`` (already won) to later
  ones. The lease token is the placeholder's CAS; the fill is ``ms ... C<cas>``, which
  memcached refuses (EX or NF) once the placeholder was overwritten, deleted or expired,
  so a holder that lost its lease cannot store an old value.
- An item marked stale (``md <key> I``) answers ``X`` and gives ``W`` to the first reader
  of any kind, even a plain ``mg`` (verified on 1.6.18), then ``Z``. A stale item is a
  miss here: its winner refills. A reader that did not ask for a lease but won one
  anyway must give it back (CAS-guarded delete), or every lease taker would wait on a
  fill that never comes.

Invariants:

- readscale stores every value with client flags ``VALUE_FLAGS`` (non-zero). A
  placeholder has client flags 0, no value, and ``W`` or ``Z``; that is the only item
  read as "lease held". So a stored empty value (``b""``) is a hit, never a lease.
- An invalidated key holds a *fence* (client flags ``FENCE_FLAGS``) for the tombstone's
  life: an item with a new CAS, so every fill right taken before the invalidation (a
  placeholder's CAS, a value's CAS, or "the key is absent") fails its CAS-guarded store.
  A fence reads as a miss; its value is empty, or the Unix time in milliseconds until
  which one client holds the fill lease on it (taken by a CAS-guarded rewrite). The
  tombstone's LSN lives beside it, in ``<key>:tomb`` on the same server, so it outlasts
  the fence once a fill stores a value.
- The item overhead is ``63 + len(key)`` bytes with non-zero client flags (verified:
  ``item_size_max - 66`` is the largest value under a 3-byte key, ``item_size_max - 313``
  under a 250-byte key). ``max_value_size`` is the worst case, so every value at or under
  it fits under every valid key.
- Keys are placed on servers by a consistent-hash ring: adding or removing one of N
  servers moves about 1/N of the keys. A dead server is not skipped (its keys would come
  back to a different server holding older values); its calls fail and the cache façade
  fails open.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from readscale._core.memcached.replies import Reply, Status
from readscale._core.memcached.requests import MAX_KEY_BYTES
from readscale.errors import ConfigurationError

__all__ = [
    "DEFAULT_ITEM_SIZE_MAX",
    "DEFAULT_MAX_VALUE_SIZE",
    "FENCE_FLAGS",
    "ITEM_OVERHEAD",
    "LEASE_HELD",
    "MISSING",
    "POLL_FIRST_DELAY",
    "POLL_MAX_DELAY",
    "VALUE_FLAGS",
    "Fence",
    "Found",
    "ItemState",
    "LeaseHeld",
    "LeaseWon",
    "Missing",
    "ServerRing",
    "fence_value",
    "item_state",
    "max_value_size",
    "next_poll_delay",
    "parse_token",
]

VALUE_FLAGS = 1
FENCE_FLAGS = 2
ITEM_OVERHEAD = 63  # item header 48 + CAS 8 + key terminator 1 + value CRLF 2 + client flags 4
DEFAULT_ITEM_SIZE_MAX = 1 << 20  # memcached's default -I 1m
POLL_FIRST_DELAY = 0.001
POLL_MAX_DELAY = 0.05


def max_value_size(item_size_max: int) -> int:
    """The largest value that fits under any valid key on a server with this -I."""
    return item_size_max - ITEM_OVERHEAD - MAX_KEY_BYTES


DEFAULT_MAX_VALUE_SIZE = max_value_size(DEFAULT_ITEM_SIZE_MAX)  # 1,048,263 bytes


# -- item states -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Found:
    """A stored value (None when the request did not ask for the value)."""

    value: bytes | None


@dataclass(frozen=True, slots=True)
class Missing:
    """No item at all."""


@dataclass(frozen=True, slots=True)
class LeaseWon:
    """This client won the fill: ``ms ... C<cas>`` fills, ``md ... C<cas>`` gives it back."""

    cas: int
    stale: bool = False  # won on an invalidated item rather than on a placeholder

    @property
    def token(self) -> str:
        return str(self.cas)


@dataclass(frozen=True, slots=True)
class LeaseHeld:
    """Another client is filling (a placeholder, or a stale item being refilled)."""


@dataclass(frozen=True, slots=True)
class Fence:
    """An invalidated key (see the module docstring): ``cas`` to rewrite it, the lease's
    end (Unix ms; None: no lease) and the remaining TTL (seconds, if asked)."""

    cas: int
    lease_until_ms: int | None = None
    ttl: int | None = None

    def leased(self, now_ms: int) -> bool:
        return self.lease_until_ms is not None and self.lease_until_ms > now_ms


def fence_value(lease_until_ms: int | None) -> bytes:
    return b"" if lease_until_ms is None else b"%d" % lease_until_ms


ItemState = Found | Missing | LeaseWon | LeaseHeld | Fence
MISSING = Missing()
LEASE_HELD = LeaseHeld()


def item_state(reply: Reply) -> ItemState:
    """Read a reply to ``mg`` (asked with ``f`` and ``c``, and ``v`` or ``s``)."""
    if reply.status is Status.EN:
        return MISSING
    flags = reply.flags
    if flags.client_flags == FENCE_FLAGS and flags.cas is not None and not flags.stale:
        raw = reply.value or b""
        until = int(raw) if raw.isdigit() else None
        return Fence(flags.cas, until, flags.ttl)
    if flags.stale:
        return LeaseWon(flags.cas, stale=True) if flags.won and flags.cas is not None else LEASE_HELD
    size = len(reply.value) if reply.value is not None else flags.size
    if not flags.client_flags and not size and (flags.won or flags.token_sent):
        return LeaseWon(flags.cas) if flags.won and flags.cas is not None else LEASE_HELD
    return Found(reply.value)


def parse_token(token: str) -> int | None:
    """The CAS a lease token stands for, or None for a string no lease ever produced."""
    if not token.isascii() or not token.isdigit() or len(token) > 20:
        return None
    cas = int(token)
    return cas if cas < 2**64 else None


def next_poll_delay(delay: float) -> float:
    """memcached has no notifications, so a waiter polls: 1 ms, doubling, capped at 50 ms."""
    return min(delay * 2, POLL_MAX_DELAY)


# -- servers ---------------------------------------------------------------------------


def _point(data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


class ServerRing:
    """A consistent-hash ring over server names (``points`` virtual nodes each)."""

    __slots__ = ("_owners", "_points", "size")

    def __init__(self, names: Sequence[str], points: int = 160) -> None:
        if not names:
            raise ConfigurationError("memcached needs at least one server address")
        if len(set(names)) != len(names):
            raise ConfigurationError(f"memcached server addresses repeat: {list(names)}")
        ring = sorted(
            (_point(f"{name}#{i}".encode()), index) for index, name in enumerate(names) for i in range(points)
        )
        self._points = [point for point, _ in ring]
        self._owners = [owner for _, owner in ring]
        self.size = len(names)

    def index(self, key: bytes) -> int:
        """The position (in ``names``) of the server that holds ``key``."""
        if self.size == 1:
            return 0
        i = bisect.bisect(self._points, _point(key))
        return self._owners[i % len(self._owners)]
