"""The history checker (``readscale._core.consistency.history``): hand-made histories that break each
guarantee, the same histories a hair's breadth inside it, and agreement with a brute-force
reference written straight from the definitions on random histories."""

from __future__ import annotations

from collections.abc import Sequence

from hypothesis import given, settings
from hypothesis import strategies as st

from readscale._core.consistency.history import (
    BOUNDED_STALENESS,
    INVALIDATION_BOUND,
    MONOTONIC_READS,
    READ_YOUR_WRITES,
    VALID,
    Claims,
    ReadOp,
    WriteOp,
    check_history,
)

SESSION = Claims(read_your_writes=True, monotonic_reads=True)


def w(id: int, key: str, invoked: float, completed: float | None, version: int | None, *,
      session: str = "other", invalidated: float | None = None) -> WriteOp:  # fmt: skip
    return WriteOp(id, session, key, invoked, completed, version, invalidated)


def r(id: int, key: str, invoked: float, completed: float, version: int, *, session: str = "s",
      claims: Claims = SESSION, observes: bool = True) -> ReadOp:  # fmt: skip
    return ReadOp(id, session, key, invoked, completed, version, claims, observes)


def violated(writes: Sequence[WriteOp], reads: Sequence[ReadOp], prop: str) -> list[int]:
    verdict = check_history(writes, reads)
    return [v.read.id for v in verdict.violations_of(prop) if v.read is not None]


# -- read-your-writes ------------------------------------------------------------------------


def test_a_read_after_the_sessions_acknowledged_write_must_see_it() -> None:
    writes = [w(1, "k", 1.0, 2.0, 1, session="s")]
    assert violated(writes, [r(2, "k", 3.0, 3.1, 0)], READ_YOUR_WRITES) == [2]
    assert violated(writes, [r(2, "k", 3.0, 3.1, 1)], READ_YOUR_WRITES) == []


def test_a_read_begun_before_the_acknowledgement_may_miss_the_write() -> None:
    writes = [w(1, "k", 1.0, 2.0, 1, session="s")]
    assert violated(writes, [r(2, "k", 1.5, 3.0, 0)], READ_YOUR_WRITES) == []
    assert violated(writes, [r(2, "k", 2.0, 3.0, 0)], READ_YOUR_WRITES) == [], "acknowledged at the same instant"


def test_another_sessions_write_is_not_read_your_writes() -> None:
    writes = [w(1, "k", 1.0, 2.0, 1, session="t")]
    assert violated(writes, [r(2, "k", 3.0, 3.1, 0)], READ_YOUR_WRITES) == []


def test_the_token_covers_writes_acknowledged_before_the_sessions_own_write_began() -> None:
    writes = [w(1, "b", 0.0, 1.0, 1, session="t"), w(2, "a", 2.0, 3.0, 1, session="s")]
    verdict = check_history(writes, [r(3, "b", 4.0, 4.1, 0)])
    (violation,) = verdict.violations_of(READ_YOUR_WRITES)
    assert (violation.floor, violation.cause) == (1, 1)
    # Concurrent with the session's write: it may or may not be under the token.
    overlapping = [w(1, "b", 0.0, 2.5, 1, session="t"), w(2, "a", 2.0, 3.0, 1, session="s")]
    assert violated(overlapping, [r(3, "b", 4.0, 4.1, 0)], READ_YOUR_WRITES) == []


def test_a_read_that_claims_nothing_is_not_checked() -> None:
    writes = [w(1, "k", 1.0, 2.0, 1, session="s")]
    verdict = check_history(writes, [r(2, "k", 3.0, 3.1, 0, claims=Claims())])
    assert verdict.ok
    assert verdict.counts[READ_YOUR_WRITES].checked == 0


def test_unacknowledged_writes_set_no_floor() -> None:
    writes = [w(1, "k", 1.0, None, 1, session="s"), w(2, "k", 1.0, 2.0, None, session="s")]
    assert violated(writes, [r(3, "k", 3.0, 3.1, 0)], READ_YOUR_WRITES) == []


