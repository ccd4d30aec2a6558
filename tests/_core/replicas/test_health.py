"""Lag from the primary's LSN history, replica checks and health hysteresis (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from readscale._core.replicas.causal import ClusterIdentity
from readscale._core.replicas.health import (
    NodeHealth,
    PrimaryHistory,
    ReplicaSample,
    assess_replica,
    ejection_allowance,
    next_health,
)
from readscale._core.replicas.settings import HealthPolicy

IDENTITY = ClusterIdentity(99, 1)
POLICY = HealthPolicy(eject_after=3, readmit_after=2, max_lag=5.0, max_ejected_fraction=0.5)


def history(*samples: tuple[float, int]) -> PrimaryHistory:
    h = PrimaryHistory()
    for t, lsn in samples:
        h = h.add(t, lsn)
    return h


# -- lag from the primary's history ---------------------------------------------------------


def test_an_idle_primary_never_makes_a_current_replica_lag() -> None:
    # The primary wrote at t=0 and then nothing for an hour: a replica at that position is
    # current, however old its last replayed transaction (the trap of replay timestamps).
    h = history(*[(float(t), 1000) for t in range(0, 3600, 1)])
    assert h.lag(1000) == 0.0
    assert h.staleness(1000, now=3600.0) == pytest.approx(1.0), "bounded by the last sample's age"
    assert len(h.lsns) == 2, "a flat stretch keeps its two ends"


def test_a_paused_replica_lags_by_the_time_since_the_primary_passed_it() -> None:
    h = history((0.0, 100), (1.0, 200), (2.0, 300), (3.0, 400))
    assert h.lag(400) == 0.0
    assert h.lag(300) == pytest.approx(1.0)
    assert h.lag(250) == pytest.approx(2.0), "passed 250 between t=1 and t=2: count from t=1"
    assert h.lag(100) == pytest.approx(3.0)
    assert h.lag(50) == pytest.approx(3.0), "older than the history: at least its span"
    assert h.staleness(250, now=10.0) == pytest.approx(9.0)
    assert h.staleness(50, now=10.0) is None, "unknown, never eligible for a staleness bound"


def test_history_restarts_when_the_primary_goes_back() -> None:
    h = history((0.0, 500), (1.0, 600)).add(2.0, 10)
    assert h.lsns == (10,)
    assert h.times == (2.0,)


def test_history_is_bounded() -> None:
    h = PrimaryHistory()
    for i in range(100):
        h = h.add(float(i), i, keep=10)
    assert h.lsns == tuple(range(90, 100))


def test_empty_history_knows_nothing() -> None:
    assert PrimaryHistory().lag(5) is None
    assert PrimaryHistory().staleness(5, 1.0) is None
    assert PrimaryHistory().latest is None


@given(st.lists(st.tuples(st.floats(0, 10), st.integers(0, 50)), min_size=1, max_size=40), st.integers(0, 3000))
def test_staleness_is_conservative(steps: list[tuple[float, int]], replay: int) -> None:
    """Whatever the replica replayed, the primary was at or before it at reflected_at."""
    h, t, lsn = PrimaryHistory(), 0.0, 0
    for dt, dl in steps:
        t, lsn = t + dt, lsn + dl
        h = h.add(t, lsn)
    since = h.reflected_at(replay)
    if since is None:
        assert replay < h.lsns[0]
    else:
        assert all(lsn_i <= replay for t_i, lsn_i in zip(h.times, h.lsns, strict=True) if t_i <= since)
        assert h.lag(replay) is not None
        assert h.lag(replay) >= 0.0


# -- checks ---------------------------------------------------------------------------------


def sample(**kw: object) -> ReplicaSample:
    base: dict[str, object] = {
        "in_recovery": True,
        "system_identifier": 99,
        "receive_lsn": 400,
        "replay_lsn": 400,
        "receiver_status": "streaming",
        "timeline": 1,
        "replay_timestamp_age": 3600.0,
    }
    return ReplicaSample(**{**base, **kw})  # type: ignore[arg-type]


H = history((0.0, 100), (10.0, 200), (20.0, 400))


@pytest.mark.parametrize(
    ("replica", "kind"),
    [
        (None, "unreachable"),
        (sample(), "ok"),
        (sample(system_identifier=1), "foreign"),
        (sample(in_recovery=False), "promoted"),
        (sample(replay_lsn=None), "lagging"),
        (sample(replay_lsn=200), "lagging"),
        (sample(replay_lsn=300), "lagging"),
        (sample(replay_lsn=399, replay_timestamp_age=0.0), "lagging"),
    ],
)
def test_assess_replica(replica: ReplicaSample | None, kind: str) -> None:
    assert assess_replica(replica, identity=IDENTITY, history=H, policy=POLICY).kind == kind


def test_lag_in_bytes_and_seconds_and_an_old_replay_timestamp_is_not_lag() -> None:
    check = assess_replica(sample(replay_lsn=400), identity=IDENTITY, history=H, policy=POLICY)
    assert (check.kind, check.lag_bytes, check.lag_seconds) == ("ok", 0, 0.0)
    h = history((0.0, 100), (4.0, 150))
    check = assess_replica(sample(replay_lsn=120), identity=IDENTITY, history=h, policy=POLICY)
    assert (check.kind, check.lag_bytes, check.lag_seconds) == ("ok", 30, 4.0)
    by_bytes = HealthPolicy(max_lag_bytes=10)
    assert assess_replica(sample(replay_lsn=120), identity=IDENTITY, history=h, policy=by_bytes).kind == "lagging"


# -- hysteresis and the cap ----------------------------------------------------------------


def run(checks: str, *, others_out: int = 0, total: int = 4, start: NodeHealth | None = None) -> list[str]:
    names = {"o": "ok", "u": "unreachable", "l": "lagging", "p": "promoted", "f": "foreign"}
    health = start or NodeHealth()
    seen = []
    for c in checks:
        health = next_health(health, names[c], others_out=others_out, total=total, policy=POLICY)  # type: ignore[arg-type]
        seen.append(health.status[0])
    return seen


@pytest.mark.parametrize(
    ("checks", "statuses", "why"),
    [
        ("lll", "aae", "ejected after three bad checks"),
        ("llol", "aaaa", "a good check resets the run"),
        ("llloo", "aaeea", "readmitted after two good ones"),
        ("lllolo", "aaeeee", "a bad check resets the good run"),
        ("uuu", "aad", "unreachable: down"),
        ("p", "d", "promoted: down at once"),
        ("f", "d", "another cluster: down at once"),
        ("llluuu", "aaeddd", "an ejected replica that stops answering goes down at once: its bad run is long"),
        ("uuulll", "aadddd", "a down replica that lags stays out"),
        ("uuuoo", "aadda", "a down replica comes back after two good checks"),
    ],
)
def test_hysteresis(checks: str, statuses: str, why: str) -> None:
    assert "".join(run(checks)) == statuses, why


def test_the_cap_keeps_a_lagging_replica_in_but_not_a_dead_one() -> None:
    assert ejection_allowance(4, POLICY) == 2
    assert ejection_allowance(2, POLICY) == 1
    assert ejection_allowance(1, POLICY) == 1, "at least one may always go"
    assert ejection_allowance(0, POLICY) == 0
    assert run("lll", others_out=2, total=4) == ["a", "a", "a"]
    kept = next_health(NodeHealth(bad=2), "lagging", others_out=1, total=2, policy=POLICY)
    assert kept.status == "admitted"
    assert kept.reason is not None
    assert "at most 1" in kept.reason
    assert run("uuu", others_out=3, total=4) == ["a", "a", "d"], "unreachable is not capped"
    assert run("p", others_out=3, total=4) == ["d"]


class HealthMachine(RuleBasedStateMachine):
    """Random checks on four replicas against the rules, checked after every step."""

    def __init__(self) -> None:
        super().__init__()
        self.health = [NodeHealth() for _ in range(4)]
        self.bad_run = [0] * 4
        self.good_run = [0] * 4

    @rule(i=st.integers(0, 3), kind=st.sampled_from(["ok", "unreachable", "lagging", "promoted", "foreign"]))
    def check(self, i: int, kind: str) -> None:
        others_out = sum(1 for j, h in enumerate(self.health) if j != i and not h.routable)
        before = self.health[i]
        after = next_health(before, kind, others_out=others_out, total=4, policy=POLICY)  # type: ignore[arg-type]
        self.bad_run[i] = 0 if kind == "ok" else self.bad_run[i] + 1
        self.good_run[i] = self.good_run[i] + 1 if kind == "ok" else 0
        if before.routable and not after.routable and kind in ("lagging", "unreachable"):
            assert self.bad_run[i] >= POLICY.eject_after, "never out before eject_after bad checks"
        if not before.routable and after.routable:
            assert self.good_run[i] >= POLICY.readmit_after, "never back before readmit_after good checks"
        if kind in ("promoted", "foreign"):
            assert after.status == "down"
        self.health[i] = after

    @invariant()
    def lag_ejections_respect_the_cap(self) -> None:
        assert sum(h.status == "ejected" for h in self.health) <= ejection_allowance(4, POLICY)


TestHealthMachine = HealthMachine.TestCase
TestHealthMachine.settings = settings(max_examples=200, stateful_step_count=60, deadline=None)
