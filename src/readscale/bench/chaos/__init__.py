"""``readscale bench chaos``: break one part of the read path at a time, under load.

Each fault gets a fresh environment (the reference service with its stack, CDC worker
and write-behind flusher; the Redis Cluster fault drives the cache directly), browser-
like clients for a warm-up, the fault, its repair, and a tail. Per fault it reports:

- ``failed_requests_<fault>`` (and ``failed_reads_`` / ``failed_writes_``): responses the
  clients saw fail, after retrying what a browser retries (a request that never reached
  the server, an idempotent GET whose connection broke).
- ``stale_reads_<fault>``: reads older than their bound (read-your-writes for a user's
  own balance and profile; a price 62 s in a browser, 2 s anywhere else).
- ``lost_writes_<fault>``: writes the service acknowledged that the database does not
  show once the write-behind queue has drained (deposits that do not add up, views
  missing from the count, a profile showing neither the last acknowledged bio nor one
  sent after it).
- ``undrained_writes_<fault>``: acknowledged writes still queued once the flusher had 60 s
  to apply them (a stopped or stuck flusher); kept, not lost, and a failure of their own:
  ``lost_writes`` means lost only when this is 0.
- ``recovery_s_<fault>``: from the repair to the moment the broken part is back in
  use (the service's cache tier healthy again, the first read on the restarted
  replica, the edge's first hit, the replica caught up, the CDC slot caught up, the
  queue drained, the first acknowledged write; for the Sentinel master's death, from the
  kill until a cache write, a durable write-behind write and a bus message go through the
  promoted replica).

The faults, their probes and the phases are in ``faults.py``; one fault of the service
under load in ``service.py``; the Redis Cluster fault in ``cluster.py``; the Redis Sentinel
fault (the cache, the bus and write-behind driven directly through a ``redis+sentinel://``
URL) in ``sentinel.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from readscale.bench.chaos.cluster import run_cluster_fault
from readscale.bench.chaos.faults import ALL_FAULTS, FAULTS
from readscale.bench.chaos.sentinel import WHAT as SENTINEL_WHAT
from readscale.bench.chaos.sentinel import run_sentinel_fault
from readscale.bench.chaos.service import lost_writes, run_service_fault
from readscale.bench.harness import BenchReport

# -- the bench --------------------------------------------------------------------------------------


def run_faults(
    names: tuple[str, ...],
    *,
    quick: bool,
    progress: Callable[[str], None] = lambda message: None,
    logs: Path | None = None,
    requests_per_phase: int | None = None,
) -> list[dict[str, Any]]:
    """Run each fault in turn; ``logs``: keep the service's logs there, per fault.

    Each phase (before the fault, while it holds, after the repair) lasts its time and
    at least ``requests_per_phase`` requests (500 quick, 1,000 otherwise): a slow
    machine runs longer instead of testing less. Each row's ``phase_requests`` says how
    many each phase had."""
    clients = 12 if quick else 24
    warm_s, tail_s = (4.0, 6.0) if quick else (6.0, 10.0)
    requests = requests_per_phase if requests_per_phase is not None else (500 if quick else 1000)
    out = []
    for name in names:
        if name == "cluster_primary":
            out.append(
                run_cluster_fault(workers=clients, warm_s=warm_s, tail_s=tail_s, requests=requests, progress=progress)
            )
        elif name == "sentinel_master":
            out.append(
                run_sentinel_fault(workers=clients, warm_s=warm_s, tail_s=tail_s, requests=requests, progress=progress)
            )
        else:
            out.append(
                run_service_fault(
                    FAULTS[name],
                    clients=clients,
                    warm_s=warm_s,
                    tail_s=tail_s,
                    requests=requests,
                    seed=7,
                    progress=progress,
                    logs=logs,
                )
            )
        row = out[-1]
        progress(
            f"{name}: {row['failed']} failed of {row['requests']}, {row['lost_writes']} lost of "
            f"{row['acked_writes']} acknowledged writes, {row['stale_reads']} stale, recovered in {row['recovery_s']} s"
        )
    return out


def run(*, rounds: int, quick: bool, progress: Callable[[str], None]) -> BenchReport:
    report = BenchReport(
        "chaos",
        params={
            "faults": {name: (FAULTS[name].what if name in FAULTS else SENTINEL_WHAT if name == "sentinel_master"
                              else "a Redis Cluster primary killed") for name in ALL_FAULTS},
            "rounds": 1,
            "clients": 12 if quick else 24,
            "requests_per_phase": 500 if quick else 1000,
            "note": "one fault per fresh environment; failed requests counted after browser-like retries "
            "of requests that never reached the server and of GETs whose connection broke",
        },
    )  # fmt: skip
    for row in run_faults(ALL_FAULTS, quick=quick, progress=progress):
        name = row["fault"]
        note = f"{row['what']}; failures {row['failures']}" if row["failures"] else row["what"]
        report.add(f"failed_requests_{name}", row["failed"], "requests", note)
        report.add(f"failed_reads_{name}", row["failed_reads"], "requests")
        report.add(f"failed_writes_{name}", row["failed_writes"], "requests")
        examples = "; ".join(row.get("stale_examples") or [])
        report.add(f"stale_reads_{name}", row["stale_reads"], "reads", f"e.g. {examples}" if examples else "")
        report.add(f"lost_writes_{name}", row["lost_writes"], "writes", f"of {row['acked_writes']} acknowledged")
        if "undrained_writes" in row:
            note = "" if row["flusher_exit"] is None else f"the flusher exited ({row['flusher_exit']})"
            report.add(f"undrained_writes_{name}", row["undrained_writes"], "writes", note)
        if row["recovery_s"] is not None:
            report.add(f"recovery_s_{name}", row["recovery_s"], "s")
        else:
            report.add(f"recovery_s_{name}", -1, "s", "did not recover within 60 s")
        report.add(f"requests_{name}", row["requests"], "requests")
    return report


__all__ = ["ALL_FAULTS", "FAULTS", "lost_writes", "run", "run_faults"]
