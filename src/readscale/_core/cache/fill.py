"""When a loaded value may be stored: the rules of a cache fill, pure.

A fill (the cache loading a missing or stale value and storing it) must never put back
data an invalidation removed. Three facts make that hold, whatever the lag, the event
order or the defaults:

1. **A fill right taken before the read.** Every fill holds a lease (one loader across
   processes) or a ticket (any number of loaders) taken *before* its loader runs, and
   every invalidation deletes both. An invalidation that lands after the fill started
   makes the fill's store fail: whatever the loader read, even on the primary, may
   predate that change.
2. **A floor for invalidations that came before.** An invalidation leaves a tombstone
   holding the change's WAL position (LSN); tags and versioned namespaces keep the same
   floor beside their counters. The fill learns the floor with its right and every read
   of the fill must be at or past it. An invalidation whose LSN is unknown leaves the
   highest position (:data:`PRIMARY_ONLY`): only a read on the primary passes it.
3. **A staleness bound for invalidations older than any tombstone.** A tombstone lives
   ``tombstone_ttl`` seconds, and its expiry only ever grows. A fill that finds none may
   still race a change older than that, on a replica lagging even further behind; so
   every read of a fill must be at most :func:`max_fill_staleness` seconds stale, a
   bound below the tombstone's life (the replica router enforces it, measuring
   staleness conservatively from the primary's position history, and falls back to a
   fresher replica or the primary). A change visible before the tombstone appeared
   is then visible to the read.

The lease -> wait -> load loop that gets a missing value loaded once across processes
is decided here too (:func:`plan_fill`): the driver takes a lease, waits for another
process's fill or reads it back, reports what it saw, and asks for the next step.

A read is declared by the replica router (its replay position and staleness, or "the
primary"), by an integration, or by the loader itself through ``readscale.cache``. A
loader whose reads nobody declared is trusted only while no tombstone or tag floor
stands (it may be reading the primary, or a lagging replica readscale cannot see), and
refused otherwise: :class:`Refusal` says why, for a metric and a log line.

No I/O, no clock: every time is an argument.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import assert_never

__all__ = [
    "FAIL_OPEN_STALENESS",
    "FILL_MARGIN",
    "MAX_LEASE_ATTEMPTS",
    "MIN_TOMBSTONE_TTL",
    "PRIMARY_ONLY",
    "PRIMARY_READ_LSN",
    "Begin",
    "FillRequest",
    "LeaseFailed",
    "LeaseFound",
    "LeaseHeld",
    "LeaseWon",
    "Load",
    "LoadReason",
    "ReadBack",
    "ReadFilled",
    "ReadReport",
    "Refusal",
    "Seen",
    "Serve",
    "Step",
    "TakeLease",
    "WaitFailed",
    "WaitForFill",
    "Woken",
    "entry_position",
    "fill_refusal",
    "max_fill_staleness",
    "merge_floor",
    "plan_fill",
]

#: What a read on the primary reports: it sees every committed change. A fill holding a
#: right taken before its read is then as fresh as the database at that moment.
PRIMARY_READ_LSN = 2**64 - 1
#: The floor an invalidation with an unknown LSN leaves: no replica position reaches it,
#: so fills read the primary while it stands.
PRIMARY_ONLY = PRIMARY_READ_LSN
#: How much shorter than the tombstone's life a fill's staleness bound is: clocks of the
#: cache server and the application run at slightly different rates, the primary's
#: position is sampled (not continuous), and with ``synchronous_commit = off`` a commit
#: is visible up to three WAL-writer delays (0.6 s by default) before its WAL is written.
FILL_MARGIN = 1.0
#: The shortest tombstone life that leaves a positive staleness bound.
MIN_TOMBSTONE_TTL = 2 * FILL_MARGIN
#: The staleness bound (seconds) of the reads of a load the cache serves without storing
#: because its server cannot be reached (fail open). No tombstone or floor can be read
#: then: an invalidation made before the outage is known only as a change older than
#: this, which a read at most this stale sees (the replica router enforces it, else the
#: primary). A replica lagging 25 s stays out of such reads, as a fill's floor keeps it out.
FAIL_OPEN_STALENESS = 1.0


def max_fill_staleness(tombstone_ttl: float) -> float:
    """The staleness bound (seconds) of a fill's reads when tombstones live
    ``tombstone_ttl`` seconds: the life less a margin (and a tenth of it, for long lives)."""
    return max(0.0, tombstone_ttl - FILL_MARGIN - 0.05 * tombstone_ttl)


def merge_floor(a: int | None, b: int | None) -> int | None:
    """The stricter of two floors (None: no floor)."""
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)


@dataclass(frozen=True, slots=True)
class ReadReport:
    """One read of a fill: the position it read at (``PRIMARY_READ_LSN`` for the
    primary) and an upper bound on its staleness in seconds (None: unknown). A read on
    the primary may carry ``position``: the primary's WAL position read before the query
    (the causal tokens' pointer), what the entry records (:func:`entry_position`)."""

    lsn: int
    staleness: float | None
    position: int | None = None

    @property
    def primary(self) -> bool:
        return self.lsn == PRIMARY_READ_LSN


class Refusal(Enum):
    """Why a fill was not stored (the label of its metric and log line)."""

    #: An invalidation (or the lease's expiry) took the fill's lease or ticket while it
    #: loaded: what it read may predate that change.
    LEASE_LOST = "lease_lost"
    #: A read was older than the last invalidation's LSN (a lagging replica).
    OLDER_THAN_INVALIDATION = "older_than_invalidation"
    #: A read was staler than the fill's bound, or its staleness is unknown.
    TOO_STALE = "too_stale"
    #: The loader's reads were not declared and a tombstone or tag floor stands.
    UNDECLARED_SOURCE = "undeclared_source"
    #: The fill could not learn its floor (the cache server failed before the load).
    NO_FLOOR = "no_floor"


def entry_position(reads: tuple[ReadReport, ...] | list[ReadReport]) -> int | None:
    """The read position a filled entry records, which read-your-writes judges against a
    session's own last write (``_core.replicas.causal.read_before_own_write``): a position
    such that the value saw every write whose token is at or below it. None when some
    read's position is unknown (undeclared, or on the primary without one).

    A replica read: its replay position (a commit is visible once replayed). A primary
    read: the position read before its query, **less one**. The primary writes a commit
    record before it makes the transaction visible, so a read may start while a commit
    whose record ends exactly at its position is still invisible; a session's token is
    read after its commit returned, at that position or past it. Less one, the entry is
    below such a token and is not served to its author; an entry at or past a token was
    read after the pointer moved beyond it, so after that write was visible.
    """
    if not reads:
        return None
    positions = []
    for read in reads:
        if read.primary:
            if read.position is None:
                return None
            positions.append(max(0, read.position - 1))
        else:
            positions.append(read.lsn)
    return min(positions)


def fill_refusal(
    reads: tuple[ReadReport, ...] | list[ReadReport], floor_lsn: int | None, max_staleness: float | None
) -> Refusal | None:
    """Whether a fill whose loader made ``reads`` may be stored (None) or why not.

    ``floor_lsn``: the highest floor the fill learned (the key's tombstone, its tags'
    and namespace's floors); ``max_staleness``: the fill's staleness bound (None: none).
    """
    if not reads:
        return Refusal.UNDECLARED_SOURCE if floor_lsn is not None else None
    for read in reads:
        if read.primary:
            continue
        if floor_lsn is not None and read.lsn < floor_lsn:
            return Refusal.OLDER_THAN_INVALIDATION
        if max_staleness is not None and (read.staleness is None or read.staleness > max_staleness):
            return Refusal.TOO_STALE
    return None


# -- the lease -> wait -> load loop ----------------------------------------------------------

#: How many leases one fill asks for before it loads without waiting any longer. A lease
#: held elsewhere is normally filled within one wait; more attempts mean the holders keep
#: failing or the wait itself fails at once (then each lease call would reset the circuit
#: breaker, and the loop would spin on lease calls until the wait budget is spent).
MAX_LEASE_ATTEMPTS = 8


@dataclass(frozen=True, slots=True)
class FillRequest:
    """What a fill of one key may do: the same for every step of its loop."""

    #: The key lives in an L2 (a backend, and the policy uses it).
    uses_l2: bool
    #: One loader across processes: ``policy.on_miss`` is WAIT and the backend has leases.
    coordinated: bool
    #: ``policy.lease_ttl``: a lease held elsewhere is filled or gone within it.
    lease_ttl: float
    #: Monotonic time when waiting for another's fill ends (start + ``policy.wait_budget``).
    deadline: float


# What the driver saw last.


@dataclass(frozen=True, slots=True)
class Begin:
    """Nothing yet."""


@dataclass(frozen=True, slots=True)
class LeaseWon:
    """This process fills: the lease's token, and the key's tombstone floor."""

    token: str
    floor_lsn: int | None


@dataclass(frozen=True, slots=True)
class LeaseHeld:
    """Another process holds the lease: it fills."""


@dataclass(frozen=True, slots=True)
class LeaseFound:
    """The lease call returned an entry; ``servable``: readable, fresh enough, tags current."""

    servable: bool


@dataclass(frozen=True, slots=True)
class LeaseFailed:
    """The L2 failed on the lease call, or the circuit breaker skipped it."""


@dataclass(frozen=True, slots=True)
class Woken:
    """The wait for another's fill returned (filled, released or timed out)."""


@dataclass(frozen=True, slots=True)
class WaitFailed:
    """The wait for another's fill failed (the L2 did not answer)."""


@dataclass(frozen=True, slots=True)
class ReadBack:
    """The read after a wait; ``servable`` as for :class:`LeaseFound`."""

    servable: bool


Seen = Begin | LeaseWon | LeaseHeld | LeaseFound | LeaseFailed | Woken | WaitFailed | ReadBack

# What to do next.


@dataclass(frozen=True, slots=True)
class TakeLease:
    """Ask the L2 for the key's lease (for ``ttl`` seconds); the breaker may skip it."""

    ttl: float


@dataclass(frozen=True, slots=True)
class WaitForFill:
    """Wait up to ``timeout`` seconds for the lease holder's fill."""

    timeout: float


@dataclass(frozen=True, slots=True)
class ReadFilled:
    """Read the key again: the holder may have filled it."""


@dataclass(frozen=True, slots=True)
class Serve:
    """Serve the entry just found (and put an L1 copy of it)."""


class LoadReason(Enum):
    """Why a fill loads here, and so which right its store holds (the label the driver
    counts and logs)."""

    #: No L2: store in the L1 only, under the invalidations this process heard.
    LOCAL = "local"
    #: Nobody waits for this fill (``OnMiss.LOAD``, or a backend without leases): a ticket.
    UNCOORDINATED = "uncoordinated"
    #: This process won the lease: store under it.
    LEASE_WON = "lease_won"
    #: The entry the lease call found is unreadable, expired or tagged stale: a ticket.
    REPLACE_UNSERVABLE = "replace_unservable"
    #: The L2 failed or is skipped: load, serve, store nothing (the floors are unknown).
    FAIL_OPEN = "fail_open"
    #: The lease is still held elsewhere past the wait budget: a ticket.
    WAITED_OUT = "waited_out"
    #: :data:`MAX_LEASE_ATTEMPTS` leases taken without a fill to serve: a ticket.
    TOO_MANY_ATTEMPTS = "too_many_attempts"

    @property
    def with_ticket(self) -> bool:
        """The store holds a ticket taken before the load (voided by any invalidation)."""
        return self in _TICKETED


_TICKETED = frozenset(
    {LoadReason.UNCOORDINATED, LoadReason.REPLACE_UNSERVABLE, LoadReason.WAITED_OUT, LoadReason.TOO_MANY_ATTEMPTS}
)


@dataclass(frozen=True, slots=True)
class Load:
    """Run the loader here. ``token``/``floor_lsn``: the won lease (None otherwise)."""

    token: str | None
    floor_lsn: int | None
    reason: LoadReason


Step = TakeLease | WaitForFill | ReadFilled | Serve | Load


def _load(reason: LoadReason) -> Load:
    return Load(None, None, reason)


def plan_fill(request: FillRequest, seen: Seen, *, now: float, attempt: int) -> Step:
    """The next step of a fill, after the driver saw ``seen`` at monotonic time ``now``
    having taken ``attempt`` leases so far.

    Invariants (tests/_core/cache/test_fill_plan.py checks them over every sequence): a
    ``Load`` carries a token exactly when this process won the lease; a wait is positive
    and never outlasts the lease or the deadline; a failing L2 never makes the loop wait;
    an uncoordinated fill never takes a lease; every run ends in ``Serve`` or ``Load``
    within :data:`MAX_LEASE_ATTEMPTS` leases.
    """
    match seen:
        case Begin():
            if not request.uses_l2:
                return _load(LoadReason.LOCAL)
            if not request.coordinated:
                return _load(LoadReason.UNCOORDINATED)
            return TakeLease(request.lease_ttl)
        case LeaseFailed():
            return _load(LoadReason.FAIL_OPEN)
        case LeaseFound(servable=servable) | ReadBack(servable=servable) if servable:
            return Serve()
        case LeaseFound():
            return _load(LoadReason.REPLACE_UNSERVABLE)
        case LeaseWon(token=token, floor_lsn=floor_lsn):
            return Load(token, floor_lsn, LoadReason.LEASE_WON)
        case LeaseHeld():
            remaining = request.deadline - now
            if remaining <= 0:
                return _load(LoadReason.WAITED_OUT)
            return WaitForFill(min(remaining, request.lease_ttl))
        case Woken():
            return ReadFilled()
        case ReadBack() | WaitFailed():
            if attempt >= MAX_LEASE_ATTEMPTS:
                return _load(LoadReason.TOO_MANY_ATTEMPTS)
            return TakeLease(request.lease_ttl)
        case _:
            assert_never(seen)
