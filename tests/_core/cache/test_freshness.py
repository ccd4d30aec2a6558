"""The freshness state machine, driven by Hypothesis against a small reference model."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from readscale._core.cache.entry import EntryMeta
from readscale._core.cache.freshness import Freshness, assess, jittered_ttl, l1_ttl, storage_ttl, xfetch_fires

durations = st.floats(min_value=0, max_value=1e6, allow_nan=False, allow_infinity=False)
positive = st.floats(min_value=1e-3, max_value=1e6, allow_nan=False, allow_infinity=False)
unit = st.floats(min_value=1e-12, max_value=1.0, allow_nan=False)


def reference(
    created: float, ttl: float, swr: float, sie: float, delta: float, now: float, u: float, beta: float
) -> str:
    """The rules written as plainly as possible (module docstring of freshness.py)."""
    t = max(now, created)
    f = created + ttl
    if t < f:
        return "early_refresh" if beta > 0 and delta > 0 and t - delta * beta * math.log(u) >= f else "fresh"
    over = t - f
    if over < swr:
        return "stale"
    if over < sie:
        return "stale_if_error"
    return "expired"


@settings(max_examples=2000)
@given(
    created=st.floats(min_value=1e9, max_value=2e9, allow_nan=False),
    ttl=positive,
    swr=durations,
    sie=durations,
    delta=durations,
    offset=st.floats(min_value=-100, max_value=3e6, allow_nan=False),
    u=unit,
    beta=st.floats(min_value=0, max_value=10, allow_nan=False),
)
def test_assess_matches_the_reference_model(
    created: float, ttl: float, swr: float, sie: float, delta: float, offset: float, u: float, beta: float
) -> None:
    meta = EntryMeta(created_at=created, fresh_ttl=ttl, swr=swr, sie=sie, load_time=delta)
    now = created + offset
    assert assess(meta, now, u, beta).value == reference(created, ttl, swr, sie, delta, now, u, beta)


@given(ttl=positive, swr=durations, sie=durations, delta=durations, u=unit, beta=st.floats(0, 10))
def test_states_are_monotonic_in_time(ttl: float, swr: float, sie: float, delta: float, u: float, beta: float) -> None:
    """As time passes an entry never becomes fresher: fresh -> (early) -> stale ... -> expired."""
    meta = EntryMeta(created_at=1e9, fresh_ttl=ttl, swr=swr, sie=sie, load_time=delta)
    order = {Freshness.FRESH: 0, Freshness.EARLY_REFRESH: 1, Freshness.STALE: 2, Freshness.STALE_IF_ERROR: 3,
             Freshness.EXPIRED: 4}  # fmt: skip
    times = sorted((0, ttl * 0.5, ttl * 0.99, ttl, ttl + swr, ttl + sie, ttl + max(swr, sie) + 1, 1e7))
    ranks = [order[assess(meta, 1e9 + t, u, beta)] for t in times]
    assert ranks == sorted(ranks)


def test_table_of_examples() -> None:
    meta = EntryMeta(created_at=1000.0, fresh_ttl=60.0, swr=30.0, sie=120.0, load_time=2.0)
    assert assess(meta, 1000.0, 0.5, 1.0) is Freshness.FRESH
    assert assess(meta, 990.0, 0.5, 1.0) is Freshness.FRESH  # created "in the future": age 0
    assert assess(meta, 1059.0, math.exp(-1), 1.0) is Freshness.EARLY_REFRESH  # 1 s left, gap 2 s
    assert assess(meta, 1050.0, math.exp(-1), 1.0) is Freshness.FRESH  # 10 s left, gap 2 s
    assert assess(meta, 1059.0, math.exp(-1), 0.0) is Freshness.FRESH  # beta 0 disables XFetch
    assert assess(meta, 1060.0, 0.5, 1.0) is Freshness.STALE
    assert assess(meta, 1089.9, 0.5, 1.0) is Freshness.STALE
    assert assess(meta, 1090.0, 0.5, 1.0) is Freshness.STALE_IF_ERROR
    assert assess(meta, 1180.0, 0.5, 1.0) is Freshness.EXPIRED
    assert Freshness.STALE.servable and not Freshness.STALE_IF_ERROR.servable


def test_xfetch_edge_cases() -> None:
    assert xfetch_fires(now=0.0, fresh_until=10.0, delta=1.0, beta=1.0, u=0.0)  # ln(0): always
    assert not xfetch_fires(now=0.0, fresh_until=10.0, delta=1.0, beta=1.0, u=1.0)  # ln(1) = 0
    assert not xfetch_fires(now=0.0, fresh_until=10.0, delta=0.0, beta=5.0, u=1e-9)


@given(ttl=positive, jitter=st.floats(0, 0.99), u=st.floats(0, 1))
def test_jitter_only_shortens_within_its_fraction(ttl: float, jitter: float, u: float) -> None:
    value = jittered_ttl(ttl, jitter, u)
    assert ttl * (1 - jitter) - 1e-9 <= value <= ttl


def test_storage_and_l1_ttls() -> None:
    meta = EntryMeta(created_at=1000.0, fresh_ttl=60.0, swr=30.0, sie=120.0)
    assert storage_ttl(meta, 1000.0) == 180.0  # fresh + the longer stale window
    assert storage_ttl(meta, 5000.0) == pytest.approx(0.001)
    assert l1_ttl(meta, 1000.0, None) == 60.0
    assert l1_ttl(meta, 1050.0, 30.0) == 10.0  # never past freshness
    assert l1_ttl(meta, 1000.0, 5.0) == 5.0
