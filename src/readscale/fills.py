"""What a cache fill must read, and how its reads are declared.

When the cache loads a value (a miss, a stale entry, ``@cached``), it opens a *fill
scope* around the loader. The scope carries what every read of the fill must satisfy,
and collects what each read actually saw; the cache stores the value only if every read
passed (see ``readscale._core.cache.fill`` for why this makes a stale fill impossible):

- ``floor_lsn``: the WAL position of the last invalidation of the key, its tags and its
  namespace (:data:`PRIMARY_ONLY` when that position is unknown: only the primary
  passes);
- ``max_staleness``: an upper bound, in seconds, on how stale any read may be (below the
  tombstone's life).

**The replica router honours both by itself**: a read inside a fill goes to a replica
that has replayed the floor and is fresh enough, or to the primary, and reports what it
read (:meth:`~readscale.replicas.ReplicaRouter.fetch`, ``read()``, ``route_read`` and
the Django and SQLAlchemy integrations built on it). Nothing to do in a loader that
reads through it.

**A loader that reads elsewhere declares its source**, or its fill is refused while a
tombstone stands (counted in ``cache.stats.loader.fills_refused_undeclared_source`` and
logged once):

- on the primary (a psycopg connection of its own, an ORM without the router): call
  :func:`report_primary_read` in the loader, or build the cache with
  ``loader_source="primary"`` (every loader that declares nothing is taken to read the
  primary);
- on a replica of its own: read the replica's ``pg_last_wal_replay_lsn()`` in a
  statement before the query and call :func:`report_read_lsn` with it and an upper
  bound on the replica's staleness (:func:`fill_requirements` tells what is needed).

Outside a fill every function here is a no-op, so loaders can call them unconditionally.
"""

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


def report_primary_read() -> None:
    """Declare that the current fill read the primary (it sees every committed change)."""
    scope = _SCOPE.get()
    if scope is not None:
        scope.reads.append(ReadReport(PRIMARY_READ_LSN, 0.0))


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
