"""The chaos suite, small: each fault of ``readscale bench chaos`` once, under load, with
the acceptance rules asserted on counts (failed requests, lost writes), never on time."""

from __future__ import annotations

import gc
from typing import Any

import pytest

from readscale.bench.chaos import ALL_FAULTS, FAULTS, run_faults

pytestmark = [pytest.mark.stack, pytest.mark.chaos, pytest.mark.slow]

#: Faults users must never notice: no failed request at all.
INVISIBLE = {"redis", "cluster_primary", "replica", "replica_pause", "varnish", "cdc", "flusher"}
#: Requests each phase must see (before the fault, while it holds, after the repair):
#: the counts below mean something only if the fault met real load. The bench drives
#: each phase until it has them, however slow the machine, instead of a fixed time.
PHASE_REQUESTS = 500


#: redis-py's Sentinel master discovery leaves a few connections to the sentinels unclosed
#: when a failover interrupts it (found with tracemalloc: opened in discover_master's
#: get_connection). The case collects them itself (gc.collect at its end, under this
#: filter): left to the collector's own time they can surface in a later test. A CI run
#: had tests/consistency/test_harness.py's seed 2 fail on 56 unclosed asyncio streams of
#: a closed loop, the likeliest source being these (not reproduced on demand).
_SENTINEL_GC = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


@pytest.mark.parametrize(
    "fault", [pytest.param(f, marks=_SENTINEL_GC) if f == "sentinel_master" else f for f in ALL_FAULTS]
)
def test_one_fault_under_load(fault: str) -> None:
    try:
        (row,) = run_faults((fault,), quick=True, requests_per_phase=PHASE_REQUESTS)
    finally:
        if fault == "sentinel_master":
            gc.collect()  # the discovery's unclosed connections, here, not in a later test
    summary: dict[str, Any] = {
        k: row.get(k)
        for k in ("failures", "lost_examples", "stale_examples", "window_s", "phase_requests", "undrained_writes",
                  "dead_letters", "flusher_exit", "flusher_log", "recovery_s")
    }  # fmt: skip
    before, during, after = row["phase_requests"]
    assert before >= PHASE_REQUESTS and after >= PHASE_REQUESTS, summary
    if fault in ("cluster_primary", "sentinel_master"):
        assert during > 0, summary  # requests met the failover (it takes what it takes)
    elif FAULTS[fault].hold_s > 0:
        assert during >= PHASE_REQUESTS, summary  # the fault held under load
    # (Varnish is killed and started at once: what is at risk is the cold edge after.)
    assert row["acked_writes"] > 0, summary
    if "undrained_writes" in row:  # the service's faults: the flusher ran and drained the queue
        # Before the loss count, which means "lost" only once the queue is empty: a dead
        # or stuck flusher leaves acknowledged writes queued (kept, not applied).
        assert row["flusher_exit"] is None, summary
        assert row["undrained_writes"] == 0, summary
        assert row["dead_letters"] == 0, summary  # nothing given up on either
    assert row["lost_writes"] == 0, summary  # every fault: nothing acknowledged is lost
    if fault != "cdc":
        # With the CDC worker down, nothing invalidates a price changed in SQL until it
        # is back: stale reads past the 2 s bound are the expected (reported) cost there.
        assert row["stale_reads"] == 0, summary
    assert row["failed_reads"] == 0, summary  # reads continue, even with the primary down
    if fault in INVISIBLE:
        assert row["failed"] == 0, summary
    assert row["recovery_s"] is not None, summary  # back in use within 60 s of the repair
    if fault == "sentinel_master":
        # Through the promoted replica: after the failover, every kind of operation works
        # again (cache reads and writes, durable write-behind, the bus between two caches),
        # and durable mode lost nothing it acknowledged (WAIT 1 before each acknowledgement).
        tail = row["tail"]
        assert tail["failed"] == 0 and min(tail["read"], tail["write"], tail["wb"]) > 0, (tail, summary)
        assert row["bus_received_after_kill"] > 0 and row["drained"], summary


def test_a_dead_flusher_is_reported_and_its_queue_not_counted_as_lost() -> None:
    """The flusher killed after the warm-up and never started again: the row names
    the exit and the acknowledged writes still queued (kept by Redis, not applied), so a
    run whose flusher died is not read as the library losing writes (a CI run reported
    exactly that: "product 370: 1 views acknowledged, 0 in the database", the first view
    of the seeded load, with nothing to tell a dead flusher apart)."""
    from readscale.bench.chaos.faults import Fault
    from readscale.bench.chaos.service import run_service_fault

    dies = Fault("flusher_dies", "the flusher killed, not restarted", lambda env, run: env.stop_process("flusher"),
                 lambda env, run: None, lambda env, run: True, hold_s=0.0)  # fmt: skip
    row = run_service_fault(dies, clients=12, warm_s=0.0, tail_s=2.0, requests=800, seed=7, progress=lambda m: None)
    assert row["flusher_exit"] is not None, row
    assert row["undrained_writes"] > 0, row  # views acknowledged after the kill, still queued
    assert row["dead_letters"] == 0, row
