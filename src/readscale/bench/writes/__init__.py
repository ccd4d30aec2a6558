"""``readscale bench writes``: what a write costs the caller and the database, each
write-behind mode against a direct PostgreSQL upsert, and what each mode loses in crashes.

Contenders (async flavour; the sync flavour's durable and direct again at the end):

- ``writebehind_durable``: ``AsyncWriteBehind.write_behind(key, value)`` in the default
  mode, on a Redis with ``appendfsync always`` (Redis fsyncs before it replies);
- ``writebehind_fast``: the same in mode ``fast``, ``appendfsync everysec``;
- ``writebehind_volatile``: mode ``volatile``, on a Redis without persistence;
- ``writethrough``: ``AsyncCache.write_through(key, writer)``, the writer doing the
  database upsert, then the cache set;
- ``direct``: the database upsert alone (one autocommit transaction per write).

A flusher in another process applies the queue to PostgreSQL meanwhile. Latencies are
per call, sequential, from one client; each contender runs ``calls`` writes per round,
rounds interleaved, and the median of the rounds' p50 and p99 is reported.

Then: database transactions per 1,000 writes (``pg_stat_database.xact_commit`` deltas,
read once every backend involved has exited) for write-behind and direct writes; and
how ``appendfsync always`` shares fsyncs: durable writes per second from 1 and from 8
concurrent writers, and acknowledged writes per fsync (counted by the slow-disk shim,
``readscale.stack.slowdisk``, with no delay).

Last, the crash soak (``readscale.bench.wbcrash``): writes and counters from three
processes while the flusher and Redis are killed on a slow disk, per mode, for
``10 x rounds`` seconds each (``--quick``: 8): ``durable`` through process, rewrite and
host crashes; ``fast`` through process kills (800 ms fsyncs, after a 2.5 s stretch) and,
measured only, host crashes.

PostgreSQL runs with ``fsync`` and ``synchronous_commit`` on. Keys are drawn uniformly
from 10,000, so the transaction saving comes from batching, not from coalescing.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from readscale.bench.harness import BenchReport, ratio
from readscale.bench.writes._flusher import BATCH_SIZE, BATCH_WAIT, create_database
from readscale.bench.writes.measure import KEYS, bench_async, bench_sync, fsync_sharing, soak
from readscale.stack import Stack


def run(*, rounds: int, quick: bool, progress: Callable[[str], None]) -> BenchReport:
    from readscale.stack.slowdisk import SlowDisk

    calls = 200 if quick else 1000
    rounds = 2 if quick else rounds
    wb_writes = 2000 if quick else 10_000
    soak_seconds = 8.0 if quick else 10.0 * rounds
    report = BenchReport(
        "writes",
        params={
            "rounds": rounds,
            "calls_per_round": calls,
            "keys": KEYS,
            "writebehind_writes_for_transactions": wb_writes,
            "redis": "AOF (appendfsync always for durable, everysec for fast); none for volatile",
            "postgres": "fsync on, synchronous_commit on",
            "flusher": f"separate process, batch_size {BATCH_SIZE}, batch_wait {BATCH_WAIT}s",
            "crash_soak_seconds": soak_seconds,
            "host": "a shared 2-core machine: compare figures within one run",
        },
    )
    base = Path(tempfile.mkdtemp(prefix="readscale-bench-writes-"))
    base.chmod(0o755)
    stack = Stack(base / "stack")
    try:
        stack.prepare()
        progress("starting PostgreSQL and Redis (AOF, and none)")
        stack.start_postgres(replicas=0)
        urls = {"aof": stack.start_redis(aof=True).url, "volatile": stack.start_redis(name="redis-volatile").url}
        disk = SlowDisk(base / "disk")
        shared = stack.start_redis(name="redis-shim", aof=True, environment=disk.environment).url
        admin_dsn = stack.primary.dsn
        dsn = create_database(admin_dsn)
        got = asyncio.run(bench_async(urls, dsn, admin_dsn, calls, rounds, wb_writes, quick, progress))
        sharing = asyncio.run(fsync_sharing(shared, disk, 800 if quick else 4000, progress))
        got_sync = bench_sync(urls["aof"], dsn, calls, rounds, progress)
    finally:
        stack.down()
    names = ("writebehind_durable", "writebehind_fast", "writebehind_volatile", "writethrough", "direct")
    for name in names:
        spread = "p50 rounds: " + ", ".join(f"{v:.3g}" for v in got[f"rounds_{name}"])
        report.add(f"write_p50_ms_{name}", round(got[f"p50_{name}"], 3), "ms", spread)
        report.add(f"write_p99_ms_{name}", round(got[f"p99_{name}"], 3), "ms")
    for name in names[:3]:
        value = ratio(got["p50_direct"], got[f"p50_{name}"])
        verdict = "faster than the database" if value > 1 else "slower than the database"
        report.add(f"write_p50_ratio_direct_to_{name}", round(value, 2), "ratio", f"p50: {verdict}")
        value = ratio(got["p99_direct"], got[f"p99_{name}"])
        verdict = "faster than the database" if value > 1 else "slower than the database"
        report.add(f"write_p99_ratio_direct_to_{name}", round(value, 2), "ratio", f"p99: {verdict}")
    per_1000_wb = got["xacts_writebehind"] * 1000 / wb_writes
    per_1000_direct = got["xacts_direct"] * 1000 / got["direct_writes"]
    report.add("db_transactions_per_1000_writes_writebehind", round(per_1000_wb, 2), "xacts",
               "pg_stat_database.xact_commit delta, flusher included")  # fmt: skip
    report.add("db_transactions_per_1000_writes_direct", round(per_1000_direct, 1), "xacts")
    report.add("db_transactions_ratio_direct_to_writebehind", round(ratio(per_1000_direct, per_1000_wb), 1), "ratio",
               "target >= 10")  # fmt: skip
    report.add("durable_writes_per_s_1_writer", round(sharing["writes_per_s_1"]), "writes/s", "appendfsync always")
    report.add("durable_writes_per_s_8_writers", round(sharing["writes_per_s_8"]), "writes/s", "8 concurrent writers")
    report.add("durable_writes_per_fsync_8_writers", round(sharing["writes_per_fsync_8"], 2), "writes",
               f"1 writer: {sharing['writes_per_fsync_1']:.2f}; counted by the slow-disk shim, no delay")  # fmt: skip
    for name in ("writebehind_durable", "direct"):
        spread = "p50 rounds: " + ", ".join(f"{v:.3g}" for v in got_sync[f"rounds_{name}"])
        report.add(f"write_p50_ms_{name}_sync", round(got_sync[f"p50_{name}"], 3), "ms", spread)
        report.add(f"write_p99_ms_{name}_sync", round(got_sync[f"p99_{name}"], 3), "ms")
    value = ratio(got_sync["p50_direct"], got_sync["p50_writebehind_durable"])
    report.add("write_p50_ratio_direct_to_writebehind_durable_sync", round(value, 2), "ratio")
    soak(base, soak_seconds, report, progress)
    shutil.rmtree(base, ignore_errors=True)
    return report


__all__ = ["run"]
