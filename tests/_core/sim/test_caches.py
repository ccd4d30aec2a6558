"""The simulator's one-cache formulas and Zipf bins: exact limits, anchors, properties."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from readscale._core.sim.caches import (
    INF,
    characteristic_time,
    entry_lifetime,
    hit_ratio,
    miss_fraction,
    misses_in_run,
)
from readscale._core.sim.popularity import zipf_bins
from readscale.errors import ConfigurationError

rates = st.floats(min_value=1e-4, max_value=1e4)
times = st.floats(min_value=1e-3, max_value=1e5)
maybe_inf = st.one_of(times, st.just(INF))
mus = st.floats(min_value=0.0, max_value=100.0)


@pytest.mark.parametrize(
    ("lam", "t_c"),
    [(1.0, 1.0), (0.01, 10.0), (5.0, 0.2), (100.0, 0.001), (1e-3, 1e3)],
)
def test_pure_lru_is_ches_formula(lam: float, t_c: float) -> None:
    assert hit_ratio(lam, entry_lifetime(lam, t_c=t_c)) == pytest.approx(-math.expm1(-lam * t_c), rel=1e-9)


@pytest.mark.parametrize(("lam", "ttl"), [(1.0, 1.0), (0.01, 60.0), (20.0, 0.5), (3.0, 3600.0)])
def test_pure_ttl_is_lam_t_over_one_plus_lam_t(lam: float, ttl: float) -> None:
    assert hit_ratio(lam, entry_lifetime(lam, ttl=ttl)) == pytest.approx(lam * ttl / (1 + lam * ttl), rel=1e-12)


@pytest.mark.parametrize(("ttl", "mu"), [(10.0, 0.1), (INF, 0.5), (1.0, 100.0)])
def test_invalidation_cuts_the_lifetime(ttl: float, mu: float) -> None:
    expected = 1 / mu if math.isinf(ttl) else -math.expm1(-mu * ttl) / mu
    assert entry_lifetime(2.0, ttl=ttl, mu=mu) == pytest.approx(expected, rel=1e-12)


def test_nothing_limits_an_entry_forever() -> None:
    assert entry_lifetime(1.0) == INF
    assert hit_ratio(1.0, INF) == 1.0
    assert hit_ratio(0.0, 5.0) == 0.0


@pytest.mark.parametrize(("lam", "duration"), [(0.1, 10.0), (1.0, 5.0), (50.0, 1.0)])
def test_a_run_shorter_than_the_ttl_misses_once_per_key_at_most(lam: float, duration: float) -> None:
    assert misses_in_run(lam, 3600.0, duration) == pytest.approx(-math.expm1(-lam * duration))


def test_a_long_run_approaches_the_steady_state() -> None:
    lam, ttl = 2.0, 1.0
    assert miss_fraction(lam, ttl, 1e6) == pytest.approx(miss_fraction(lam, ttl, None), rel=1e-3)


def test_renewal_sum_and_asymptote_agree_where_they_meet() -> None:
    lam, ttl = 3.0, 1.0
    exact = misses_in_run(lam, ttl, 24.5)  # 24 cycles: the exact Poisson sum
    asymptote = misses_in_run(lam, ttl, 25.5)  # 25 cycles: the renewal asymptote
    assert asymptote - exact == pytest.approx(lam * 1.0 / (1 + lam * ttl), rel=0.05)


# baselines.md section 3: LRU on Zipf traces of 100,000 keys, whole trace, cold start included.
@pytest.mark.parametrize(
    ("alpha", "capacity", "measured"),
    [(0.99, 1_000, 0.4902), (0.99, 10_000, 0.7228), (0.8, 1_000, 0.2048), (0.8, 10_000, 0.4672)],
)
def test_che_reproduces_the_measured_lru_hit_ratios(alpha: float, capacity: int, measured: float) -> None:
    bins = zipf_bins(100_000, alpha)
    t_c = characteristic_time(
        [b.count for b in bins], lambda j, t: hit_ratio(bins[j].p_read, entry_lifetime(bins[j].p_read, t_c=t)), capacity
    )
    misses = math.fsum(b.count * misses_in_run(b.p_read, entry_lifetime(b.p_read, t_c=t_c), 1e6) for b in bins)
    assert 1 - misses / 1e6 == pytest.approx(measured, abs=0.005)


def test_characteristic_time_edges() -> None:
    bins = zipf_bins(100, 1.0)
    counts = [b.count for b in bins]

    def occ(j: int, t: float) -> float:
        return hit_ratio(bins[j].p_read, entry_lifetime(bins[j].p_read, ttl=1.0, t_c=t))

    assert characteristic_time(counts, occ, 0) == 0.0
    assert characteristic_time(counts, occ, 100) == INF
    assert characteristic_time(counts, occ, 99) == INF  # a 1 s TTL keeps it far emptier than 99 entries


def test_zipf_bins_sum_to_one_and_match_the_exact_sum() -> None:
    keys, alpha = 50_000, 0.9
    bins = zipf_bins(keys, alpha, write_alpha=0.0)
    assert sum(b.count for b in bins) == keys
    assert len(bins) < 600
    assert math.fsum(b.count * b.p_read for b in bins) == pytest.approx(1.0, abs=1e-12)
    assert math.fsum(b.count * b.p_write for b in bins) == pytest.approx(1.0, abs=1e-12)
    assert bins[-1].p_write == pytest.approx(1 / keys)

    h = math.fsum(i**-alpha for i in range(1, keys + 1))
    rate = 500.0

    def f(p: float) -> float:
        return p * hit_ratio(rate * p, 30.0)

    exact = math.fsum(f(i**-alpha / h) for i in range(1, keys + 1))
    binned = math.fsum(b.count * f(b.p_read) for b in bins)
    assert binned == pytest.approx(exact, rel=1e-3)


@pytest.mark.parametrize(
    ("keys", "alpha", "field"), [(0, 1.0, "keys"), (10, -0.5, "zipf_alpha"), (10, math.nan, "zipf_alpha")]
)
def test_zipf_bins_refuse_bad_input(keys: int, alpha: float, field: str) -> None:
    with pytest.raises(ConfigurationError, match=field):
        zipf_bins(keys, alpha)


@given(lam=rates, ttl=maybe_inf, t_c=maybe_inf, mu=mus, longer=st.floats(min_value=1.0, max_value=100.0))
@settings(max_examples=300, deadline=None)
def test_lifetime_is_monotone(lam: float, ttl: float, t_c: float, mu: float, longer: float) -> None:
    base = entry_lifetime(lam, ttl, t_c, mu)
    assert base >= 0
    assert entry_lifetime(lam, ttl * longer, t_c, mu) >= base * (1 - 1e-12)
    assert entry_lifetime(lam, ttl, t_c * longer, mu) >= base * (1 - 1e-12)
    assert entry_lifetime(lam, ttl, t_c, mu * longer) <= base * (1 + 1e-12) or mu == 0
    assert 0.0 <= hit_ratio(lam, base) <= 1.0


@given(lam=rates, lifetime=maybe_inf, duration=st.one_of(st.none(), times))
@settings(max_examples=300, deadline=None)
def test_miss_fraction_is_a_fraction(lam: float, lifetime: float, duration: float | None) -> None:
    assert 0.0 <= miss_fraction(lam, lifetime, duration) <= 1.0
