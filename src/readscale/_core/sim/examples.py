"""The textbook example, and the reading of its figures under which they are consistent.

The example: at 100,000 requests per second, "40,000 -> browser, 18,000 -> CDN,
8,400 -> Redis, 2,800 -> replicas, 800 -> primary".

Read as the load each layer *absorbs*, the five figures sum to 70,000, not 100,000: that
reading is inconsistent. Read as the load that *gets past* the named layer (its misses,
arriving at the next one), everything adds up:

- 100,000 requests: 99,200 reads and 800 writes (124 reads per write);
- 40,000 reads get past the browsers (they absorb 59,200: 59.7 % of reads);
- 18,000 get past the CDN (it absorbs 22,000: 55 % of what reaches it);
- 8,400 get past Redis (it absorbs 9,600: 53.3 %) and reach the database tier, where
  3 replicas take 2,800 each;
- the primary takes the 800 writes.

The absorbed loads then sum to the headline exactly: 59,200 + 22,000 + 9,600 + 8,400 +
800 = 100,000. (Reading 100,000 as reads only, plus 800 writes, would make 100,800
requests.) :data:`TEXTBOOK` holds settings that produce these figures through the
model, not hit ratios typed in: the model reproduces each within 0.5 %.
"""

from __future__ import annotations

from dataclasses import dataclass

from readscale._core.sim.model import Layers, Prediction, Scenario, Traffic

READING = (
    "each figure is the load that gets past the named layer: of 100,000 requests "
    "(99,200 reads + 800 writes), 40,000 reads get past the browsers, 18,000 past the CDN, "
    "8,400 past Redis to 3 replicas (2,800 each), and the primary takes the 800 writes"
)

TEXTBOOK = Scenario(
    traffic=Traffic(
        rps=100_000,
        keys=100_000,
        zipf_alpha=1.0,
        reads_per_write=124,  # 800 writes in 100,000 requests
        clients=9_600,  # about 10 requests per second each: a page and its assets
    ),
    layers=Layers(
        browser_max_age_s=900,  # 15 minutes
        edge_ttl_s=60,
        public_share=0.597,  # the rest is private: the CDN may not cache it
        edge_purge=True,
        cache_ttl_s=300,
        l1_entries=0,  # the textbook's app cache is Redis alone
        l2_entries=23_400,
        replicas=3,
        replica_lag_ms=5,
        read_your_writes="lsn",
    ),
)


@dataclass(frozen=True, slots=True)
class Figure:
    """One textbook figure and the model quantity it is compared with."""

    layer: str
    label: str
    expected: float
    predicted: float

    @property
    def error(self) -> float:
        """Relative error of the prediction."""
        return abs(self.predicted - self.expected) / self.expected


def textbook_figures(prediction: Prediction) -> tuple[Figure, ...]:
    """The five textbook figures next to the model's, under :data:`READING`."""
    p = prediction
    return (
        Figure("browser", "reads past the browsers", 40_000, p.layer("browser").passed_rps),
        Figure("edge", "reads past the CDN", 18_000, p.layer("edge").passed_rps),
        Figure("app_cache", "reads past Redis", 8_400, p.layer("app_cache").passed_rps),
        Figure("replicas", "reads per replica", 2_800, p.layer("replicas").per_node_rps),
        Figure("primary", "primary load", 800, p.layer("primary").absorbed_rps),
    )
