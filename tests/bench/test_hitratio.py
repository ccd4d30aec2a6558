"""The hit-ratio simulator's reference policies: Belady's MIN against a brute-force
search, LRU and static on hand-made traces, and the trace generators."""

from __future__ import annotations

import functools
import random

import pytest

from readscale.bench.hitratio import lfu_hits, lru_hits, next_uses, opt_hits, static_hits, store_hits


def brute_force_max_hits(trace: tuple[int, ...], capacity: int) -> int:
    """Try every decision on every miss (bypass, or insert evicting any cached key)."""

    @functools.cache
    def best(t: int, cache: frozenset[int]) -> int:
        if t == len(trace):
            return 0
        key = trace[t]
        if key in cache:
            return 1 + best(t + 1, cache)
        options = [best(t + 1, cache)]  # bypass
        if len(cache) < capacity:
            options.append(best(t + 1, cache | {key}))
        else:
            options.extend(best(t + 1, (cache - {victim}) | {key}) for victim in cache)
        return max(options)

    return best(0, frozenset())


def test_belady_min_matches_a_brute_force_search_on_small_traces() -> None:
    rng = random.Random(11)
    for _ in range(400):
        n_keys = rng.randint(2, 5)
        trace = tuple(rng.randrange(n_keys) for _ in range(rng.randint(1, 12)))
        capacity = rng.randint(1, 3)
        assert opt_hits(trace, capacity) == brute_force_max_hits(trace, capacity), (trace, capacity)


def test_belady_min_bounds_every_online_policy() -> None:
    rng = random.Random(5)
    trace = [int(rng.paretovariate(1.0)) % 300 for _ in range(5_000)]
    best = opt_hits(trace, 30)
    assert lru_hits(trace, 30) <= best
    assert store_hits(trace, 30) <= best
    assert lfu_hits(trace, 30) <= best


def test_next_uses() -> None:
    assert next_uses([1, 2, 1, 1, 3]) == [2, 5, 3, 5, 5]
    assert next_uses([]) == []


def test_lru_and_static_on_a_loop() -> None:
    loop = [0, 1, 2] * 4
    assert lru_hits(loop, 2) == 0  # LRU's worst case: the loop is one larger than the cache
    assert lru_hits(loop, 3) == 9
    assert static_hits(loop, 2) == 8  # pins two of the three keys, 4 requests each
    assert opt_hits(loop, 2) >= 5
    assert lfu_hits(loop, 2) == 6  # keys 0 and 1 get in first and are never outcounted


def test_trace_generators_are_deterministic_and_shaped() -> None:
    pytest.importorskip("numpy")
    from readscale.bench.hitratio import loop_trace, news_trace, shift_trace, zipf_trace

    a = zipf_trace(0.99, 0, n_keys=1_000, n_requests=5_000)
    assert a == zipf_trace(0.99, 0, n_keys=1_000, n_requests=5_000)
    assert a != zipf_trace(0.99, 1, n_keys=1_000, n_requests=5_000)
    assert len(a) == 5_000
    assert all(0 <= k < 1_000 for k in a)
    # Zipf: the most requested key takes far more than a uniform share.
    assert static_hits(a, 1) > 5_000 / 1_000 * 20
    assert len(shift_trace(0.9, 0, period=1_000, n_keys=1_000, n_requests=5_000)) == 5_000
    news = news_trace(0.8, 0, n_keys=1_000, n_requests=5_000)
    assert min(news) >= 1 and max(news) <= 5_000 // 20 + 1_000
    looped = loop_trace(0.9, 0, loop=50, n_keys=1_000, n_requests=5_000)
    assert {k for k in looped if k >= 1_000} == set(range(1_000, 1_050))


def test_the_adaptation_traces_are_deterministic_and_shaped() -> None:
    pytest.importorskip("numpy")
    from readscale.bench.hitratio.traces import cycle_trace, drift_trace, recency_trace, scan_trace

    cycle = cycle_trace(110, 0, n_requests=1_100)
    assert sorted(cycle[:110]) == list(range(110)) and cycle[110:220] == cycle[:110]
    assert lru_hits(cycle, 100) == 0
    for make in (
        lambda s: drift_trace(0.9, s, n_keys=1_000, n_requests=5_000),
        lambda s: recency_trace(s, n_keys=1_000, n_requests=5_000),
        lambda s: scan_trace(0.9, s, scan=100, every=1_000, n_keys=1_000, n_requests=5_000),
    ):
        a = make(0)
        assert a == make(0) and a != make(1) and len(a) == 5_000
    scanned = scan_trace(0.9, 0, scan=100, every=1_000, n_keys=1_000, n_requests=5_000)
    assert scanned[1_000:1_100] == list(range(1_000, 1_100))  # fresh, sequential
    # Re-references make recency pay: LRU hits far more than on the fresh draws alone.
    assert lru_hits(recency_trace(0, n_keys=1_000, n_requests=5_000), 50) > 5_000 * 0.3
