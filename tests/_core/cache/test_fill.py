"""The rules of a cache fill (readscale._core.cache.fill), exhaustively, without I/O."""

from __future__ import annotations

import pytest

from readscale._core.cache.fill import (
    FILL_MARGIN,
    PRIMARY_ONLY,
    PRIMARY_READ_LSN,
    ReadReport,
    Refusal,
    entry_position,
    fill_refusal,
    max_fill_staleness,
    merge_floor,
)
from readscale._shared.cache.fill_scope import current_fill, fill_scope
from readscale.cache import fill_requirements, report_primary_read, report_read_lsn

PRIMARY = ReadReport(PRIMARY_READ_LSN, 0.0)


def test_an_entry_records_a_position_its_reads_saw_everything_before() -> None:
    """A primary read's position (read before its query) less one: a commit whose WAL ends
    exactly there may still be invisible to the query, and a token is read after its
    commit returned, so an entry at or past a session's token saw that session's write."""
    assert entry_position([]) is None
    assert entry_position([ReadReport(500, 0.1)]) == 500
    assert entry_position([PRIMARY]) is None, "a primary read without its position"
    assert entry_position([ReadReport(PRIMARY_READ_LSN, 0.0, 700)]) == 699
    assert entry_position([ReadReport(PRIMARY_READ_LSN, 0.0, 700), ReadReport(500, 0.1)]) == 500
    assert entry_position([ReadReport(PRIMARY_READ_LSN, 0.0, 700), PRIMARY]) is None
    assert entry_position([ReadReport(PRIMARY_READ_LSN, 0.0, 0)]) == 0
    with fill_scope(PRIMARY_ONLY) as scope:
        report_primary_read(700)
    assert scope.reads == [ReadReport(PRIMARY_READ_LSN, 0.0, 700)]


def test_an_undeclared_fill_passes_only_without_a_floor() -> None:
    assert fill_refusal([], None, 30.0) is None
    assert fill_refusal([], 100, 30.0) is Refusal.UNDECLARED_SOURCE
    assert fill_refusal([], PRIMARY_ONLY, 30.0) is Refusal.UNDECLARED_SOURCE


def test_a_primary_read_passes_every_floor_and_bound() -> None:
    for floor in (None, 0, 100, PRIMARY_ONLY):
        for bound in (None, 0.0, 30.0):
            assert fill_refusal([PRIMARY], floor, bound) is None


def test_a_replica_read_must_reach_the_floor_and_stay_within_the_bound() -> None:
    assert fill_refusal([ReadReport(100, 1.0)], 100, 30.0) is None
    assert fill_refusal([ReadReport(99, 1.0)], 100, 30.0) is Refusal.OLDER_THAN_INVALIDATION
    assert fill_refusal([ReadReport(100, 30.5)], 100, 30.0) is Refusal.TOO_STALE
    assert fill_refusal([ReadReport(100, None)], None, 30.0) is Refusal.TOO_STALE  # unknown: refused
    assert fill_refusal([ReadReport(100, None)], None, None) is None  # no bound asked
    assert fill_refusal([ReadReport(2**63, 0.0)], PRIMARY_ONLY, 30.0) is Refusal.OLDER_THAN_INVALIDATION


def test_every_read_counts() -> None:
    assert fill_refusal([PRIMARY, ReadReport(5, 1.0)], 10, 30.0) is Refusal.OLDER_THAN_INVALIDATION
    assert fill_refusal([ReadReport(10, 1.0), ReadReport(12, 40.0)], 10, 30.0) is Refusal.TOO_STALE


def test_the_bound_stays_below_the_tombstone_life() -> None:
    for ttl in (0.5, 2.0, 5.0, 35.0, 300.0):
        bound = max_fill_staleness(ttl)
        assert 0 <= bound <= max(0.0, ttl - FILL_MARGIN)
    assert max_fill_staleness(35.0) > 30.0  # the router's default max_lag fits under the default


def test_floors_merge_to_the_stricter() -> None:
    assert merge_floor(None, None) is None
    assert merge_floor(5, None) == 5
    assert merge_floor(None, 7) == 7
    assert merge_floor(5, 7) == 7
    assert merge_floor(PRIMARY_ONLY, 7) == PRIMARY_ONLY


def test_the_scope_collects_reads_and_is_a_no_op_outside() -> None:
    report_read_lsn(5)
    report_primary_read()
    assert current_fill() is None
    assert fill_requirements() == (None, None)
    with fill_scope(10, 3.0) as scope:
        assert fill_requirements() == (10, 3.0)
        report_read_lsn(12, staleness=1.0)
        report_primary_read()
    assert scope.source_lsn == 12
    assert scope.refusal() is None
    with fill_scope(PRIMARY_ONLY, 3.0) as scope:
        assert scope.primary_only
        report_read_lsn(12, staleness=1.0)
    assert scope.refusal() is Refusal.OLDER_THAN_INVALIDATION


@pytest.mark.parametrize("staleness", [None, 99.0])
def test_a_self_declared_replica_read_needs_a_staleness_within_the_bound(staleness: float | None) -> None:
    with fill_scope(None, 30.0) as scope:
        report_read_lsn(50, staleness=staleness)
    assert scope.refusal() is Refusal.TOO_STALE
