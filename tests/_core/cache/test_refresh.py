"""The background refresh's planner (readscale._core.cache.refresh.plan_refresh), without
I/O: its table exhaustively, its invariants over every run Hypothesis can draw, and a
reference model of the refresh as the driver ran it before the planner (the same outcome
on every run)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from readscale._core.cache.refresh import (
    L2Away,
    Refresh,
    RefreshBegin,
    RefreshLeaseHeld,
    RefreshLeaseWon,
    RefreshRequest,
    RefreshRight,
    RefreshSeen,
    RefreshStep,
    Skip,
    SkipReason,
    TakeRefreshLease,
    TakeTicket,
    TicketTaken,
    plan_refresh,
)

LEASE_TTL = 5.0
EVERY_SEEN: list[RefreshSeen] = [
    RefreshBegin(),
    RefreshLeaseWon("tok"),
    RefreshLeaseHeld(),
    TicketTaken("t~tok", None),
    TicketTaken("t~tok", 42),
    L2Away(),
]
EVERY_REQUEST = [
    RefreshRequest(uses_l2=uses_l2, leases=leases, lease_ttl=LEASE_TTL)
    for uses_l2, leases in itertools.product((False, True), repeat=2)
]


def expected(request: RefreshRequest, seen: RefreshSeen) -> RefreshStep:
    """docs/architecture.md §6 (the refresh), row by row."""
    if isinstance(seen, RefreshBegin):
        if not request.uses_l2:
            return Refresh(None, None, RefreshRight.LOCAL)
        return TakeRefreshLease(LEASE_TTL) if request.leases else TakeTicket(LEASE_TTL)
    if isinstance(seen, RefreshLeaseWon):
        return Refresh(seen.token, None, RefreshRight.REFRESH_LEASE)
    if isinstance(seen, RefreshLeaseHeld):
        return Skip(SkipReason.HELD_ELSEWHERE)
    if isinstance(seen, TicketTaken):
        return Refresh(seen.token, seen.floor_lsn, RefreshRight.TICKET)
    assert isinstance(seen, L2Away)
    return Skip(SkipReason.L2_AWAY)


def test_every_row_of_the_table() -> None:
    cases = 0
    for request, seen in itertools.product(EVERY_REQUEST, EVERY_SEEN):
        assert plan_refresh(request, seen) == expected(request, seen), (request, seen)
        cases += 1
    assert cases == 4 * 6


# -- runs --------------------------------------------------------------------------------


@dataclass
class Run:
    steps: list[RefreshStep]
    seen: list[RefreshSeen]


@st.composite
def runs(draw: st.DrawFn) -> tuple[RefreshRequest, Run]:
    """A refresh driven to its end: each observation is one the step it answers can give."""
    request = RefreshRequest(
        uses_l2=draw(st.booleans()), leases=draw(st.booleans()), lease_ttl=draw(st.sampled_from([0.01, 5.0]))
    )
    seen: RefreshSeen = RefreshBegin()
    run = Run([], [])
    for _ in range(5):
        step = plan_refresh(request, seen)
        run.steps.append(step)
        run.seen.append(seen)
        if isinstance(step, Refresh | Skip):
            return request, run
        if isinstance(step, TakeRefreshLease):
            seen = draw(st.sampled_from([RefreshLeaseHeld(), L2Away()]) | st.builds(RefreshLeaseWon, st.just("tok")))
        else:
            assert isinstance(step, TakeTicket)
            seen = draw(
                st.just(L2Away()) | st.builds(TicketTaken, st.just("t~tok"), st.none() | st.integers(0, 2**64 - 1))
            )
    raise AssertionError(f"the refresh did not end: {run.steps}")


@settings(max_examples=300)
@given(runs())
def test_every_run_ends_after_at_most_one_right_asked_for(case: tuple[RefreshRequest, Run]) -> None:
    _, run = case
    assert isinstance(run.steps[-1], Refresh | Skip)
    assert sum(isinstance(s, TakeRefreshLease | TakeTicket) for s in run.steps) <= 1


@settings(max_examples=300)
@given(runs())
def test_a_refresh_carries_the_right_just_taken_and_none_without_an_l2(case: tuple[RefreshRequest, Run]) -> None:
    request, run = case
    last, seen = run.steps[-1], run.seen[-1]
    if not isinstance(last, Refresh):
        return
    if last.right is RefreshRight.LOCAL:
        assert not request.uses_l2
        assert (last.token, last.floor_lsn) == (None, None)
    elif last.right is RefreshRight.REFRESH_LEASE:
        assert isinstance(seen, RefreshLeaseWon)
        assert (last.token, last.floor_lsn) == (seen.token, None)
    else:
        assert isinstance(seen, TicketTaken)
        assert (last.token, last.floor_lsn) == (seen.token, seen.floor_lsn)


@settings(max_examples=300)
@given(runs())
def test_no_right_without_an_l2_no_lease_without_leases_no_load_when_the_l2_is_away(
    case: tuple[RefreshRequest, Run],
) -> None:
    request, run = case
    if not request.uses_l2:
        assert run.steps == [Refresh(None, None, RefreshRight.LOCAL)]
    if not request.leases:
        assert not any(isinstance(s, TakeRefreshLease) for s in run.steps)
    if isinstance(run.seen[-1], L2Away):
        assert run.steps[-1] == Skip(SkipReason.L2_AWAY)
    if isinstance(run.seen[-1], RefreshLeaseHeld):
        assert run.steps[-1] == Skip(SkipReason.HELD_ELSEWHERE)


def reference(request: RefreshRequest, answers: list[RefreshSeen]) -> tuple[str, str | None, int | None]:
    """The refresh as the driver ran it before the planner (AsyncFiller._refresh): what it
    did (load with which right, or nothing), given the L2's answer to the one call."""
    if not request.uses_l2:
        return ("load", None, None)
    answer = answers[0]
    if isinstance(answer, L2Away):
        return ("nothing", None, None)
    if request.leases:
        if isinstance(answer, RefreshLeaseHeld):
            return ("nothing", None, None)
        assert isinstance(answer, RefreshLeaseWon)
        return ("load", answer.token, None)
    assert isinstance(answer, TicketTaken)
    return ("load", answer.token, answer.floor_lsn)


@settings(max_examples=300)
@given(runs())
def test_the_planner_does_what_the_driver_did(case: tuple[RefreshRequest, Run]) -> None:
    request, run = case
    last = run.steps[-1]
    outcome = ("load", last.token, last.floor_lsn) if isinstance(last, Refresh) else ("nothing", None, None)
    assert outcome == reference(request, run.seen[1:])
