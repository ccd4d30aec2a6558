"""Acceptance: a stampede of 4 processes x 200 callers on one missing key, real Redis."""

from __future__ import annotations

import pytest

from readscale.testing.stampede import StampedeOptions, run_stampede

pytestmark = [pytest.mark.stack, pytest.mark.slow]


def test_one_load_in_total_and_every_caller_gets_the_value(redis_url: str) -> None:
    result = run_stampede(StampedeOptions(redis_url=redis_url, callers=200, loader_seconds=0.05), processes=4)
    assert result.processes_finished == 4
    assert result.loader_calls == 1
    assert result.errors == 0
    assert len(result.latencies_ms) == 800


def test_a_killed_lease_holder_is_replaced_after_its_lease_expires(redis_url: str) -> None:
    result = run_stampede(
        StampedeOptions(redis_url=redis_url, callers=200, loader_seconds=0.05, lease_ttl=1.0, kill_holder=True),
        processes=4,
    )
    assert result.processes_killed == 1
    assert result.processes_finished == 3
    assert result.loader_calls <= 2
    assert result.errors == 0
    assert len(result.latencies_ms) == 600


def test_naive_cache_aside_stampedes(redis_url: str) -> None:
    # The control: without protection, many of the 100 callers load.
    options = StampedeOptions(redis_url=redis_url, mode="naive", callers=50, loader_seconds=0.05)
    result = run_stampede(options, processes=2)
    assert result.loader_calls > 10
