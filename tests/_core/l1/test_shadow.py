"""The sampled shadow LRU: at full rate it is exactly LRU, sampled it stays within its
size, and its paired counts are the discordant requests."""

from __future__ import annotations

from collections import OrderedDict

from hypothesis import given
from hypothesis import strategies as st

from readscale._core.l1.shadow import ShadowLru


def lru_outcomes(trace: list[int], capacity: int) -> list[bool]:
    cache: OrderedDict[int, None] = OrderedDict()
    out = []
    for key in trace:
        out.append(key in cache)
        if key in cache:
            cache.move_to_end(key)
        else:
            cache[key] = None
            if len(cache) > capacity:
                cache.popitem(last=False)
    return out


@given(
    trace=st.lists(st.integers(0, 30), max_size=300),
    capacity=st.integers(1, 10),
    policy=st.lists(st.booleans(), min_size=300, max_size=300),
)
def test_at_full_rate_the_shadow_is_lru_and_counts_discordant_requests(
    trace: list[int], capacity: int, policy: list[bool]
) -> None:
    shadow = ShadowLru(capacity, entries=capacity)
    assert shadow.rate == 1.0
    for key, hit in zip(trace, policy, strict=False):
        shadow.observe(key, hit)
    lru = lru_outcomes(trace, capacity)
    expected_policy_only = sum(p and not q for p, q in zip(policy, lru, strict=False))
    expected_lru_only = sum(q and not p for p, q in zip(policy, lru, strict=False))
    assert shadow.take() == (len(trace), expected_policy_only, expected_lru_only)
    assert shadow.take() == (0, 0, 0)


@given(trace=st.lists(st.integers(0, 100_000), max_size=2_000), seed=st.integers(0, 2**64 - 1))
def test_a_sampled_shadow_holds_at_most_its_entries_and_samples_by_key(trace: list[int], seed: int) -> None:
    shadow = ShadowLru(10_000, entries=100, seed=seed)
    assert shadow.rate < 0.011
    chosen: dict[int, bool] = {}
    for key in trace:
        before = shadow.sampled
        shadow.observe(key, False)
        picked = shadow.sampled > before
        assert chosen.setdefault(key, picked) == picked  # a key is always or never sampled
        assert len(shadow) <= 100


def test_the_sample_rate_is_close_to_the_asked_one() -> None:
    shadow = ShadowLru(100_000, entries=2_000, seed=3)
    for key in range(100_000):
        shadow.observe(key, False)
    assert 1_700 <= shadow.sampled <= 2_300
