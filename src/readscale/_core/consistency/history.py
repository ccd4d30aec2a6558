"""Checking a recorded history of reads and writes against readscale's guarantees.

A history is what a test saw from the outside: every write with the time it was invoked,
the time it was acknowledged and the version it wrote, and every read with its times and
the version it returned. Versions are per key and come from the primary (a version column
that each write increments in its own transaction), so for one key they are totally
ordered, and the version a read returned says exactly which writes it reflects. Times
come from one monotonic clock (CLOCK_MONOTONIC is system-wide, so several processes on one
machine can share it).

Each read states the guarantees the API it went through promises (:class:`Claims`); the
checker verifies each claimed guarantee and nothing else. Every guarantee has the same
shape: a *floor*, the lowest version the read may return, derived from facts the history
proves; a read below its floor is a violation. Floors use only real-time facts, never
guesses, so a violation is a proof:

- a write acknowledged before another write was invoked committed before it (its commit
  is inside its own interval), so its version is visible wherever the later one is;
- a write acknowledged at time t had committed by t.

The guarantees (named as in the README):

``read_your_writes``
    A session's read sees every write the session made that was acknowledged before the
    read began, and (through the causal token, which covers the primary's whole position
    after each commit) every write of any session acknowledged before one of those own
    writes began.
``monotonic_reads``
    A session's read sees at least what its earlier reads that moved the session's causal
    position (``ReadOp.observes``) showed: the same key at least at the version read, and
    every write acknowledged before the write of that version began.
``bounded_staleness``
    A read with ``max_staleness = s`` sees every write acknowledged more than ``s``
    seconds before it began (``LATEST`` is ``s = 0``).
``invalidation_bound``
    No stale value survives past its bound: once a write's invalidation has completed
    (the application's ``invalidate`` returned, or the CDC worker applied it), a read that
    begins more than ``B`` seconds later returns that write's version or a newer one.
``valid``
    Sanity of the history itself: no read returns a version no write produced, and
    acknowledged writes of one key have distinct versions in real-time order. A violation
    here means the harness or the database is broken, not the cache.

The checker is pure and exact: O((reads + writes) log n). Hand-made histories in
``tests/_core/consistency/test_history.py`` violate each property; a brute-force reference
written from these definitions agrees with it on random histories.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

__all__ = [
    "BOUNDED_STALENESS",
    "INVALIDATION_BOUND",
    "MONOTONIC_READS",
    "PROPERTIES",
    "READ_YOUR_WRITES",
    "VALID",
    "Claims",
    "PropertyCount",
    "ReadOp",
    "Verdict",
    "Violation",
    "WriteOp",
    "check_history",
]

READ_YOUR_WRITES = "read_your_writes"
MONOTONIC_READS = "monotonic_reads"
BOUNDED_STALENESS = "bounded_staleness"
INVALIDATION_BOUND = "invalidation_bound"
VALID = "valid"
PROPERTIES = (READ_YOUR_WRITES, MONOTONIC_READS, BOUNDED_STALENESS, INVALIDATION_BOUND, VALID)


@dataclass(frozen=True, slots=True)
class Claims:
    """What the API a read went through promises for it."""

    read_your_writes: bool = False
    monotonic_reads: bool = False
    #: Bounded staleness: every write acknowledged this many seconds before the read began is seen.
    max_staleness: float | None = None
    #: No value older than a write whose invalidation completed this many seconds before the read began.
    invalidation_bound: float | None = None


@dataclass(frozen=True, slots=True)
class WriteOp:
    """One write of ``key``. ``completed`` is None when its outcome is unknown (no
    acknowledgement: it may or may not have committed); ``version`` is None when unknown."""

    id: int
    session: str
    key: str
    invoked: float
    completed: float | None
    version: int | None
    #: When its invalidation had completed (None: never, or not known to have).
    invalidated: float | None = None
    #: The write committed on the primary within the session, whose causal token (the
    #: primary's position read after the commit) then covers every write acknowledged
    #: before it began. False for a write-behind write: it only enqueues (the flusher
    #: commits it later, outside the session), so it raises the floor of its own key only.
    moves_position: bool = True


@dataclass(frozen=True, slots=True)
class ReadOp:
    """One completed read of ``key`` that returned ``version``."""

    id: int
    session: str
    key: str
    invoked: float
    completed: float
    version: int
    claims: Claims = field(default_factory=Claims)
    #: The read moved the session's causal position (a router read in the session's
    #: context): later reads of the session that claim monotonic reads must not go back.
    observes: bool = False
    api: str = ""


@dataclass(frozen=True, slots=True)
class Violation:
    property: str
    read: ReadOp | None
    #: The lowest version the read was allowed to return (for ``valid``: the bound broken).
    floor: int
    #: The operation that established the floor (a write or an earlier read), if any.
    cause: int | None
    detail: str

    def describe(self) -> str:
        read = self.read
        where = "" if read is None else f" read #{read.id} ({read.api or 'read'}) of {read.key!r} by {read.session}"
        return f"{self.property}:{where} {self.detail}"


@dataclass(frozen=True, slots=True)
class PropertyCount:
    #: Reads that claimed the property.
    checked: int = 0
    #: Of those, reads whose floor was above the key's initial version: reads that could
    #: have failed (a check that can never fail proves nothing).
    exercised: int = 0
    violations: int = 0


@dataclass(frozen=True)
class Verdict:
    reads: int
    writes: int
    counts: Mapping[str, PropertyCount]
    violations: tuple[Violation, ...]

    @property
    def ok(self) -> bool:
        return not self.violations

    def violations_of(self, prop: str) -> list[Violation]:
        return [v for v in self.violations if v.property == prop]

    def summary(self) -> dict[str, dict[str, int]]:
        return {
            name: {"checked": c.checked, "exercised": c.exercised, "violations": c.violations}
            for name, c in self.counts.items()
        }


class _Timeline:
    """For one key: the highest version among events (acknowledgements or completed
    invalidations) strictly before a time, and the write that carried it."""

    __slots__ = ("best", "times")

    def __init__(self, events: Iterable[tuple[float, int, int]]) -> None:
        ordered = sorted(events)
        self.times = [t for t, _, _ in ordered]
        self.best: list[tuple[int, int]] = []
        top: tuple[int, int] | None = None
        for _, version, op in ordered:
            if top is None or version > top[0]:
                top = (version, op)
            self.best.append(top)

    def before(self, t: float) -> tuple[int, int] | None:
        """(version, write id) of the highest version with an event strictly before ``t``."""
        i = bisect.bisect_left(self.times, t)
        return self.best[i - 1] if i else None


_EMPTY = _Timeline(())


@dataclass
class _Floor:
    """A session's floor for one guarantee: direct (key -> version) and a horizon (every
    write acknowledged before it)."""

    direct: dict[str, tuple[int, int]] = field(default_factory=dict)
    horizon: tuple[float, int] | None = None  # (time, id of the op that set it)

    def raise_direct(self, key: str, version: int, op: int) -> None:
        known = self.direct.get(key)
        if known is None or version > known[0]:
            self.direct[key] = (version, op)

    def raise_horizon(self, t: float, op: int) -> None:
        if self.horizon is None or t > self.horizon[0]:
            self.horizon = (t, op)

    def floor(self, key: str, acked: _Timeline) -> tuple[int, int | None, str]:
        """(version, cause, how) the read of ``key`` must reach; version -1 if none."""
        best: tuple[int, int | None, str] = (-1, None, "")
        direct = self.direct.get(key)
        if direct is not None:
            best = (direct[0], direct[1], f"op #{direct[1]} already showed version {direct[0]} of this key")
        if self.horizon is not None:
            seen = acked.before(self.horizon[0])
            if seen is not None and seen[0] > best[0]:
                best = (
                    seen[0],
                    seen[1],
                    f"write #{seen[1]} (version {seen[0]}) was acknowledged before op #{self.horizon[1]}'s "
                    "write began, so the session's causal position covers it",
                )
        return best


def check_history(
    writes: Sequence[WriteOp], reads: Sequence[ReadOp], *, initial: Mapping[str, int] | None = None
) -> Verdict:
    """Check ``reads`` against the guarantees they claim, given ``writes``.

    ``initial``: each key's version before the history began (0 when absent).
    """
    initial = dict(initial or {})
    by_key_acked: dict[str, list[tuple[float, int, int]]] = {}
    by_key_invalidated: dict[str, list[tuple[float, int, int]]] = {}
    invoked_by_key: dict[str, list[float]] = {}
    write_of: dict[tuple[str, int], WriteOp] = {}
    violations: list[Violation] = []
    counts = {name: [0, 0, 0] for name in PROPERTIES}

    for w in writes:
        invoked_by_key.setdefault(w.key, []).append(w.invoked)
        if w.version is None:
            continue
        other = write_of.get((w.key, w.version))
        if other is not None and other.completed is not None and w.completed is not None:
            violations.append(
                Violation(VALID, None, w.version, other.id, f"writes #{other.id} and #{w.id} of {w.key!r} "
                          f"both acknowledged version {w.version}")
            )  # fmt: skip
            counts[VALID][2] += 1
        write_of[(w.key, w.version)] = w
        if w.completed is not None:
            by_key_acked.setdefault(w.key, []).append((w.completed, w.version, w.id))
        if w.invalidated is not None:
            by_key_invalidated.setdefault(w.key, []).append((w.invalidated, w.version, w.id))
    acked = {k: _Timeline(v) for k, v in by_key_acked.items()}
    invalidated = {k: _Timeline(v) for k, v in by_key_invalidated.items()}
    for times in invoked_by_key.values():
        times.sort()

    # Acknowledged writes of one key, in real-time order, must have growing versions.
    for w in writes:
        if w.completed is not None and w.version is not None:
            key = w.key
            earlier = acked[key].before(w.invoked)
            if earlier is not None and earlier[0] >= w.version:
                violations.append(
                    Violation(VALID, None, earlier[0] + 1, earlier[1],
                              f"write #{w.id} of {key!r} began after write #{earlier[1]} (version {earlier[0]}) "
                              f"was acknowledged, yet wrote version {w.version}")
                )  # fmt: skip
                counts[VALID][2] += 1

    def horizon_of(read: ReadOp) -> float | None:
        """When the write of the version ``read`` returned began (None: initial or unknown)."""
        if read.version <= initial.get(read.key, 0):
            return None
        w = write_of.get((read.key, read.version))
        return None if w is None else w.invoked

    for read in reads:
        base = initial.get(read.key, 0)
        counts[VALID][0] += 1
        possible = base + bisect.bisect_left(invoked_by_key.get(read.key, []), read.completed)
        if not base <= read.version <= possible:
            counts[VALID][2] += 1
            violations.append(
                Violation(VALID, read, base, None,
                          f"returned version {read.version}, but only versions {base}..{possible} could exist "
                          "(initial version plus the writes begun before the read completed)")
            )  # fmt: skip

    # Session guarantees: walk each session's reads in order of invocation, raising the
    # floors as the session's acknowledged writes and observing reads complete.
    sessions: dict[str, tuple[list[WriteOp], list[ReadOp]]] = {}
    for w in writes:
        sessions.setdefault(w.session, ([], []))[0].append(w)
    for r in reads:
        sessions.setdefault(r.session, ([], []))[1].append(r)
    for session_writes, session_reads in sessions.values():
        contributions: list[tuple[float, int, WriteOp | ReadOp]] = [
            (w.completed, w.id, w) for w in session_writes if w.completed is not None and w.version is not None
        ]
        contributions += [(r.completed, r.id, r) for r in session_reads if r.observes]
        contributions.sort(key=lambda c: (c[0], c[1]))
        ryw, mono = _Floor(), _Floor()
        i = 0
        for read in sorted(session_reads, key=lambda r: (r.invoked, r.id)):
            while i < len(contributions) and contributions[i][0] < read.invoked:
                op = contributions[i][2]
                if isinstance(op, WriteOp):
                    assert op.version is not None
                    ryw.raise_direct(op.key, op.version, op.id)
                    if op.moves_position:
                        ryw.raise_horizon(op.invoked, op.id)
                else:
                    mono.raise_direct(op.key, op.version, op.id)
                    began = horizon_of(op)
                    if began is not None:
                        mono.raise_horizon(began, op.id)
                i += 1
            timeline = acked.get(read.key, _EMPTY)
            base = initial.get(read.key, 0)
            for prop, wanted, floors in (
                (READ_YOUR_WRITES, read.claims.read_your_writes, ryw),
                (MONOTONIC_READS, read.claims.monotonic_reads, mono),
            ):
                if not wanted:
                    continue
                floor, cause, how = floors.floor(read.key, timeline)
                _judge(prop, read, floor, cause, how, base, counts, violations)

    for read in reads:
        base = initial.get(read.key, 0)
        bound = read.claims.max_staleness
        if bound is not None:
            seen = acked.get(read.key, _EMPTY).before(read.invoked - bound)
            floor, cause = (-1, None) if seen is None else seen
            how = f"write #{cause} (version {floor}) was acknowledged more than {bound:g} s before the read began"
            _judge(BOUNDED_STALENESS, read, floor, cause, how, base, counts, violations)
        limit = read.claims.invalidation_bound
        if limit is not None:
            seen = invalidated.get(read.key, _EMPTY).before(read.invoked - limit)
            floor, cause = (-1, None) if seen is None else seen
            how = f"the invalidation of write #{cause} (version {floor}) completed more than {limit:g} s before"
            _judge(INVALIDATION_BOUND, read, floor, cause, how, base, counts, violations)

    violations.sort(key=lambda v: (PROPERTIES.index(v.property), v.read.invoked if v.read else 0.0))
    return Verdict(
        reads=len(reads),
        writes=len(writes),
        counts={name: PropertyCount(*c) for name, c in counts.items()},
        violations=tuple(violations),
    )


def _judge(
    prop: str,
    read: ReadOp,
    floor: int,
    cause: int | None,
    how: str,
    base: int,
    counts: dict[str, list[int]],
    violations: list[Violation],
) -> None:
    tally = counts[prop]
    tally[0] += 1
    if floor > base:
        tally[1] += 1
    if read.version < floor:
        tally[2] += 1
        violations.append(Violation(prop, read, floor, cause, f"returned version {read.version} < {floor}: {how}"))
