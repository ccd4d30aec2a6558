"""Write-behind bookkeeping, table-driven: names, settings, versions, records, coalescing,
the failure steps, backoff and backpressure (readscale._core.writebehind)."""

from __future__ import annotations

import pytest

from readscale._core.writebehind.flush import (
    Chunk,
    ConsumerInfo,
    DeadLetter,
    FailureKind,
    FlushPlan,
    RetryAfter,
    Split,
    WaitFor,
    WriteChunk,
    after_failure,
    after_success,
    backoff,
    coalesce,
    consumers_to_forget,
    next_write,
    plan_flush,
    read_more,
    when_queue_full,
)
from readscale._core.writebehind.records import (
    MAX_VERSION,
    Malformed,
    QueuedWrite,
    enqueued_at,
    next_version,
    parse_record,
    parse_stream_id,
    version_wins,
)
from readscale._core.writebehind.settings import FlusherSettings, WhenFull, WriteBehindSettings, queue_keys
from readscale.errors import ConfigurationError

FAST = FlusherSettings(retry_base=0.1, retry_cap=1.0, max_attempts=3, batch_size=10, batch_wait=0.05)


def rec(entry_id: str, key: str, version: int) -> QueuedWrite:
    return QueuedWrite(entry_id, key, "", version, b"")


# -- names and settings ----------------------------------------------------------------------


def test_queue_keys_share_one_hash_tag() -> None:
    keys = queue_keys("rs:", "orders")
    assert keys.stream == "rs:wb:{orders}:q"
    assert keys.clock == "rs:wb:{orders}:clock"
    assert keys.dead == "rs:wb:{orders}:dead"


@pytest.mark.parametrize("name", ["", "a b", "a:b", "{x}", "tab\there"])
def test_bad_queue_names_are_refused(name: str) -> None:
    with pytest.raises(ConfigurationError):
        queue_keys("rs:", name)
    with pytest.raises(ConfigurationError):
        WriteBehindSettings(queue=name)


@pytest.mark.parametrize(
    "changes",
    [
        {"batch_size": 0},
        {"batch_wait": -1.0},
        {"block": 0.0},
        {"claim_idle": 0.0},
        {"max_attempts": 0},
        {"retry_base": 0.0},
        {"retry_base": 2.0, "retry_cap": 1.0},
        {"group": "a b"},
        {"consumer": ""},
        {"forget_consumers_after": -1.0},
    ],
)
def test_flusher_settings_are_validated(changes: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        FlusherSettings(**changes)  # type: ignore[arg-type]


@pytest.mark.parametrize("changes", [{"max_queue_length": -1}, {"max_wait": -0.1}, {"max_wait": float("nan")}])
def test_producer_settings_are_validated(changes: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        WriteBehindSettings(**changes)  # type: ignore[arg-type]


# -- versions and ids ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("candidate", "stored", "wins"),
    [(5, None, True), (5, 4, True), (5, 5, False), (5, 6, False), (1, None, True)],
)
def test_version_rule(candidate: int, stored: int | None, wins: bool) -> None:
    assert version_wins(candidate, stored) is wins


@pytest.mark.parametrize(
    ("last", "now", "expected"),
    [
        (0, 1_800_000_000_000_000, 1_800_000_000_000_000),  # first write: the clock
        (1_800_000_000_000_000, 1_800_000_000_000_000, 1_800_000_000_000_001),  # same microsecond
        (1_800_000_000_000_500, 1_800_000_000_000_000, 1_800_000_000_000_501),  # clock stepped back
        (5, 1_800_000_000_000_000, 1_800_000_000_000_000),  # counter far behind (lost, or from a test)
    ],
)
def test_next_version_is_above_both_the_last_and_the_clock(last: int, now: int, expected: int) -> None:
    assert next_version(last, now) == expected


def test_stream_ids() -> None:
    assert parse_stream_id("1700000000000-3") == (1700000000000, 3)
    assert parse_stream_id("1-10") > parse_stream_id("1-9")  # numeric, not text, order
    assert enqueued_at("1700000000123-0") == pytest.approx(1700000000.123)
    for bad in ("", "12", "a-1", "1-", "-1", "1-2-3"):
        with pytest.raises(ValueError, match="not a stream entry id"):
            parse_stream_id(bad)


# -- records ---------------------------------------------------------------------------------


def test_parse_record_reads_the_scripts_fields() -> None:
    parsed = parse_record("1-0", {b"k": b"user:1", b"n": b"users", b"v": b"42", b"e": b"\xa5data"})
    assert parsed == QueuedWrite("1-0", "user:1", "users", 42, b"\xa5data")
    assert parse_record("1-0", {b"k": b"k", b"v": b"7", b"e": b""}) == QueuedWrite("1-0", "k", "", 7, b"")


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({b"v": b"1", b"e": b""}, "missing field"),
        ({b"k": b"k", b"e": b""}, "missing field"),
        ({b"k": b"k", b"v": b"1"}, "missing field"),
        ({b"k": b"k", b"v": b"x1", b"e": b""}, "bad version"),
        ({b"k": b"k", b"v": b"0", b"e": b""}, "bad version"),
        ({b"k": b"k", b"v": str(MAX_VERSION + 1).encode(), b"e": b""}, "bad version"),
        ({b"k": b"k", b"v": b"-3", b"e": b""}, "bad version"),
        ({b"k": b"", b"v": b"1", b"e": b""}, "empty key"),
        ({b"k": b"\xff", b"v": b"1", b"e": b""}, "UTF-8"),
    ],
)
def test_malformed_records(fields: dict[bytes, bytes], reason: str) -> None:
    parsed = parse_record("9-0", fields)
    assert isinstance(parsed, Malformed)
    assert reason in parsed.reason
    assert parsed.fields == fields


