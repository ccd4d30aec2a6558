"""Write-behind bookkeeping against small reference models (Hypothesis).

- coalescing equals "the max version per key" and loses no record id;
- the version rule makes any order of deliveries (with duplicates) end at the newest;
- versions from the clock only grow, whatever the clock does;
- a flush plan driven against a model writer (some records bad, some transient
  failures) writes every good record exactly once, dead-letters exactly the bad ones,
  and ends;
- backoff and backpressure stay within their bounds.
"""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from readscale._core.writebehind.flush import (
    DeadLetter,
    FailureKind,
    RetryAfter,
    Split,
    WaitFor,
    WriteChunk,
    after_failure,
    after_success,
    backoff,
    coalesce,
    next_write,
    plan_flush,
    when_queue_full,
)
from readscale._core.writebehind.records import QueuedWrite, next_version, parse_stream_id, version_wins
from readscale._core.writebehind.settings import FlusherSettings, WhenFull, WriteBehindSettings

keys = st.sampled_from(["a", "b", "c", "d", "e"])


@st.composite
def queued(draw: st.DrawFn, max_size: int = 60) -> list[QueuedWrite]:
    """Records as a stream holds them: increasing ids, versions unique and increasing
    per queue, then possibly shuffled (claims and redeliveries mix them) and duplicated."""
    n = draw(st.integers(0, max_size))
    version = draw(st.integers(1, 10**15))
    out = []
    for i in range(n):
        version += draw(st.integers(1, 1000))
        out.append(QueuedWrite(f"{1000 + i}-{draw(st.integers(0, 3))}", draw(keys), "", version, b""))
    out = draw(st.permutations(out))
    dupes = draw(st.lists(st.sampled_from(out), max_size=5)) if out else []
    return [*out, *dupes]


@settings(max_examples=500)
@given(queued())
def test_coalesce_matches_the_max_per_key_model(records: list[QueuedWrite]) -> None:
    model: dict[str, QueuedWrite] = {}
    for r in records:
        if r.key not in model or r.version > model[r.key].version:
            model[r.key] = r
    result = coalesce(records)
    assert {r.key: r for r in result.winners} == model
    assert len({r.key for r in result.winners}) == len(result.winners)  # one row per key
    # every distinct record id is acknowledged exactly once through its winner
    acked = result.ack_ids(result.winners)
    assert sorted(acked) == sorted({r.id for r in records})
    ids = [parse_stream_id(r.id) for r in result.winners]
    assert ids == sorted(ids)


@settings(max_examples=500)
@given(st.lists(st.tuples(keys, st.integers(1, 50)), max_size=80), st.randoms(use_true_random=False))
def test_the_version_rule_converges_to_the_newest_in_any_order(writes: list[tuple[str, int]], rnd: object) -> None:
    deliveries = writes + writes[: len(writes) // 2]  # redeliveries
    rnd.shuffle(deliveries)  # type: ignore[attr-defined]
    table: dict[str, int] = {}
    for key, version in deliveries:
        if version_wins(version, table.get(key)):
            table[key] = version
    expected: dict[str, int] = {}
    for key, version in writes:
        expected[key] = max(version, expected.get(key, 0))
    assert table == expected


@given(st.lists(st.integers(0, 2**52), min_size=1, max_size=100))
def test_versions_only_grow_whatever_the_clock_does(clock_readings: list[int]) -> None:
    last = 0
    for now in clock_readings:
        version = next_version(last, now)
        assert version > last
        assert version >= now
        last = version


# -- the flush plan against a model writer ---------------------------------------------------


@settings(max_examples=400, deadline=None)
@given(
    n=st.integers(1, 40),
    bad=st.sets(st.integers(0, 39), max_size=6),
    transient=st.lists(st.booleans(), max_size=40),
    max_attempts=st.integers(1, 4),
    u=st.floats(0, 1, exclude_max=True),
)
def test_a_plan_writes_every_good_record_once_and_dead_letters_exactly_the_bad(
    n: int, bad: set[int], transient: list[bool], max_attempts: int, u: float
) -> None:
    s = FlusherSettings(max_attempts=max_attempts, retry_base=0.01, retry_cap=0.5)
    records = [QueuedWrite(f"{i + 1}-0", f"k{i}", "", i + 1, b"") for i in range(n)]
    bad_keys = {f"k{i}" for i in bad if i < n}
    failures = iter(transient)  # a finite outage: transient failures then a healthy server
    plan = plan_flush(records)
    now = 0.0
    written: list[str] = []
    dead: list[str] = []
    transactions = 0
    for _ in range(10_000):
        action = next_write(plan, now)
        if action is None:
            break
        if isinstance(action, WaitFor):
            assert action.delay > 0
            now += action.delay
            continue
        assert isinstance(action, WriteChunk)
        chunk_keys = [r.key for r in action.chunk.records]
        assert 1 <= len(chunk_keys) <= n
        if next(failures, False):
            plan, step = after_failure(plan, action.index, FailureKind.TRANSIENT, s, u, now)
            assert isinstance(step, RetryAfter)
        elif bad_keys & set(chunk_keys):
            plan, step = after_failure(plan, action.index, FailureKind.RECORD, s, u, now)
            if isinstance(step, DeadLetter):
                dead.append(step.record.key)
                assert step.record.key in bad_keys
                assert step.attempts == max_attempts
            else:
                assert isinstance(step, RetryAfter | Split)
        else:
            transactions += 1
            written.extend(chunk_keys)
            plan = after_success(plan, action.index)
    else:
        raise AssertionError("the plan did not end")
    assert sorted(written) == sorted(r.key for r in records if r.key not in bad_keys)
    assert sorted(dead) == sorted(bad_keys)
    if not bad_keys:
        assert transactions == 1  # a healthy batch is one transaction, whatever the outage


@given(attempt=st.integers(1, 200), u=st.floats(0, 1), base=st.floats(0.001, 1), factor=st.floats(1, 100))
def test_backoff_stays_within_half_the_ceiling_and_the_cap(attempt: int, u: float, base: float, factor: float) -> None:
    s = FlusherSettings(retry_base=base, retry_cap=base * factor)
    delay = backoff(attempt, s, u)
    ceiling = min(s.retry_cap, s.retry_base * 2 ** min(attempt - 1, 62))
    assert ceiling / 2 - 1e-12 <= delay <= ceiling + 1e-12
    assert backoff(attempt + 1, s, u) >= delay - 1e-12  # never shorter for the same draw


@given(max_wait=st.floats(0, 30), mode=st.sampled_from(list(WhenFull)))
def test_backpressure_waits_at_most_max_wait_then_gives_up(max_wait: float, mode: WhenFull) -> None:
    s = WriteBehindSettings(max_wait=max_wait, when_full=mode)
    waited, attempt = 0.0, 0
    while (delay := when_queue_full(attempt, waited, s)) is not None:
        assert delay > 0
        waited += delay
        attempt += 1
        assert attempt < 10_000
    assert waited <= max_wait + 1e-9
    if mode is WhenFull.RAISE:
        assert attempt == 0
    else:
        assert math.isclose(waited, max_wait, abs_tol=1e-9)
