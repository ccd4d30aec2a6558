"""What a cache fill knows about the database position of the data it stores.

When the cache loads a value after an invalidation that carried a WAL position (LSN),
the value may only be stored if it was read at or past that position: otherwise a
lagging replica could put back the data the invalidation removed. The cache opens a
*fill scope* around the loader: the scope carries the floor (the tombstone's LSN) for
the replica router to use as its causal token, and collects the positions the loader's
reads actually saw. The fill then reports the oldest of them as its source.

The replica router calls :func:`fill_floor_lsn` before choosing a node and
:func:`report_read_lsn` after each read; a loader reading elsewhere can report a
position itself.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field


@dataclass
class FillScope:
    floor_lsn: int | None = None
    read_lsns: list[int] = field(default_factory=list)

    @property
    def source_lsn(self) -> int | None:
        """The oldest position any read of this fill saw (conservative), or None."""
        return min(self.read_lsns) if self.read_lsns else None


_SCOPE: ContextVar[FillScope | None] = ContextVar("readscale_fill_scope", default=None)


@contextmanager
def fill_scope(floor_lsn: int | None) -> Iterator[FillScope]:
    scope = FillScope(floor_lsn)
    token = _SCOPE.set(scope)
    try:
        yield scope
    finally:
        _SCOPE.reset(token)


def fill_floor_lsn() -> int | None:
    """The LSN the current fill's reads must reach (None outside a fill or without one)."""
    scope = _SCOPE.get()
    return scope.floor_lsn if scope is not None else None


def report_read_lsn(lsn: int) -> None:
    """Record the WAL position a read of the current fill saw (no-op outside a fill)."""
    scope = _SCOPE.get()
    if scope is not None:
        scope.read_lsns.append(lsn)


#: What a read on the primary reports: it sees every committed change, so it is at or past
#: any tombstone (a fill that started before an invalidation is refused by its lease).
PRIMARY_READ_LSN = 2**64 - 1


def report_primary_read() -> None:
    report_read_lsn(PRIMARY_READ_LSN)


__all__ = ["PRIMARY_READ_LSN", "FillScope", "fill_floor_lsn", "fill_scope", "report_primary_read", "report_read_lsn"]
