"""The demo's chaos phases: each response counted once, in the phase it arrived in, by
kind and by the layer (and the app cache's tier) that answered it."""

from __future__ import annotations

import httpx
import pytest

from readscale.demo.browser import served_by
from readscale.demo.funnel import phase_counts, timeline_shares

EVENTS = [
    (0.5, "app_cache", "read", "l2"),
    (1.0, "replica", "read", ""),
    (2.0, "app_cache", "write", ""),  # at a bound: the later phase
    (2.5, "replica", "read", ""),
    (3.0, "primary", "write", ""),
    (4.0, "app_cache", "read", "l1"),
    (4.1, "app_cache", "asset", ""),
]


def test_each_response_lands_in_one_phase_by_kind_layer_and_tier() -> None:
    phases = phase_counts(EVENTS, [2.0, 3.0], ("before", "down", "after"))
    assert phases == {
        "before": {"read": {"app_cache:l2": 1, "replica": 1}},
        "down": {"write": {"app_cache": 1}, "read": {"replica": 1}},
        "after": {"write": {"primary": 1}, "read": {"app_cache:l1": 1}, "asset": {"app_cache": 1}},
    }
    assert sum(n for p in phases.values() for kinds in p.values() for n in kinds.values()) == len(EVENTS)


def test_phase_names_must_match_the_bounds() -> None:
    with pytest.raises(ValueError, match="2 bounds make 3 phases"):
        phase_counts(EVENTS, [2.0, 3.0], ("before", "after"))


def test_the_timeline_counts_tiers_as_the_app_cache() -> None:
    (row,) = timeline_shares(EVENTS[:2])
    assert row["app_cache"] == 0.5 and row["replica"] == 0.5


@pytest.mark.parametrize(
    ("header", "layer"),
    [("app_cache:l1", "app_cache"), ("app_cache:l2", "app_cache"), ("app_cache", "app_cache"),
     ("replica:r1", "replica"), ("primary", "primary")],
)  # fmt: skip
def test_the_client_reads_the_layer_from_the_header(header: str, layer: str) -> None:
    assert served_by(httpx.Response(200, headers={"x-readscale-served": header})) == layer
