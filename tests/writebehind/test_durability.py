"""Acceptance (issue 12): write-behind keeps each mode's promise when things crash on a slow disk.

The crash harness (``readscale.bench.wbcrash``) writes values and increments counters
from several producer processes while the real ``readscale writebehind run`` is
SIGKILLed every one to three seconds and Redis is killed: as a process, during an AOF
rewrite, and as a host (its AOF cut back to what was fsynced). Redis's disk is slowed by
an LD_PRELOAD shim the stack compiles with gcc (``readscale.stack.slowdisk``).

- ``durable`` (appendfsync always): 0 acknowledged writes lost, counters exact.
- ``fast`` (everysec) on a disk whose fsync takes 800 ms: it does lose acknowledged
  writes when Redis is killed (the failure ``durable`` exists for), and every loss is
  of a write made within the mode's stated window before the kill; a counter never
  counts an increment twice.

Short plans here (about a minute in all); ``readscale bench writes`` runs longer ones.
``READSCALE_CRASH_SEED`` picks the flusher kills' schedule.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path

import pytest
import redis

from readscale import RedisSettings
from readscale._core.cache.policy import CachePolicy, Tier
from readscale._core.writebehind.modes import FAST_LOSS_WINDOW
from readscale._core.writebehind.records import WriteRecord
from readscale._core.writebehind.settings import FlusherSettings, WriteBehindSettings
from readscale._sync.backends.redis import RedisBackend
from readscale._sync.cache.cache import Cache
from readscale._sync.writebehind.flusher import Flusher
from readscale._sync.writebehind.producer import WriteBehind
from readscale.bench.wbcrash import CrashPlan, promise_kept, run_crash
from readscale.metrics import WriteBehindCollector
from readscale.stack import Stack
from readscale.stack.slowdisk import SlowDisk
from readscale.testing.concurrency import sync_gather
from readscale.testing.shared import new_stack_root

pytestmark = [pytest.mark.stack, pytest.mark.slow, pytest.mark.chaos]

SEED = int(os.environ.get("READSCALE_CRASH_SEED", "5"))
POLICY = CachePolicy(name="dur", ttl=600.0, jitter=0.0, early_refresh=0.0, tiers=frozenset({Tier.L2}))


@pytest.fixture
def root() -> Path:
    return new_stack_root("readscale-wbcrash-")


def test_durable_mode_loses_nothing_when_redis_and_the_flusher_crash_on_a_slow_disk(root: Path) -> None:
    plan = CrashPlan(mode="durable", appendfsync="always", fsync_delay_ms=50, seconds=12.0, seed=SEED,
                     redis_kills=("process", "rewrite", "host"))  # fmt: skip
    result = run_crash(plan, root / "durable")
    print("durable crash run:", json.dumps(result.to_dict()))
    assert result.redis_kills == {"process": 1, "rewrite": 1, "host": 1}
    assert result.killed_during_rewrite == 1
    assert result.flusher_kills >= 3
    assert result.acknowledged_writes > 200
    assert result.acknowledged_increments > 50
    assert result.unacknowledged_attempts > 0  # writes did meet the outages
    assert result.lost_writes == 0
    assert result.counter_increments_lost == 0
    assert result.counter_overcount == 0
    assert result.version_regressions == 0
    assert result.wrong_values == 0
    assert result.cache_database_mismatches == 0
    assert result.producer_errors == []
    assert promise_kept(result)


def test_fast_mode_loses_only_writes_made_within_its_window(root: Path) -> None:
    plan = CrashPlan(mode="fast", appendfsync="everysec", fsync_delay_ms=800, seconds=10.0, seed=SEED,
                     redis_kills=("process", "process", "process"))  # fmt: skip
    result = run_crash(plan, root / "fast")
    print("fast crash run:", json.dumps(result.to_dict()))
    assert result.redis_kills == {"process": 3}
    # The slow disk does cost acknowledged writes in this mode (what `durable` is for)...
    assert result.lost_writes + result.counter_increments_lost > 0
    # ...and only those made within the stated window before a kill.
    assert result.lost_outside_window == 0, result.outside_window_ages
    assert result.lost_write_max_age <= FAST_LOSS_WINDOW
    assert result.counter_lost_outside_window == 0
    assert result.counter_overcount == 0  # never twice
    assert result.cache_database_mismatches == 0  # nothing Redis lost had reached the database
    assert result.version_regressions == 0
    assert result.wrong_values == 0
    assert result.producer_errors == []
    assert promise_kept(result)


def slow_redis(root: Path, appendfsync: str, delay_ms: int) -> tuple[Stack, SlowDisk, str]:
    stack = Stack(root / "stack")
    stack.prepare()
    disk = SlowDisk(root / "disk", delay_ms=delay_ms)
    node = stack.start_redis(aof=True, appendfsync=appendfsync, environment=disk.environment)
    return stack, disk, node.url


def test_concurrent_producers_share_fsyncs_in_durable_mode(root: Path) -> None:
    """appendfsync always fsyncs once per event-loop turn, for every write of that turn."""
    stack, disk, url = slow_redis(root, "always", 5)
    cache = Cache(RedisBackend(RedisSettings(url=url)), policy=POLICY, prefix="share:")
    wb = WriteBehind(cache, WriteBehindSettings(queue="share"))
    try:
        wb.check()
        before = disk.fsyncs()

        def producer(n: int) -> None:
            for i in range(50):
                wb.write_behind(f"k{n}:{i}", {"n": n, "i": i})

        sync_gather([lambda n=n: producer(n) for n in range(8)])
        fsyncs = disk.fsyncs() - before
    finally:
        cache.close()
        stack.down()
    print(f"400 acknowledged writes from 8 producers, {fsyncs} fsyncs")
    assert wb.stats.writes == 400
    assert 0 < fsyncs <= 200  # shared: at least two writes per fsync on average


class Counting:
    def write_batch(self, records: list[WriteRecord]) -> int:
        return len(records)

    def failure_kind(self, exc: Exception) -> None:
        raise AssertionError(exc)


def test_a_disk_too_slow_for_fast_mode_shows_in_aof_delayed_fsync_logs_and_metrics(
    root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A 2.5 s fsync makes Redis (everysec) give up postponing its writes: INFO's
    aof_delayed_fsync grows; the flusher logs it and exports it, the producer sees it."""
    stack, _, url = slow_redis(root, "everysec", 2500)
    cache = Cache(RedisBackend(RedisSettings(url=url)), policy=POLICY, prefix="slow:")
    wb = WriteBehind(cache, WriteBehindSettings(queue="slow", mode="fast"))
    flusher = Flusher(Counting(), url, settings=FlusherSettings(queue="slow", prefix="slow:", mode="fast",  # type: ignore[arg-type]
                                                                 recheck_every=0.2, block=0.1))  # fmt: skip
    stop = threading.Event()
    client = redis.Redis.from_url(url)

    def load() -> None:
        while not stop.is_set():
            client.set("filler", "x" * 100)

    loader = threading.Thread(target=load)
    loader.start()
    try:
        with caplog.at_level(logging.WARNING, logger="readscale.writebehind"):
            deadline = time.monotonic() + 30
            while flusher.stats.aof_delayed_fsync < 1:
                assert time.monotonic() < deadline, "Redis never postponed an fsync past its limit"
                wb.write_behind("k", {"t": time.time()})
                flusher.run_once()
        wb.check()
    finally:
        stop.set()
        loader.join()
        client.close()
        flusher.close()
        cache.close()
        stack.down()
    assert any("aof_delayed_fsync=" in r.getMessage() for r in caplog.records)
    assert wb.stats.aof_delayed_fsync >= 1
    metrics = {m.name: m for m in WriteBehindCollector(flusher.stats, wb.stats).collect()}
    exported = {s.labels["role"]: s.value for s in metrics["readscale_writebehind_aof_delayed_fsync"].samples}
    assert exported["flusher"] >= 1
    assert exported["producer"] >= 1


def test_the_shim_is_built_by_the_projects_own_files(root: Path, tmp_path: Path) -> None:
    from readscale.stack.slowdisk import SHIM_SOURCE, build_shim

    assert SHIM_SOURCE.exists()
    library = build_shim(tmp_path)
    assert library.exists()
    assert build_shim(tmp_path) == library  # built once per source version
