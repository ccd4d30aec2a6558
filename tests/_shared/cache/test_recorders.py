"""The cache's parts count through their recorders only (docs/architecture.md §5): no
module of ``_async/cache`` or ``_sync/cache`` assigns to a counter of ``CacheStats``, so a
counter changes in one place (``readscale._shared.cache.stats``) and the logic reads as
logic. The counters' values are asserted by the cache tests, unchanged."""

from __future__ import annotations

import re
from pathlib import Path

import readscale
from readscale._core.cache.fill import Refusal
from readscale._shared.cache.stats import CacheStats, FillRecorder, L1Recorder, L2Recorder

# an assignment (=, +=, -=) to stats.l1.X, stats.l2.X, stats.loader.X, stats.breaker_opens,
# stats.invalidations, or a setattr on a tier's counters
COUNTER_WRITE = re.compile(
    r"stats\.(?:(?:l1|l2|loader)\.\w+|breaker_opens|invalidations)\s*[-+]?=(?!=)"
    r"|setattr\([^)]*stats\.(?:l1|l2|loader)"
)

ROOT = Path(readscale.__file__).parent


def counter_writes(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if COUNTER_WRITE.search(line)]


def test_the_pattern_sees_a_counter_write() -> None:
    assert counter_writes("        self.stats.l2.hits += 1\n") == ["self.stats.l2.hits += 1"]
    assert counter_writes("        self.stats.invalidations += len(tags)\n")
    assert counter_writes("        self.stats.breaker_opens = 0\n")
    assert not counter_writes("        if self.stats.l2.hits == 1:\n")
    assert not counter_writes("        self.record.l2_hit()\n")


def test_no_cache_part_assigns_to_a_counter() -> None:
    found = {
        str(path.relative_to(ROOT)): writes
        for layer in ("_async", "_sync")
        for path in sorted((ROOT / layer / "cache").glob("*.py"))
        if (writes := counter_writes(path.read_text()))
    }
    assert found == {}, f"count through a recorder (readscale._shared.cache.stats): {found}"


def test_a_recorder_counts_in_the_stats_it_was_given_even_after_a_reset() -> None:
    stats = CacheStats("t")
    l1, l2, fills = L1Recorder(stats), L2Recorder(stats), FillRecorder(stats)
    stats.reset()  # replaces the tiers' counters: a recorder must not hold the old ones
    l1.hit()
    l2.corrupt(3)
    fills.stored(l2=True)
    assert fills.refused(Refusal.LEASE_LOST) == "fills_refused_lease_lost"
    snap = stats.snapshot()
    assert snap["l1"]["hits"] == 1
    assert snap["l2"]["corrupt"] == 3
    assert (snap["l2"]["fills"], snap["l1"]["fills"]) == (1, 1)
    assert (snap["loader"]["fills_refused"], snap["loader"]["fills_refused_lease_lost"]) == (1, 1)