# -- monotonic reads -------------------------------------------------------------------------


def test_a_session_never_reads_an_older_version_than_it_observed() -> None:
    writes = [w(1, "k", 0.0, 1.0, 1), w(2, "k", 1.0, 2.0, 2)]
    reads = [r(3, "k", 3.0, 4.0, 2), r(4, "k", 5.0, 5.1, 1)]
    verdict = check_history(writes, reads)
    (violation,) = verdict.violations_of(MONOTONIC_READS)
    assert (violation.read.id if violation.read else None, violation.floor, violation.cause) == (4, 2, 3)


def test_overlapping_reads_may_come_in_any_order() -> None:
    writes = [w(1, "k", 0.0, 1.0, 1), w(2, "k", 1.0, 2.0, 2)]
    assert violated(writes, [r(3, "k", 3.0, 4.0, 2), r(4, "k", 3.5, 5.0, 1)], MONOTONIC_READS) == []


def test_only_reads_that_move_the_causal_position_raise_the_floor() -> None:
    """A cache hit does not touch the session's token: a replica read after it may be older."""
    writes = [w(1, "k", 0.0, 1.0, 1), w(2, "k", 1.0, 2.0, 2)]
    reads = [r(3, "k", 3.0, 4.0, 2, observes=False), r(4, "k", 5.0, 5.1, 1)]
    assert violated(writes, reads, MONOTONIC_READS) == []


def test_monotonic_reads_across_keys_through_the_write_order() -> None:
    """Reading a=1 shows the replica past a's commit, which came after b=1 was acknowledged."""
    writes = [w(1, "b", 0.0, 1.0, 1), w(2, "a", 2.0, 3.0, 1)]
    reads = [r(3, "a", 4.0, 4.5, 1), r(4, "b", 5.0, 5.1, 0)]
    assert violated(writes, reads, MONOTONIC_READS) == [4]
    assert violated(writes, [r(3, "a", 4.0, 4.5, 0), r(4, "b", 5.0, 5.1, 0)], MONOTONIC_READS) == []


def test_sessions_are_independent() -> None:
    writes = [w(1, "k", 0.0, 1.0, 1)]
    reads = [r(3, "k", 3.0, 4.0, 1, session="s"), r(4, "k", 5.0, 5.1, 0, session="t")]
    assert violated(writes, reads, MONOTONIC_READS) == []


# -- bounded staleness -----------------------------------------------------------------------


def test_bounded_staleness_sees_writes_acknowledged_longer_ago_than_its_bound() -> None:
    writes = [w(1, "k", 9.0, 10.0, 1)]
    bounded = Claims(max_staleness=2.0)
    assert violated(writes, [r(2, "k", 12.5, 12.6, 0, claims=bounded)], BOUNDED_STALENESS) == [2]
    assert violated(writes, [r(2, "k", 11.5, 11.6, 0, claims=bounded)], BOUNDED_STALENESS) == []
    latest = Claims(max_staleness=0.0)
    assert violated(writes, [r(2, "k", 10.001, 10.1, 0, claims=latest)], BOUNDED_STALENESS) == [2]


# -- no stale value survives its bound ---------------------------------------------------------


def test_no_value_older_than_an_invalidated_write_is_served_past_the_bound() -> None:
    writes = [w(1, "k", 9.0, 10.0, 1, invalidated=10.0), w(2, "k", 19.0, 20.0, 2, invalidated=20.5)]
    cached = Claims(invalidation_bound=1.0)
    reads = [
        r(3, "k", 10.5, 10.6, 0, claims=cached),  # inside the bound: may still be old
        r(4, "k", 11.5, 11.6, 0, claims=cached),  # past it
        r(5, "k", 15.0, 15.1, 1, claims=cached),
        r(6, "k", 21.0, 21.1, 1, claims=cached),  # version 2's invalidation is 0.5 s old
        r(7, "k", 22.0, 22.1, 1, claims=cached),
    ]
    verdict = check_history(writes, reads)
    assert [v.read.id for v in verdict.violations_of(INVALIDATION_BOUND) if v.read] == [4, 7]
    assert verdict.counts[INVALIDATION_BOUND].checked == 5
    assert verdict.counts[INVALIDATION_BOUND].exercised == 4


