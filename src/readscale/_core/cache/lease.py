"""Values shared by the async and the (generated) sync backends."""

from __future__ import annotations

import os
from dataclasses import dataclass

from readscale._core.cache.fill import MIN_TOMBSTONE_TTL
from readscale.errors import ConfigurationError

#: The tombstone life when nothing says otherwise: longer than the replica router's
#: default ``max_lag`` (30 s), so replicas in rotation can serve fills.
DEFAULT_TOMBSTONE_TTL = 35.0
#: The one setting the application's caches and the CDC worker share.
TOMBSTONE_TTL_ENV = "READSCALE_TOMBSTONE_TTL"


def check_tombstone_ttl(seconds: float, name: str) -> float:
    if not seconds >= MIN_TOMBSTONE_TTL:
        raise ConfigurationError(
            f"{name} must be at least {MIN_TOMBSTONE_TTL:g} seconds, got {seconds}: fills read no staler "
            "than a bound just below the tombstone's life (docs/consistency.md)"
        )
    return seconds


def default_tombstone_ttl() -> float:
    """``READSCALE_TOMBSTONE_TTL`` (seconds) if set, else :data:`DEFAULT_TOMBSTONE_TTL`."""
    raw = os.environ.get(TOMBSTONE_TTL_ENV, "").strip()
    if not raw:
        return DEFAULT_TOMBSTONE_TTL
    try:
        value = float(raw)
    except ValueError:
        raise ConfigurationError(f"{TOMBSTONE_TTL_ENV} must be a number of seconds, got {raw!r}") from None
    return check_tombstone_ttl(value, TOMBSTONE_TTL_ENV)


#: Where redis-py (and asyncio under it) write to a connection's transport.
_TRANSPORT_FILES = ("/redis/asyncio/connection.py", "/redis/connection.py", "/asyncio/streams.py",
                    "/asyncio/selector_events.py")  # fmt: skip


def closed_transport_race(exc: BaseException) -> bool:
    """True for the AttributeError/TypeError redis-py's asyncio client raises when a
    connection is closed while a command writes to it (the writer is None, or the
    transport's callbacks are gone): redis/redis-py#3546 and #4287, seen here when a
    Redis Cluster primary dies. It is a lost connection, not a bug in the caller; any
    other AttributeError or TypeError is a bug and must not pass for an outage.
    """
    if not isinstance(exc, AttributeError | TypeError) or "NoneType" not in str(exc):
        return False
    tb = exc.__traceback__
    last = None
    while tb is not None:
        last = tb.tb_frame.f_code.co_filename
        tb = tb.tb_next
    return last is not None and last.replace("\\", "/").endswith(_TRANSPORT_FILES)


@dataclass(frozen=True, slots=True)
class LeaseResult:
    """The answer to a lease request (see ``AsyncBackend.lease``).

    Exactly one of three cases: a hit (``value`` set), a won lease (``token`` set: fill
    or release it), or a lease held by someone else (both None: wait for the fill).
    """

    value: bytes | None = None
    token: str | None = None
    #: With a won lease: the WAL position of the last invalidation of this key (its
    #: tombstone), if one is still recorded. A fill must read at or past it.
    floor_lsn: int | None = None

    @property
    def hit(self) -> bool:
        return self.value is not None

    @property
    def won(self) -> bool:
        return self.token is not None


LEASE_HELD_ELSEWHERE = LeaseResult()
#: Tickets (non-exclusive fill rights, ``AsyncBackend.ticket``) start with this, leases never.
TICKET_PREFIX = "t~"


def lsn_text(lsn: int) -> str:
    """An LSN as 16 hex digits: compares as text exactly as the numbers compare, which
    Lua (doubles) and Redis strings cannot do for 64-bit integers."""
    if not 0 <= lsn < 2**64:
        raise ValueError(f"an LSN is a 64-bit unsigned integer, got {lsn}")
    return f"{lsn:016x}"


def parse_lsn_text(text: bytes | str | None) -> int | None:
    if not text:
        return None
    return int(text, 16)
