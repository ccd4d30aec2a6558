"""Acceptance: two processes with L1 tiers; an invalidation in one leaves the other with
0 stale reads once the bus delivers it, and the delivery delay is measured."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid

import pytest
import redis

from readscale import RedisSettings
from readscale._sync.backends.redis import RedisBackend
from readscale._sync.cache.bus import InvalidationBus
from readscale._sync.cache.cache import Cache

pytestmark = [pytest.mark.stack, pytest.mark.slow]


def test_the_other_process_serves_no_stale_read_after_delivery(redis_url: str) -> None:
    run = uuid.uuid4().hex[:8]
    opts = {
        "redis_url": redis_url,
        "channel": f"bus-{run}",
        "prefix": f"l1x{run}:",
        "source_key": f"src-{run}",
        "ready_key": f"ready-{run}",
        "seconds": 3.0,
    }
    source = redis.Redis.from_url(redis_url, protocol=2)
    source.set(opts["source_key"], "v1")
    reader = subprocess.Popen(
        [sys.executable, "-m", "tests.cache.l1_reader", json.dumps(opts)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while not source.get(opts["ready_key"]):
            assert reader.poll() is None, reader.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.01)
        time.sleep(0.5)  # the reader serves v1 from its L1 for a while
        settings = RedisSettings(url=redis_url)
        bus = InvalidationBus(settings, channel=opts["channel"])
        writer = Cache(RedisBackend(settings), bus=bus, prefix=opts["prefix"])
        source.set(opts["source_key"], "v2")  # the database changes...
        writer.invalidate("k")  # ...and the writer invalidates after commit
        out, err = reader.communicate(timeout=30)
    finally:
        if reader.poll() is None:
            reader.kill()
    assert reader.returncode == 0, err
    report = json.loads(out)
    reads = report["reads"]
    assert report["received"] == 1
    before = [value for value, received in reads if received == 0]
    after = [value for value, received in reads if received >= 1]
    assert before and after
    assert set(before) <= {"v1", "v2"}  # before delivery the L1 may still serve v1
    assert after.count("v1") == 0  # once delivered: 0 stale reads
    assert report["l1_hits"] > 100  # the reader really served from its L1
    assert report["delay_max"] > 0  # measured and reported (readscale bench consistency prints it)
    writer.close()
