"""Replica choice, the read plan, the fallback token bucket and settings (pure)."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from readscale._core.replicas.routing import (
    MAX_WAIT_STEP,
    FallBack,
    ReadRequest,
    Refuse,
    ReplicaView,
    SettleFirst,
    StayOn,
    TokenBucket,
    TryReplica,
    UsePrimary,
    Wait,
    choose_replica,
    eligible,
    plan_fallback,
    plan_read,
    plan_unsettled,
    wait_step,
)
from readscale._core.replicas.settings import (
    BoundedStaleness,
    HealthPolicy,
    PrimaryProtection,
    ReplicaSettings,
    TimeWindow,
)
from readscale.errors import ConfigurationError


def view(
    name: str, lsn: int | None = 100, *, routable: bool = True, stale: float | None = 0.0, **kw: float
) -> ReplicaView:
    return ReplicaView(name, routable, lsn, stale, int(kw.get("inflight", 0)))


@pytest.mark.parametrize(
    ("replica", "request_", "ok"),
    [
        (view("r1", 100), ReadRequest(), True),
        (view("r1", None), ReadRequest(), True),
        (view("r1", 100), ReadRequest(min_lsn=100), True),
        (view("r1", 99), ReadRequest(min_lsn=100), False),
        (view("r1", None), ReadRequest(min_lsn=1), False),
        (view("r1", 100, routable=False), ReadRequest(), False),
        (view("r1", 100, stale=0.5), ReadRequest(max_staleness=1.0), True),
        (view("r1", 100, stale=1.5), ReadRequest(max_staleness=1.0), False),
        (view("r1", 100, stale=None), ReadRequest(max_staleness=1.0), False),
        (view("r1", 100, stale=0.5), ReadRequest(min_lsn=101, max_staleness=1.0), False),
    ],
)
def test_eligible(replica: ReplicaView, request_: ReadRequest, ok: bool) -> None:
    assert eligible(replica, request_) is ok


replica_views = st.lists(
    st.builds(
        ReplicaView,
        name=st.sampled_from(["r1", "r2", "r3", "r4", "r5"]),
        routable=st.booleans(),
        replay_lsn=st.one_of(st.none(), st.integers(0, 1000)),
        staleness=st.one_of(st.none(), st.floats(0, 10)),
        inflight=st.integers(0, 20),
    ),
    max_size=5,
    unique_by=lambda v: v.name,
)
read_requests = st.builds(
    ReadRequest,
    min_lsn=st.one_of(st.none(), st.integers(0, 1000)),
    max_staleness=st.one_of(st.none(), st.floats(0, 10)),
)


@given(replica_views, read_requests, st.integers(0, 2**32), st.sets(st.sampled_from(["r1", "r2", "r3"])))
def test_choice_is_an_eligible_replica_or_none_when_there_is_none(
    views: list[ReplicaView], request_: ReadRequest, seed: int, exclude: set[str]
) -> None:
    chosen = choose_replica(views, request_, random.Random(seed), exclude)
    candidates = {v.name for v in views if v.name not in exclude and eligible(v, request_)}
    if not candidates:
        assert chosen is None
    else:
        assert chosen in candidates


def test_power_of_two_choices_prefers_the_less_loaded_and_spreads_load() -> None:
    rng = random.Random(1)
    busy, idle = view("busy", inflight=10), view("idle", inflight=0)
    assert {choose_replica([busy, idle], ReadRequest(), rng) for _ in range(50)} == {"idle"}
    equal = [view(f"r{i}") for i in range(4)]
    counts = {v.name: 0 for v in equal}
    for _ in range(4000):
        counts[choose_replica(equal, ReadRequest(), rng) or ""] += 1
    # Equal load and position: the first draw wins ties, so reads spread evenly.
    assert all(800 < n < 1200 for n in counts.values()), counts
    ahead, behind = view("ahead", 200), view("behind", 100)
    assert {choose_replica([behind, ahead], ReadRequest(), rng) for _ in range(50)} == {"ahead"}, "tie: fresher"


def test_plan_read_steps() -> None:
    rng = random.Random(0)
    fresh, behind = view("r1", 200), view("r2", 50)
    need = ReadRequest(min_lsn=100)
    assert plan_read([fresh, behind], need, now=0, wait_until=1, attempt=0, rng=rng) == TryReplica("r1")
    assert plan_read([behind], need, now=0, wait_until=1, attempt=0, rng=rng) == Wait(wait_step(0))
    assert plan_read([behind], need, now=0.9995, wait_until=1, attempt=5, rng=rng) == Wait(pytest.approx(0.0005))
    step = plan_read([behind], need, now=1, wait_until=1, attempt=9, rng=rng)
    assert isinstance(step, FallBack)
    assert "replayed" in step.reason
    gone = view("r1", 500, routable=False)
    assert isinstance(plan_read([gone], need, now=0, wait_until=1, attempt=0, rng=rng), FallBack), "nothing to wait for"
    assert isinstance(plan_read([fresh], need, now=0, wait_until=1, attempt=0, rng=rng, exclude={"r1"}), FallBack)
    stale = view("r1", 500, stale=3.0)
    assert isinstance(
        plan_read([stale], ReadRequest(max_staleness=1), now=2, wait_until=1, attempt=0, rng=rng), FallBack
    )
    assert plan_read([], ReadRequest(), now=0, wait_until=1, attempt=0, rng=rng) == FallBack("no replica is available")


@pytest.mark.parametrize(
    ("unsettled", "sticky", "step"),
    [
        ((), True, None),
        (("r1",), True, StayOn("r1")),
        (("r1",), False, SettleFirst(frozenset({"r1"}))),  # a process-wide context: no herding
        (("r2",), True, SettleFirst(frozenset({"r2"}))),  # behind the read's target
        (("r3",), True, SettleFirst(frozenset({"r3"}))),  # out of rotation
        (("r1", "r2"), True, SettleFirst(frozenset({"r1", "r2"}))),
        (("primary",), True, SettleFirst(frozenset({"primary"}))),  # never stays on the primary
        (("gone",), True, SettleFirst(frozenset({"gone"}))),  # a node routing does not know
    ],
)
def test_a_session_stays_on_its_unsettled_node_only_when_that_node_may_serve_the_read(
    unsettled: tuple[str, ...], sticky: bool, step: StayOn | SettleFirst | None
) -> None:
    views = [view("r1", 200), view("r2", 50), view("r3", 500, routable=False)]
    assert plan_unsettled(unsettled, views, ReadRequest(min_lsn=100), sticky=sticky) == step


def test_wait_steps_back_off_to_a_ceiling() -> None:
    steps = [wait_step(i) for i in range(40)]
    assert steps[:4] == [0.001, 0.002, 0.004, 0.008]
    assert steps == sorted(steps)
    assert max(steps) == MAX_WAIT_STEP


@given(
    st.floats(0, 1000),
    st.integers(0, 50),
    st.lists(st.floats(0, 5), min_size=1, max_size=200),
)
def test_bucket_never_grants_more_than_burst_plus_rate_times_elapsed(
    rate: float, burst: int, gaps: list[float]
) -> None:
    bucket = TokenBucket.full(rate, burst, 0.0)
    now, granted = 0.0, 0
    for gap in gaps:
        now += gap
        ok, bucket = bucket.take(now)
        granted += ok
        assert granted <= burst + rate * now + 1e-6
        assert 0 <= bucket.tokens <= burst


def test_bucket_wait_time() -> None:
    bucket = TokenBucket.full(10, 1, 0.0)
    ok, bucket = bucket.take(0.0)
    assert ok
    assert bucket.wait_time(0.0) == pytest.approx(0.1)
    assert bucket.wait_time(0.05) == pytest.approx(0.05)
    assert bucket.wait_time(0.2) == 0.0
    assert TokenBucket.full(0, 0, 0.0).wait_time(5.0) == math.inf


def test_plan_fallback() -> None:
    full = TokenBucket.full(1, 2, 0.0)
    step, bucket = plan_fallback(full, now=0, give_up_at=0.5, primary_up=True, attempt=0, retry_hint=0.5)
    assert step == UsePrimary()
    step, bucket = plan_fallback(bucket, now=0, give_up_at=0.5, primary_up=True, attempt=0, retry_hint=0.5)
    assert step == UsePrimary()
    step, bucket = plan_fallback(bucket, now=0, give_up_at=0.5, primary_up=True, attempt=3, retry_hint=0.5)
    assert step == Wait(wait_step(3)), "over the limit, keep waiting while there is time"
    step, _ = plan_fallback(bucket, now=0.5, give_up_at=0.5, primary_up=True, attempt=3, retry_hint=0.5)
    assert isinstance(step, Refuse)
    assert step.retry_after == pytest.approx(0.5), "the next token is due in half a second"
    step, _ = plan_fallback(bucket, now=1.0, give_up_at=0.5, primary_up=True, attempt=3, retry_hint=0.5)
    assert step == UsePrimary(), "refilled"
    step, untouched = plan_fallback(full, now=0, give_up_at=1, primary_up=False, attempt=0, retry_hint=0.75)
    assert step == Refuse("the primary is unreachable and no replica can serve this read", 0.75)
    assert untouched == full, "no token is spent on a primary that is down"
    never, _ = plan_fallback(TokenBucket.full(0, 0, 0), now=5, give_up_at=1, primary_up=True, attempt=0, retry_hint=0.2)
    assert isinstance(never, Refuse)
    assert never.retry_after == 1.0


# -- settings -----------------------------------------------------------------------------


def test_settings_name_replicas_and_validate() -> None:
    settings = ReplicaSettings(primary="dbname=p", replicas=["dbname=a", "dbname=b"])
    assert settings.replica_dsns == (("r1", "dbname=a"), ("r2", "dbname=b"))
    named = ReplicaSettings(primary="dbname=p", replicas={"east": "dbname=a"})
    assert named.replica_dsns == (("east", "dbname=a"),)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"primary": ""}, "primary DSN"),
        ({"replicas": "dbname=a"}, "not one string"),
        ({"replicas": {"primary": "dbname=a"}}, "reserved"),
        ({"replicas": ["  "]}, "empty DSN"),
        ({"wait_budget": -1}, "wait_budget"),
        ({"poll_interval": 0}, "poll_interval"),
        ({"token_source": "flush"}, "token_source"),
        ({"min_pool_size": 5, "max_pool_size": 2}, "pool sizes"),
        ({"default_mode": "session"}, "read mode"),
    ],
)
def test_settings_refuse_bad_values(kwargs: dict[str, object], match: str) -> None:
    base: dict[str, object] = {"primary": "dbname=p", "replicas": ["dbname=a"]}
    with pytest.raises(ConfigurationError, match=match):
        ReplicaSettings(**{**base, **kwargs})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "build",
    [
        lambda: HealthPolicy(eject_after=0),
        lambda: HealthPolicy(max_lag=0),
        lambda: HealthPolicy(max_lag_bytes=0),
        lambda: HealthPolicy(max_ejected_fraction=1.5),
        lambda: PrimaryProtection(rate=-1),
        lambda: PrimaryProtection(burst=-1),
        lambda: PrimaryProtection(max_wait=-1),
        lambda: BoundedStaleness(-1),
        lambda: TimeWindow(-0.1),
        lambda: BoundedStaleness(float("nan")),
    ],
)
def test_policies_refuse_bad_values(build) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigurationError):
        build()