def test_a_write_never_invalidated_bounds_nothing() -> None:
    writes = [w(1, "k", 9.0, 10.0, 1)]
    assert violated(writes, [r(2, "k", 99.0, 99.1, 0, claims=Claims(invalidation_bound=1.0))], INVALIDATION_BOUND) == []


def test_a_newer_invalidation_covers_every_older_version() -> None:
    writes = [w(1, "k", 9.0, 10.0, 1), w(2, "k", 19.0, 20.0, 2, invalidated=20.0)]
    assert violated(writes, [r(3, "k", 30.0, 30.1, 0, claims=Claims(invalidation_bound=1.0))], INVALIDATION_BOUND) == [
        3
    ]


# -- sanity of the history ------------------------------------------------------------------


def test_a_version_nobody_wrote_is_invalid() -> None:
    writes = [w(1, "k", 1.0, 2.0, 1), w(2, "k", 5.0, None, None)]
    assert violated(writes, [r(3, "k", 3.0, 3.1, 2, claims=Claims())], VALID) == [3]
    assert violated(writes, [r(3, "k", 3.0, 6.0, 2, claims=Claims())], VALID) == []
    assert violated(writes, [r(3, "k", 3.0, 3.1, -1, claims=Claims())], VALID) == [3]


def test_writes_out_of_real_time_order_are_invalid() -> None:
    verdict = check_history([w(1, "k", 1.0, 2.0, 2), w(2, "k", 3.0, 4.0, 1)], [])
    assert len(verdict.violations_of(VALID)) == 1
    verdict = check_history([w(1, "k", 1.0, 2.0, 1), w(2, "k", 3.0, 4.0, 1)], [])
    assert len(verdict.violations_of(VALID)) == 2  # a duplicate, and out of order


def test_initial_versions() -> None:
    writes = [w(1, "k", 1.0, 2.0, 8, session="s")]
    verdict = check_history(writes, [r(2, "k", 3.0, 3.1, 7)], initial={"k": 7})
    assert [v.property for v in verdict.violations] == [READ_YOUR_WRITES]
    assert verdict.counts[READ_YOUR_WRITES].exercised == 1
    assert verdict.counts[MONOTONIC_READS].exercised == 0


def test_a_write_behind_write_covers_only_its_own_key() -> None:
    """A write-behind write only enqueues (the flusher commits it later, outside the
    session): the session's token does not move, so it covers no one else's write (found
    by the soak, seed 393358: a Django read after a write-behind write was judged by the
    writes acknowledged before the enqueue)."""
    enqueued = WriteOp(2, "s", "a", 2.0, 3.0, 1, moves_position=False)
    writes = [w(1, "b", 0.0, 1.0, 1, session="t"), enqueued]
    assert violated(writes, [r(3, "b", 4.0, 4.1, 0)], READ_YOUR_WRITES) == []
    assert violated(writes, [r(3, "a", 4.0, 4.1, 0)], READ_YOUR_WRITES) == [3], "its own key it still covers"


# -- agreement with a reference written from the definitions -------------------------------


