"""The answer to a lease request, shared by every backend (async and generated sync)."""

from __future__ import annotations

from dataclasses import dataclass


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
