"""The fill loop's planner (readscale._core.cache.fill.plan_fill), without I/O: its table
exhaustively, its invariants over every run Hypothesis can draw, and a reference model
of the loop as the driver ran it before the planner (the same step wherever the bounded
attempts do not apply)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from readscale._core.cache.fill import (
    MAX_LEASE_ATTEMPTS,
    Begin,
    FillRequest,
    LeaseFailed,
    LeaseFound,
    LeaseHeld,
    LeaseWon,
    Load,
    LoadReason,
    ReadBack,
    ReadFilled,
    Seen,
    Serve,
    Step,
    TakeLease,
    WaitFailed,
    WaitForFill,
    Woken,
    plan_fill,
)

LEASE_TTL = 5.0
DEADLINE = 100.0
EVERY_SEEN: list[Seen] = [
    Begin(),
    LeaseWon("tok", None),
    LeaseWon("tok", 42),
    LeaseHeld(),
    LeaseFound(True),
    LeaseFound(False),
    LeaseFailed(),
    Woken(),
    WaitFailed(),
    ReadBack(True),
    ReadBack(False),
]
EVERY_REQUEST = [
    FillRequest(uses_l2=uses_l2, coordinated=coordinated, lease_ttl=LEASE_TTL, deadline=DEADLINE)
    for uses_l2, coordinated in itertools.product((False, True), repeat=2)
]
TIMES = [0.0, DEADLINE - LEASE_TTL - 1, DEADLINE - 1.0, DEADLINE - 1e-9, DEADLINE, DEADLINE + 1.0]


def expected(request: FillRequest, seen: Seen, now: float, attempt: int) -> Step:
    """docs/architecture.md §6, row by row."""
    if isinstance(seen, Begin):
        if not request.uses_l2:
            return Load(None, None, LoadReason.LOCAL)
        if not request.coordinated:
            return Load(None, None, LoadReason.UNCOORDINATED)
        return TakeLease(LEASE_TTL)
    if isinstance(seen, LeaseFailed):
        return Load(None, None, LoadReason.FAIL_OPEN)
    if isinstance(seen, LeaseFound | ReadBack) and seen.servable:
        return Serve()
    if isinstance(seen, LeaseFound):
        return Load(None, None, LoadReason.REPLACE_UNSERVABLE)
    if isinstance(seen, LeaseWon):
        return Load(seen.token, seen.floor_lsn, LoadReason.LEASE_WON)
    if isinstance(seen, LeaseHeld):
        if now >= DEADLINE:
            return Load(None, None, LoadReason.WAITED_OUT)
        return WaitForFill(min(DEADLINE - now, LEASE_TTL))
    if isinstance(seen, Woken):
        return ReadFilled()
    assert isinstance(seen, ReadBack | WaitFailed)
    if attempt >= MAX_LEASE_ATTEMPTS:
        return Load(None, None, LoadReason.TOO_MANY_ATTEMPTS)
    return TakeLease(LEASE_TTL)


def test_every_row_of_the_table() -> None:
    cases = 0
    for request, seen, now, attempt in itertools.product(
        EVERY_REQUEST, EVERY_SEEN, TIMES, range(MAX_LEASE_ATTEMPTS + 3)
    ):
        assert plan_fill(request, seen, now=now, attempt=attempt) == expected(request, seen, now, attempt), (
            request,
            seen,
            now,
            attempt,
        )
        cases += 1
    assert cases == 4 * 11 * 6 * (MAX_LEASE_ATTEMPTS + 3)


def test_which_loads_hold_a_ticket() -> None:
    ticketed = {r for r in LoadReason if r.with_ticket}
    assert ticketed == {
        LoadReason.UNCOORDINATED,
        LoadReason.REPLACE_UNSERVABLE,
        LoadReason.WAITED_OUT,
        LoadReason.TOO_MANY_ATTEMPTS,
    }


# -- runs --------------------------------------------------------------------------------


@dataclass
class Run:
    steps: list[Step]
    seen: list[Seen]
    times: list[float]
    leases: int


@st.composite
def runs(draw: st.DrawFn) -> tuple[FillRequest, Run]:
    """A fill driven to its end: each observation is one the step it answers can give,
    and time moves forward by drawn amounts (a wait may return at once or time out)."""
    request = FillRequest(
        uses_l2=draw(st.booleans()),
        coordinated=draw(st.booleans()),
        lease_ttl=draw(st.sampled_from([0.01, 1.0, 5.0, 30.0])),
        deadline=draw(st.sampled_from([0.0, 0.5, 6.0, 60.0])),
    )
    now = 0.0
    seen: Seen = Begin()
    run = Run([], [], [], 0)
    for _ in range(10 * MAX_LEASE_ATTEMPTS + 10):
        step = plan_fill(request, seen, now=now, attempt=run.leases)
        run.steps.append(step)
        run.seen.append(seen)
        run.times.append(now)
        if isinstance(step, Serve | Load):
            return request, run
        if isinstance(step, TakeLease):
            run.leases += 1
            seen = draw(
                st.sampled_from([LeaseHeld(), LeaseFailed(), LeaseFound(True), LeaseFound(False)])
                | st.builds(LeaseWon, st.just("tok"), st.none() | st.integers(0, 2**64 - 1))
            )
        elif isinstance(step, WaitForFill):
            now += draw(st.sampled_from([0.0, step.timeout / 2, step.timeout]))
            seen = draw(st.sampled_from([Woken(), WaitFailed()]))
        else:
            assert isinstance(step, ReadFilled)
            seen = ReadBack(draw(st.booleans()))
        now += draw(st.sampled_from([0.0, 0.001, 0.5]))
    raise AssertionError(f"the loop did not end: {run.steps[-5:]}")


@settings(max_examples=400)
@given(runs())
def test_every_run_ends_within_the_lease_attempts(case: tuple[FillRequest, Run]) -> None:
    _, run = case
    assert isinstance(run.steps[-1], Serve | Load)
    assert run.leases <= MAX_LEASE_ATTEMPTS


@settings(max_examples=400)
@given(runs())
def test_a_load_carries_a_token_exactly_after_a_won_lease(case: tuple[FillRequest, Run]) -> None:
    _, run = case
    last = run.steps[-1]
    if isinstance(last, Load):
        won = isinstance(run.seen[-1], LeaseWon)
        assert (last.token is not None) == won
        assert (last.reason is LoadReason.LEASE_WON) == won
    # No won lease is left unused: it is always the run's last observation.
    assert not any(isinstance(s, LeaseWon) for s in run.seen[:-1])


@settings(max_examples=400)
@given(runs())
def test_waits_are_positive_and_bounded_by_the_lease_and_the_deadline(case: tuple[FillRequest, Run]) -> None:
    request, run = case
    for step, now in zip(run.steps, run.times, strict=True):
        if isinstance(step, WaitForFill):
            assert 0 < step.timeout <= request.lease_ttl
            assert step.timeout <= request.deadline - now


@settings(max_examples=400)
@given(runs())
def test_past_the_deadline_a_lease_held_elsewhere_means_loading_without_it(case: tuple[FillRequest, Run]) -> None:
    request, run = case
    for seen, step, now in zip(run.seen, run.steps, run.times, strict=True):
        if isinstance(seen, LeaseHeld) and now >= request.deadline:
            assert step == Load(None, None, LoadReason.WAITED_OUT)


@settings(max_examples=400)
@given(runs())
def test_uncoordinated_fills_take_no_lease_and_a_failing_l2_never_waits(case: tuple[FillRequest, Run]) -> None:
    request, run = case
    if not (request.uses_l2 and request.coordinated):
        assert run.leases == 0
        assert len(run.steps) == 1
    for seen, step in zip(run.seen, run.steps, strict=True):
        if isinstance(seen, LeaseFailed):
            assert step == Load(None, None, LoadReason.FAIL_OPEN)
        if isinstance(seen, WaitFailed):
            assert isinstance(step, TakeLease | Load)


# -- the reference model: the loop as the driver ran it before the planner ----------------------


def reference(request: FillRequest, seen: Seen, now: float) -> Step:
    """``AsyncFillMixin._fill_once`` before the planner, as a state machine: the same
    branches in the same order, with no bound on lease attempts."""
    if isinstance(seen, Begin):
        if not request.uses_l2:
            return Load(None, None, LoadReason.LOCAL)  # _load_and_store(right=None)
        if not request.coordinated:
            return Load(None, None, LoadReason.UNCOORDINATED)  # _fill_with_ticket
        return TakeLease(request.lease_ttl)  # the loop's first lease (after the breaker check)
    if isinstance(seen, LeaseFailed):
        return Load(None, None, LoadReason.FAIL_OPEN)  # _load_unstored
    if isinstance(seen, LeaseFound):
        return Serve() if seen.servable else Load(None, None, LoadReason.REPLACE_UNSERVABLE)
    if isinstance(seen, LeaseWon):
        return Load(seen.token, seen.floor_lsn, LoadReason.LEASE_WON)
    if isinstance(seen, LeaseHeld):
        remaining = request.deadline - now
        if remaining <= 0:
            return Load(None, None, LoadReason.WAITED_OUT)
        return WaitForFill(min(remaining, request.lease_ttl))
    if isinstance(seen, WaitFailed):
        return TakeLease(request.lease_ttl)  # `continue`
    if isinstance(seen, Woken):
        return ReadFilled()
    assert isinstance(seen, ReadBack)
    return Serve() if seen.servable else TakeLease(request.lease_ttl)


@settings(max_examples=400)
@given(runs())
def test_the_planner_agrees_with_the_old_loop_below_the_attempt_bound(case: tuple[FillRequest, Run]) -> None:
    request, run = case
    leases = 0
    for seen, step, now in zip(run.seen, run.steps, run.times, strict=True):
        if leases < MAX_LEASE_ATTEMPTS:
            assert step == reference(request, seen, now)
        elif step != reference(request, seen, now):
            assert step == Load(None, None, LoadReason.TOO_MANY_ATTEMPTS)
        if isinstance(step, TakeLease):
            leases += 1


def test_a_wait_that_fails_at_once_ends_the_loop_after_the_bounded_attempts() -> None:
    """The one change from the old loop: a wait that fails at once no longer sends it
    back to the lease until the wait budget is spent (time does not move here)."""
    request = FillRequest(uses_l2=True, coordinated=True, lease_ttl=LEASE_TTL, deadline=DEADLINE)
    seen: Seen = Begin()
    leases = 0
    old_leases = 0
    for _ in range(100):
        step = plan_fill(request, seen, now=0.0, attempt=leases)
        if isinstance(reference(request, seen, 0.0), TakeLease):
            old_leases += 1
        if isinstance(step, Load):
            break
        if isinstance(step, TakeLease):
            leases += 1
            seen = LeaseHeld()
        else:
            assert isinstance(step, WaitForFill)
            seen = WaitFailed()
    assert step == Load(None, None, LoadReason.TOO_MANY_ATTEMPTS)
    assert leases == MAX_LEASE_ATTEMPTS
    assert old_leases == MAX_LEASE_ATTEMPTS + 1  # the old loop would have gone on
