"""The consistency arithmetic: stale rate and nines."""

from __future__ import annotations

import pytest

from readscale._core.consistency.sampled import ConsistencyReport, sampled


def test_nines() -> None:
    assert ConsistencyReport(1000, 1, 0).nines == pytest.approx(3.0)
    assert ConsistencyReport(1000, 10, 0).stale_rate == 0.01
    assert ConsistencyReport(1000, 10, 0).consistent_rate == 0.99
    perfect = ConsistencyReport(10_000, 0, 5)
    assert perfect.nines == pytest.approx(4.0) and perfect.nines_is_lower_bound
    assert ConsistencyReport(0, 0, 0).nines == 0.0


def test_sampling() -> None:
    assert sampled(0.001, 0.01) and not sampled(0.5, 0.01)
    assert not sampled(0.0, 0.0)
