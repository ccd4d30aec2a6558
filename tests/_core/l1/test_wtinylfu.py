"""The pure pieces of the L1 policy: the frequency sketch, the window climber and the
W-TinyLFU bookkeeping, driven directly (no store, no clock)."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from readscale._core.l1.climber import WindowClimber
from readscale._core.l1.sketch import FrequencySketch
from readscale._core.l1.wtinylfu import TinyLfuConfig, WTinyLfu

# -- sketch ------------------------------------------------------------------------------


@pytest.mark.parametrize("conservative", [False, True])
@pytest.mark.parametrize("doorkeeper", [False, True])
@given(keys=st.lists(st.integers(0, 300), max_size=400))
def test_the_sketch_never_undercounts_before_a_reset(keys: list[int], conservative: bool, doorkeeper: bool) -> None:
    sketch = FrequencySketch(64, sample_factor=1_000, conservative=conservative, doorkeeper=doorkeeper, seed=7)
    for key in keys:
        sketch.increment(key)
    assert sketch.resets == 0
    for key, count in Counter(keys).items():
        assert sketch.frequency(key) >= min(count, 15)


def test_counters_saturate_at_the_cap() -> None:
    sketch = FrequencySketch(16, counter_max=5, sample_factor=1_000)
    for _ in range(50):
        sketch.increment("hot")
    assert sketch.frequency("hot") == 5


def test_a_sample_period_halves_every_count() -> None:
    sketch = FrequencySketch(16, counter_max=255, sample_factor=10, width_factor=64, seed=1)  # 160 additions
    for _ in range(100):
        sketch.increment("a")
    for i in range(59):
        sketch.increment(f"other{i}")
    assert sketch.resets == 0
    assert sketch.frequency("a") == 100
    sketch.increment("last")
    assert sketch.resets == 1
    assert sketch.frequency("a") == 50


def test_the_doorkeeper_absorbs_first_sightings() -> None:
    sketch = FrequencySketch(16, doorkeeper=True, sample_factor=100)
    sketch.increment("once")
    assert sketch.frequency("once") == 1
    assert sum(map(sum, sketch._rows)) == 0
    sketch.reset()
    assert sketch.frequency("once") == 0


# -- climber -----------------------------------------------------------------------------


def climber(tolerance: float = 2.0) -> WindowClimber:
    return WindowClimber(step=0.0625, decay=0.9, restart=0.05, tolerance=tolerance)


def test_the_climber_waits_for_a_full_sample() -> None:
    c = climber()
    assert c.sample(400, 500, 1_000) == 0.0
    assert c.sample(50, 50, 1_000) == -0.0625  # first move: shrink, as Caffeine
    assert c.last_change == pytest.approx(0.45)


def test_the_climber_ignores_noise_and_turns_around_on_a_real_loss() -> None:
    c = climber()
    c.sample(5_000, 5_000, 10_000)  # hit ratio 0.5: restart-sized gain, step stays 0.0625
    assert c.sample(5_010, 4_990, 10_000) == 0.0  # +0.001: under 2 standard errors (0.014)
    move = c.sample(4_800, 5_200, 10_000)  # -0.021: a real loss, turn around
    assert move == pytest.approx(0.0625)
    assert c.sample(4_600, 5_400, 10_000) == pytest.approx(-0.0625 * 0.9)


def test_a_large_change_restarts_the_step() -> None:
    c = climber(tolerance=0.0)
    c.sample(50, 50, 100)
    for _ in range(5):
        c.sample(50, 50, 100)  # no change: keep going, step decays
    assert abs(c._step) < 0.0625 * 0.6
    c.sample(10, 90, 100)  # a fall of 0.4: restart at full size
    assert abs(c._step) == pytest.approx(0.0625)


# -- policy ------------------------------------------------------------------------------


def policy(max_entries: int = 100, max_bytes: int | None = None, **cfg: object) -> tuple[WTinyLfu[str], list[str]]:
    dropped: list[str] = []
    p: WTinyLfu[str] = WTinyLfu(
        max_entries, max_bytes, lambda key, rejected: dropped.append(key), config=TinyLfuConfig(**cfg), seed=3
    )
    return p, dropped


def test_a_probation_hit_promotes_and_protected_overflow_demotes() -> None:
    p, dropped = policy(max_entries=10, window=0.1, adaptive=False)
    for key in "abcdefghij":
        p.insert(key, 1)
    assert dropped == []
    assert list(p.window) == ["j"]
    p.record_hit("a")
    assert "a" in p.protected
    for key in "bcdefghi":
        p.record_hit(key)
    assert len(p.protected) <= int(0.8 * 9)
    assert p.entries == 10


def test_the_shadow_lrus_leads_grow_the_window_by_doubling_steps_until_a_quiet_period() -> None:
    p, _ = policy(max_entries=1_000, climb_warmup=False, shadow_min_sample=1)
    assert p.shadow is not None

    def lead() -> float:
        assert p.shadow is not None
        p.shadow.sampled, p.shadow.lru_only, p.shadow.policy_only = 1_000, 200, 0
        before = p.window_share
        p.climb(0, 0)  # no full sample period yet: only the shadow's verdict acts
        return p.window_share - before

    assert [round(lead(), 4) for _ in range(4)] == [0.0625, 0.125, 0.25, 0.25]
    p.climb(5_000, 5_000)  # the period the leads were in ends: the streak goes on
    p.climb(5_000, 5_000)  # a whole period without a lead: it restarts
    assert round(lead(), 4) == 0.0625


def test_growing_the_window_takes_from_probation_and_shrinking_gives_back() -> None:
    p, _ = policy(max_entries=20, window=0.05, adaptive=False)
    for i in range(20):
        p.insert(f"k{i}", 1)
    p.resize_window(0.5)
    assert len(p.window) == 10
    p.resize_window(0.05)
    assert len(p.window) == 1
    assert p.entries == 20


def test_a_candidate_must_be_more_frequent_than_the_victim() -> None:
    p, dropped = policy(max_entries=5, window=0.2, adaptive=False, hashdos_threshold=0)
    for key in "abcd":
        p.insert(key, 1)
        for _ in range(3):
            p.record_hit(key)
    p.insert("new", 1)  # the fifth entry: no contest yet
    p.insert("newer", 1)  # pushes "new" (seen once) out of the window: it loses to "a"
    assert dropped == ["new"]
    for _ in range(10):
        p.record_hit("newer")
    p.insert("last", 1)  # "newer" (seen 11 times) beats the victim "a" (4)
    assert dropped == ["new", "a"]
    assert p.entries == 5


def test_byte_bounds_hold_with_mixed_sizes() -> None:
    p, dropped = policy(max_entries=1_000, max_bytes=100, adaptive=False)
    for i in range(200):
        p.insert(f"k{i}", (i * 7) % 30 + 1)
        assert p.weight <= 100
    assert p.entries + len(dropped) == 200
