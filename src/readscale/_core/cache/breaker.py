"""A circuit breaker for the remote cache, as pure transitions.

While the cache server is down, every call would pay its timeout. After
``failure_threshold`` consecutive failures the breaker opens: calls skip the server
(the read path goes straight to the loader) until ``cooldown`` has passed; then one
call probes (half-open). A probe that succeeds closes the breaker; one that fails
re-opens it with the cooldown doubled, up to ``max_cooldown``. A probe whose outcome is
never reported (its caller was cancelled, or a path that does not report) does not hold
the breaker half-open for good: after a cooldown without an answer, another call probes.

States are frozen values; the driver keeps the current one and asks :func:`allow`
before each call and :func:`on_success` / :func:`on_failure` after it. ``now`` is a
monotonic time passed in.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Circuit(Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True, slots=True)
class BreakerSettings:
    """``max_cooldown`` is short on purpose: while the breaker is open the database
    carries every read the cache would have absorbed, so a cache that is back should be
    used again within seconds. A probe costs one call (at most the connect timeout, 250
    ms by default, when the host is black-holed) per ``max_cooldown`` of an outage."""

    failure_threshold: int = 3
    cooldown: float = 0.5
    max_cooldown: float = 2.0


@dataclass(frozen=True, slots=True)
class BreakerState:
    circuit: Circuit = Circuit.CLOSED
    failures: int = 0
    opened_at: float = 0.0
    cooldown: float = 0.0
    probing: bool = False
    #: When the probe in flight was let through (half-open).
    probed_at: float = 0.0


CLOSED = BreakerState()


def allow(state: BreakerState, now: float) -> tuple[bool, BreakerState]:
    """May a call go to the server now? Half-open lets one probe through at a time, and
    another once the one in flight has gone a cooldown without an outcome (a probe whose
    caller was cancelled never reports one: the breaker would skip the server for good,
    found in review of the fill paths)."""
    if state.circuit is Circuit.CLOSED:
        return True, state
    if state.circuit is Circuit.OPEN:
        if now - state.opened_at >= state.cooldown:
            return True, _probe(state, now)
        return False, state
    # HALF_OPEN: one probe in flight at a time, unless it went unanswered.
    if state.probing and now - state.probed_at < state.cooldown:
        return False, state
    return True, _probe(state, now)


def _probe(state: BreakerState, now: float) -> BreakerState:
    return BreakerState(Circuit.HALF_OPEN, state.failures, state.opened_at, state.cooldown, True, now)


def on_success(state: BreakerState) -> BreakerState:
    if state is CLOSED or (state.circuit is Circuit.CLOSED and state.failures == 0):
        return state
    return CLOSED


def on_failure(state: BreakerState, now: float, settings: BreakerSettings) -> BreakerState:
    failures = state.failures + 1
    if state.circuit is Circuit.HALF_OPEN:
        cooldown = min(max(state.cooldown * 2, settings.cooldown), settings.max_cooldown)
        return BreakerState(Circuit.OPEN, failures, now, cooldown)
    if state.circuit is Circuit.OPEN:
        return state
    if failures >= settings.failure_threshold:
        return BreakerState(Circuit.OPEN, failures, now, settings.cooldown)
    return BreakerState(Circuit.CLOSED, failures, 0.0, 0.0)