def reference(writes: Sequence[WriteOp], reads: Sequence[ReadOp]) -> set[tuple[str, int]]:
    """O(n^2): each guarantee's floor computed straight from its definition."""
    known = [x for x in writes if x.version is not None]
    acked = [x for x in known if x.completed is not None]
    by_version = {(x.key, x.version): x for x in known}

    def acked_before(key: str, t: float) -> int:
        return max((x.version for x in acked if x.key == key and x.completed < t), default=-1)  # type: ignore[operator, type-var]

    out: set[tuple[str, int]] = set()
    for read in reads:
        c = read.claims
        if c.read_your_writes:
            own = [x for x in acked if x.session == read.session and x.completed < read.invoked]  # type: ignore[operator]
            direct = [x.version for x in own if x.key == read.key]
            floor = max(
                direct + [acked_before(read.key, x.invoked) for x in own if x.moves_position],  # type: ignore[operator]
                default=-1,
            )
            if read.version < floor:
                out.add((READ_YOUR_WRITES, read.id))
        if c.monotonic_reads:
            seen = [p for p in reads if p.session == read.session and p.observes and p.completed < read.invoked]
            floors = [p.version for p in seen if p.key == read.key]
            for p in seen:
                origin = by_version.get((p.key, p.version)) if p.version > 0 else None
                if origin is not None:
                    floors.append(acked_before(read.key, origin.invoked))
            if read.version < max(floors, default=-1):
                out.add((MONOTONIC_READS, read.id))
        if c.max_staleness is not None and read.version < acked_before(read.key, read.invoked - c.max_staleness):
            out.add((BOUNDED_STALENESS, read.id))
        if c.invalidation_bound is not None:
            floor = max((x.version for x in known if x.key == read.key and x.invalidated is not None
                         and x.invalidated < read.invoked - c.invalidation_bound), default=-1)  # type: ignore[type-var]  # fmt: skip
            if read.version < floor:
                out.add((INVALIDATION_BOUND, read.id))
    return out


@st.composite
def histories(draw: st.DrawFn) -> tuple[list[WriteOp], list[ReadOp]]:
    keys = ["a", "b", "c"][: draw(st.integers(1, 3))]
    sessions = ["s", "t", "u"][: draw(st.integers(1, 3))]
    time = st.integers(0, 40).map(float)
    writes: list[WriteOp] = []
    versions = dict.fromkeys(keys, 0)
    # Writes of one key in version order, with commit points in real-time order.
    for i in range(draw(st.integers(0, 12))):
        key = draw(st.sampled_from(keys))
        commit = draw(time)
        writes.append((key, commit, i))  # type: ignore[arg-type]
    writes.sort(key=lambda x: x[1])  # type: ignore[arg-type, return-value]
    made: list[WriteOp] = []
    for i, (key, commit, _) in enumerate(writes):  # type: ignore[misc]
        versions[key] += 1
        invoked = commit - draw(st.integers(0, 3))
        completed = None if draw(st.integers(0, 9)) == 0 else commit + draw(st.integers(0, 3))
        invalidated = None if completed is None or draw(st.booleans()) else completed + draw(st.integers(0, 2))
        made.append(WriteOp(i, draw(st.sampled_from(sessions)), key, invoked, completed, versions[key], invalidated,
                            moves_position=draw(st.integers(0, 3)) > 0))  # fmt: skip
    reads: list[ReadOp] = []
    for j in range(draw(st.integers(0, 15))):
        key = draw(st.sampled_from(keys))
        invoked = draw(time)
        completed = invoked + draw(st.integers(0, 3))
        top = sum(1 for x in made if x.key == key and x.invoked < completed)
        claims = Claims(
            read_your_writes=draw(st.booleans()),
            monotonic_reads=draw(st.booleans()),
            max_staleness=draw(st.none() | st.integers(0, 5).map(float)),
            invalidation_bound=draw(st.none() | st.integers(0, 3).map(float)),
        )
        reads.append(ReadOp(100 + j, draw(st.sampled_from(sessions)), key, invoked, completed,
                            draw(st.integers(0, top)), claims, draw(st.booleans())))  # fmt: skip
    return made, reads


@settings(max_examples=400, deadline=None)
@given(histories())
def test_the_checker_agrees_with_the_reference(history: tuple[list[WriteOp], list[ReadOp]]) -> None:
    writes, reads = history
    verdict = check_history(writes, reads)
    found = {(v.property, v.read.id) for v in verdict.violations if v.read is not None and v.property != VALID}
    assert found == reference(writes, reads)