# -- coalescing ------------------------------------------------------------------------------


def test_coalesce_keeps_the_newest_version_per_key() -> None:
    records = [rec("1-0", "a", 10), rec("2-0", "b", 11), rec("3-0", "a", 12), rec("4-0", "a", 9)]
    result = coalesce(records)
    assert [(r.key, r.version) for r in result.winners] == [("b", 11), ("a", 12)]  # in queue order
    assert dict(result.superseded) == {"a": ("1-0", "4-0")}
    assert result.superseded_count == 2
    assert result.ack_ids([result.winners[1]]) == ["3-0", "1-0", "4-0"]
    assert result.ack_ids([result.winners[0]]) == ["2-0"]


def test_coalesce_counts_a_redelivered_record_once() -> None:
    result = coalesce([rec("1-0", "a", 1), rec("1-0", "a", 1), rec("2-0", "a", 2)])
    assert [r.id for r in result.winners] == ["2-0"]
    assert dict(result.superseded) == {"a": ("1-0",)}


def test_equal_versions_are_broken_by_stream_position() -> None:
    result = coalesce([rec("5-1", "a", 7), rec("5-0", "a", 7)])
    assert [r.id for r in result.winners] == ["5-1"]


def test_coalesce_of_nothing() -> None:
    result = coalesce([])
    assert result.winners == () and result.superseded_count == 0
    assert plan_flush(result.winners).done


# -- batches ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("have", "first", "now", "expected"),
    [
        (10, 0.0, 0.0, None),  # full
        (3, 0.0, 0.0, 0.05),  # room and time left: block for the rest of the window
        (3, 0.0, 0.03, 0.02),
        (3, 0.0, 0.0495, None),  # under a millisecond left
        (3, 0.0, 1.0, None),  # window over
    ],
)
def test_read_more(have: int, first: float, now: float, expected: float | None) -> None:
    got = read_more(have, first, now, FAST)
    assert got == (pytest.approx(expected) if expected is not None else None)


# -- failures --------------------------------------------------------------------------------


def test_success_removes_the_chunk() -> None:
    plan = plan_flush([rec("1-0", "a", 1)])
    action = next_write(plan, 0.0)
    assert isinstance(action, WriteChunk) and action.index == 0
    assert after_success(plan, 0).done
    assert next_write(after_success(plan, 0), 0.0) is None


def test_transient_failure_pauses_the_whole_plan_and_keeps_the_order() -> None:
    a, b = Chunk((rec("1-0", "a", 1),)), Chunk((rec("2-0", "b", 2),))
    plan, step = after_failure(FlushPlan((a, b)), 0, FailureKind.TRANSIENT, FAST, u=0.0, now=100.0)
    assert step == RetryAfter(0.05)  # base 0.1, equal jitter with u=0: half of it
    assert [c.records for c in plan.chunks] == [a.records, b.records]
    assert plan.chunks[0].retries == 1 and plan.chunks[0].failures == 0
    assert all(c.not_before == pytest.approx(100.05) for c in plan.chunks)
    assert next_write(plan, 100.0) == WaitFor(pytest.approx(0.05))
    assert isinstance(next_write(plan, 100.05), WriteChunk)


def test_transient_failures_never_dead_letter() -> None:
    plan = plan_flush([rec("1-0", "a", 1)])
    for attempt in range(1, 50):
        plan, step = after_failure(plan, 0, FailureKind.TRANSIENT, FAST, u=1.0, now=0.0)
        assert isinstance(step, RetryAfter)
        assert step.delay == pytest.approx(min(1.0, 0.1 * 2 ** (attempt - 1)))
    assert len(plan.chunks) == 1


