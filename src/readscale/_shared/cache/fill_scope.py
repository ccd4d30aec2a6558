"""The fill scope: a context variable carrying what a cache fill's reads must satisfy,
and collecting what each read saw. Sync-neutral (one scope for both flavours of cache and
router); the public face, with the user's guide, is ``readscale.cache``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

from readscale._core.cache.fill import PRIMARY_ONLY, PRIMARY_READ_LSN, ReadReport, Refusal, fill_refusal


@dataclass
class FillScope:
    """One fill's requirements and the reads its loader made."""

    floor_lsn: int | None = None
    max_staleness: float | None = None
    reads: list[ReadReport] = field(default_factory=list)
    #: The versions of the fill's tags, read before its load (what the entry records):
    #: a second store of what this load rendered is judged against them.
    tag_versions: tuple[tuple[str, int], ...] = ()

    @property
    def primary_only(self) -> bool:
        """True when an invalidation with an unknown position stands: read the primary."""
        return self.floor_lsn == PRIMARY_ONLY

    @property
    def source_lsn(self) -> int | None:
        """The oldest position any read of this fill saw (conservative), or None."""
        return min(r.lsn for r in self.reads) if self.reads else None

    def refusal(self) -> Refusal | None:
        """Why the loaded value must not be stored, or None when it may be."""
        return fill_refusal(self.reads, self.floor_lsn, self.max_staleness)


_SCOPE: ContextVar[FillScope | None] = ContextVar("readscale_fill_scope", default=None)


@contextmanager
def fill_scope(floor_lsn: int | None, max_staleness: float | None = None) -> Iterator[FillScope]:
    """Run a loader inside a fill with these requirements (the cache does this)."""
    scope = FillScope(floor_lsn, max_staleness)
    token = _SCOPE.set(scope)
    try:
        yield scope
    finally:
        _SCOPE.reset(token)


def current_fill() -> FillScope | None:
    """The fill the calling code runs in, or None."""
    return _SCOPE.get()


def fill_requirements() -> tuple[int | None, float | None]:
    """``(floor_lsn, max_staleness)`` every read of the current fill must meet
    (``(None, None)`` outside a fill). ``floor_lsn == PRIMARY_ONLY``: read the primary."""
    scope = _SCOPE.get()
    return (None, None) if scope is None else (scope.floor_lsn, scope.max_staleness)


def fill_floor_lsn() -> int | None:
    """The LSN the current fill's reads must reach (None outside a fill or without one)."""
    scope = _SCOPE.get()
    return scope.floor_lsn if scope is not None else None


def report_read_lsn(lsn: int, *, staleness: float | None = None) -> None:
    """Declare a read of the current fill: the WAL position it read at (a replica's
    ``pg_last_wal_replay_lsn()`` taken before the query) and an upper bound on how many
    seconds stale that replica was (None: unknown, which refuses the fill)."""
    scope = _SCOPE.get()
    if scope is not None:
        scope.reads.append(ReadReport(lsn, staleness))


def report_primary_read(position: int | None = None) -> None:
    """Declare that the current fill read the primary (it sees every committed change).

    ``position``: the primary's WAL position (``pg_current_wal_lsn()``, the pointer the
    causal tokens use) read before the query, in the same round trip. The entry then
    records a real read position, and ``read_your_writes`` policies serve it to a session
    whose write it has seen (without one, never to a session that wrote)."""
    scope = _SCOPE.get()
    if scope is not None:
        scope.reads.append(ReadReport(PRIMARY_READ_LSN, 0.0, position))


def report_unknown_read() -> None:
    """Declare a read of the current fill whose position and staleness are unknown (a
    replica chosen before the fill began): the fill is then refused, visibly."""
    scope = _SCOPE.get()
    if scope is not None:
        scope.reads.append(ReadReport(0, None))


__all__ = [
    "PRIMARY_ONLY",
    "PRIMARY_READ_LSN",
    "FillScope",
    "Refusal",
    "current_fill",
    "fill_floor_lsn",
    "fill_requirements",
    "fill_scope",
    "report_primary_read",
    "report_read_lsn",
    "report_unknown_read",
]
