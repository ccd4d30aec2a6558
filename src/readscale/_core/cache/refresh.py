"""When a background refresh runs, and under which right: the refresh's rules, pure.

A stale (or early-refreshed) entry is served at once and loaded again in the background
(``readscale._async.cache.refresh`` drives this planner, as ``filler.py`` drives
``readscale._core.cache.fill.plan_fill``). The rules are few, and each keeps a refresh
from doing harm:

- **One refresh across processes.** Where the backend has refresh leases, a refresh takes
  one first; a lease held elsewhere means another process is refreshing: nothing to do.
  A backend without them gives a ticket (any number of refreshes may run; each store
  still checks the key's tombstone).
- **A refresh that cannot be stored is not run.** While the L2 is skipped or failing,
  the stale value is served meanwhile; loading it here would only add load on the
  database for a value nobody could keep (the next read past the entry's grace loads it
  in the foreground, fail open).
- **No L2, no right.** A key that lives in the L1 only is refreshed at once, stored
  under the invalidations this process heard.

The driver reports what it saw (:data:`RefreshSeen`), asks :func:`plan_refresh` for the
next step and acts; tests/_core/cache/test_refresh.py checks the table and its
invariants.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import assert_never


@dataclass(frozen=True, slots=True)
class RefreshRequest:
    """What a refresh of one key may do."""

    #: The key lives in an L2 (a backend, and the policy uses it).
    uses_l2: bool
    #: The backend has refresh leases (one refresh across processes); else a ticket.
    leases: bool
    #: ``policy.lease_ttl``: how long the lease or ticket lasts.
    lease_ttl: float


# What the driver saw last.


@dataclass(frozen=True, slots=True)
class RefreshBegin:
    """Nothing yet."""


@dataclass(frozen=True, slots=True)
class RefreshLeaseWon:
    """This process refreshes: the refresh lease's token (it carries no floor: the store
    still checks the tombstone, and the staleness bound covers older invalidations)."""

    token: str


@dataclass(frozen=True, slots=True)
class RefreshLeaseHeld:
    """Another process holds the refresh lease: it refreshes."""


@dataclass(frozen=True, slots=True)
class TicketTaken:
    """The key's ticket and its tombstone floor."""

    token: str
    floor_lsn: int | None


@dataclass(frozen=True, slots=True)
class L2Away:
    """The circuit breaker skipped the L2, or the call failed."""


RefreshSeen = RefreshBegin | RefreshLeaseWon | RefreshLeaseHeld | TicketTaken | L2Away

# What to do next.


@dataclass(frozen=True, slots=True)
class TakeRefreshLease:
    """Ask the L2 for the key's refresh lease (for ``ttl`` seconds); the breaker may skip it."""

    ttl: float


@dataclass(frozen=True, slots=True)
class TakeTicket:
    """Ask the L2 for a ticket on the key (for ``ttl`` seconds); the breaker may skip it."""

    ttl: float


class RefreshRight(Enum):
    """The right a refresh's store holds (what the driver passes to the load)."""

    #: No L2: store in the L1 only, under the invalidations this process heard.
    LOCAL = "local"
    #: The refresh lease this process won.
    REFRESH_LEASE = "refresh_lease"
    #: A ticket (a backend without refresh leases).
    TICKET = "ticket"


@dataclass(frozen=True, slots=True)
class Refresh:
    """Load and store the key under ``right``: ``token`` and ``floor_lsn`` are the right's
    (both None for ``LOCAL``)."""

    token: str | None
    floor_lsn: int | None
    right: RefreshRight


class SkipReason(Enum):
    """Why no refresh runs (the stale value is served meanwhile)."""

    #: Another process holds the refresh lease.
    HELD_ELSEWHERE = "held_elsewhere"
    #: The L2 is skipped or failed: a refresh could not be stored.
    L2_AWAY = "l2_away"


@dataclass(frozen=True, slots=True)
class Skip:
    """Do nothing."""

    reason: SkipReason


RefreshStep = TakeRefreshLease | TakeTicket | Refresh | Skip


def plan_refresh(request: RefreshRequest, seen: RefreshSeen) -> RefreshStep:
    """The next step of a background refresh after the driver saw ``seen``.

    Invariants (tests/_core/cache/test_refresh.py checks them over every run): a
    ``Refresh`` carries a token exactly when its right is a lease or a ticket, and the
    token it carries is the one just taken; a refresh without an L2 takes no right; a
    backend without refresh leases is never asked for one; a failing or skipped L2 never
    leads to a load; every run ends in ``Refresh`` or ``Skip`` after at most one right
    asked for.
    """
    match seen:
        case RefreshBegin():
            if not request.uses_l2:
                return Refresh(None, None, RefreshRight.LOCAL)
            if request.leases:
                return TakeRefreshLease(request.lease_ttl)
            return TakeTicket(request.lease_ttl)
        case RefreshLeaseWon(token=token):
            return Refresh(token, None, RefreshRight.REFRESH_LEASE)
        case RefreshLeaseHeld():
            return Skip(SkipReason.HELD_ELSEWHERE)
        case TicketTaken(token=token, floor_lsn=floor_lsn):
            return Refresh(token, floor_lsn, RefreshRight.TICKET)
        case L2Away():
            return Skip(SkipReason.L2_AWAY)
        case _:
            assert_never(seen)


__all__ = [
    "L2Away",
    "Refresh",
    "RefreshBegin",
    "RefreshLeaseHeld",
    "RefreshLeaseWon",
    "RefreshRequest",
    "RefreshRight",
    "RefreshSeen",
    "RefreshStep",
    "Skip",
    "SkipReason",
    "TakeRefreshLease",
    "TakeTicket",
    "TicketTaken",
    "plan_refresh",
]
