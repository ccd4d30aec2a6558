"""The invalidations one process has seen (readscale._core.cache.local_invalidations), no I/O."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from readscale._core.cache.fill import PRIMARY_ONLY
from readscale._core.cache.local_invalidations import LocalInvalidations


def test_a_read_before_an_invalidation_is_not_put() -> None:
    seen = LocalInvalidations()
    before = seen.seq
    seen.mark(["a"], 10, until=100.0, now=0.0)
    assert seen.invalidated_since("a", before)
    assert not seen.invalidated_since("b", before)
    assert not seen.invalidated_since("a", seen.seq)  # a read that began after it


def test_a_flush_voids_every_earlier_read() -> None:
    seen = LocalInvalidations()
    before = seen.seq
    seen.flush()
    assert seen.invalidated_since("anything", before)
    assert not seen.invalidated_since("anything", seen.seq)


def test_floors_grow_expire_and_unknown_means_primary() -> None:
    seen = LocalInvalidations()
    seen.mark(["a"], 10, until=5.0, now=0.0)
    seen.mark(["a"], 7, until=3.0, now=1.0)  # older and shorter: neither goes down
    assert seen.floor("a", 4.0) == 10
    assert seen.floor("a", 5.0) is None
    seen.mark(["b"], None, until=5.0, now=0.0)
    assert seen.floor("b", 1.0) == PRIMARY_ONLY


@given(st.lists(st.tuples(st.sampled_from("abcdef"), st.integers(0, 100)), max_size=60), st.integers(1, 4))
def test_a_bounded_table_never_forgets_unsafely(marks: list[tuple[str, int]], limit: int) -> None:
    """Past its limit the table drops keys, and answers for them conservatively: a read
    that began before any dropped invalidation is not put, and dropped floors apply to all."""
    seen = LocalInvalidations(limit=limit)
    unbounded = LocalInvalidations(limit=10**9)
    starts = []
    for key, lsn in marks:
        starts.append(seen.seq)
        seen.mark([key], lsn, until=50.0, now=0.0)
        unbounded.mark([key], lsn, until=50.0, now=0.0)
        assert len(seen) <= limit
    for start in starts:
        for key in "abcdefg":
            if unbounded.invalidated_since(key, start):
                assert seen.invalidated_since(key, start)
    for key in "abcdefg":
        exact = unbounded.floor(key, 1.0)
        if exact is not None:
            bounded = seen.floor(key, 1.0)
            assert bounded is not None and bounded >= exact


def test_a_generation_changes_with_every_invalidation_that_may_touch_the_key() -> None:
    """Readers share a load in flight only within one generation (found by tests/consistency:
    a slow load begun before an invalidation served its old value to later readers)."""
    seen = LocalInvalidations()
    a, b = seen.generation("a"), seen.generation("b")
    seen.mark(["a"], 10, until=5.0, now=0.0)
    assert seen.generation("a") != a
    assert seen.generation("b") == b, "another key's invalidation leaves b's loads shared"
    untagged, tagged = seen.generation("b"), seen.generation("b", tagged=True)
    seen.tags_bumped()
    assert seen.generation("b") == untagged
    assert seen.generation("b", tagged=True) != tagged, "a tag bump may make any tagged entry stale"
    before = seen.generation("b")
    seen.flush()
    assert seen.generation("b") != before
