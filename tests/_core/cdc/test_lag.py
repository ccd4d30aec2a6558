"""The CDC lag in seconds: bounded by the primary's positions sampled over time."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from readscale._core.cdc.lag import LagSamples


def test_caught_up_is_zero_and_behind_counts_from_the_last_sample_at_the_confirmed_position() -> None:
    lag = LagSamples()
    assert lag.seconds(current=100, confirmed=100, now=10.0) == 0.0
    assert lag.seconds(current=150, confirmed=100, now=11.0) == 1.0  # behind since the sample at 10 s
    assert lag.seconds(current=200, confirmed=150, now=12.5) == 1.5  # the primary passed 150 at 11 s
    assert lag.seconds(current=200, confirmed=200, now=13.0) == 0.0


def test_confirmed_older_than_every_sample_counts_from_the_oldest() -> None:
    lag = LagSamples(maxlen=2)
    lag.seconds(current=100, confirmed=0, now=1.0)
    lag.seconds(current=200, confirmed=0, now=2.0)
    assert lag.seconds(current=300, confirmed=0, now=5.0) == 3.0


@given(st.lists(st.tuples(st.integers(0, 50), st.integers(0, 50), st.floats(0, 5)), max_size=30))
def test_never_negative_and_never_older_than_the_history(steps: list[tuple[int, int, float]]) -> None:
    lag, now, current, start = LagSamples(), 0.0, 0, 0.0
    for grow, back, dt in steps:
        now += dt
        current += grow
        seconds = lag.seconds(current=current, confirmed=max(0, current - back), now=now)
        assert 0.0 <= seconds <= now - start
        if back == 0:
            assert seconds == 0.0