def test_record_failure_of_a_batch_splits_it_in_halves_written_first() -> None:
    records = tuple(rec(f"{i}-0", f"k{i}", i) for i in range(1, 6))
    other = Chunk((rec("9-0", "z", 9),))
    plan, step = after_failure(FlushPlan((Chunk(records), other)), 0, FailureKind.RECORD, FAST, 0.5, 0.0)
    assert step == Split(2, 3)
    assert [len(c.records) for c in plan.chunks] == [2, 3, 1]
    assert plan.chunks[0].records + plan.chunks[1].records == records
    assert all(c.not_before == 0.0 and c.failures == 0 for c in plan.chunks)


def test_a_lone_bad_record_goes_to_the_back_then_to_the_dead_letters() -> None:
    bad, good = Chunk((rec("1-0", "bad", 1),)), Chunk((rec("2-0", "good", 2),))
    plan, step = after_failure(FlushPlan((bad, good)), 0, FailureKind.RECORD, FAST, 0.0, 10.0)
    assert isinstance(step, RetryAfter)
    assert [c.records[0].key for c in plan.chunks] == ["good", "bad"]  # the rest is not held up
    action = next_write(plan, 10.0)
    assert isinstance(action, WriteChunk) and action.chunk.records[0].key == "good"
    plan = after_success(plan, action.index)
    plan, step = after_failure(plan, 0, FailureKind.RECORD, FAST, 0.0, 11.0)
    assert isinstance(step, RetryAfter)
    assert plan.chunks[0].failures == 2
    plan, step = after_failure(plan, 0, FailureKind.RECORD, FAST, 0.0, 12.0)
    assert step == DeadLetter(bad.records[0], 3)
    assert plan.done


def test_transient_failures_do_not_count_toward_dead_lettering() -> None:
    plan = plan_flush([rec("1-0", "a", 1)])
    plan, _ = after_failure(plan, 0, FailureKind.RECORD, FAST, 0.0, 0.0)
    for _ in range(10):
        plan, _ = after_failure(plan, 0, FailureKind.TRANSIENT, FAST, 0.0, 0.0)
    assert plan.chunks[0].failures == 1
    plan, step = after_failure(plan, 0, FailureKind.RECORD, FAST, 0.0, 0.0)
    assert isinstance(step, RetryAfter)
    plan, step = after_failure(plan, 0, FailureKind.RECORD, FAST, 0.0, 0.0)
    assert isinstance(step, DeadLetter) and step.attempts == 3


def test_max_attempts_one_dead_letters_at_the_first_lone_failure() -> None:
    settings = FlusherSettings(max_attempts=1)
    plan, step = after_failure(plan_flush([rec("1-0", "a", 1)]), 0, FailureKind.RECORD, settings, 0.0, 0.0)
    assert isinstance(step, DeadLetter) and plan.done


@pytest.mark.parametrize(
    ("attempt", "u", "expected"),
    [(1, 0.0, 0.05), (1, 1.0, 0.1), (2, 1.0, 0.2), (3, 0.5, 0.3), (4, 1.0, 0.8), (5, 1.0, 1.0), (500, 0.0, 0.5)],
)
def test_backoff(attempt: int, u: float, expected: float) -> None:
    assert backoff(attempt, FAST, u) == pytest.approx(expected)


# -- backpressure ----------------------------------------------------------------------------


def test_raise_mode_never_waits() -> None:
    assert when_queue_full(0, 0.0, WriteBehindSettings(when_full=WhenFull.RAISE)) is None


@pytest.mark.parametrize(
    ("attempt", "waited", "expected"),
    [(0, 0.0, 0.005), (1, 0.01, 0.01), (4, 0.1, 0.08), (5, 0.2, 0.1), (30, 0.5, 0.1), (9, 0.97, 0.03), (9, 1.0, None)],
)
def test_wait_mode_polls_with_backoff_within_max_wait(attempt: int, waited: float, expected: float | None) -> None:
    got = when_queue_full(attempt, waited, WriteBehindSettings(max_wait=1.0))
    assert got == (pytest.approx(expected) if expected is not None else None)


def test_a_zero_max_wait_raises_at_once() -> None:
    assert when_queue_full(0, 0.0, WriteBehindSettings(max_wait=0.0)) is None


# -- consumers -------------------------------------------------------------------------------


def test_idle_consumers_with_nothing_pending_are_forgotten_but_never_me() -> None:
    settings = FlusherSettings(forget_consumers_after=60.0)
    consumers = [
        ConsumerInfo("me", 0, 1000.0),
        ConsumerInfo("dead-empty", 0, 61.0),
        ConsumerInfo("dead-with-work", 3, 1000.0),
        ConsumerInfo("recent", 0, 5.0),
    ]
    assert consumers_to_forget(consumers, "me", settings) == ["dead-empty"]
    assert consumers_to_forget(consumers, "me", FlusherSettings(forget_consumers_after=0)) == []
