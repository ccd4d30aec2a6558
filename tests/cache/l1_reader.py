"""A reader process for the cross-process L1 test: reads one key in a loop through a
sync Cache with an L1 and the bus, and reports every read with the bus's counters.

    python -m tests.cache.l1_reader '<json options>'
"""

from __future__ import annotations

import json
import sys
import time

import redis

from readscale import MemoryStore, RedisSettings
from readscale._core.cache.policy import CachePolicy
from readscale._sync.backends.redis import RedisBackend
from readscale._sync.cache.bus import InvalidationBus
from readscale._sync.cache.cache import Cache


def main() -> None:
    opts = json.loads(sys.argv[1])
    settings = RedisSettings(url=opts["redis_url"])
    source = redis.Redis.from_url(opts["redis_url"], protocol=2)  # stands in for the database
    bus = InvalidationBus(settings, channel=opts["channel"])
    cache = Cache(
        RedisBackend(settings),
        l1=MemoryStore(100),
        bus=bus,
        policy=CachePolicy(name="l1test", ttl=300.0, l1_ttl=300.0, early_refresh=0.0),
        prefix=opts["prefix"],
    )

    def load() -> str:
        raw = source.get(opts["source_key"])
        return raw.decode() if raw else ""

    reads = []
    deadline = time.monotonic() + opts["seconds"]
    cache.get_or_load("k", load)
    source.incr(opts["ready_key"])
    while time.monotonic() < deadline:
        received = bus.stats.received  # read first: what the bus had handled before this read
        value = cache.get_or_load("k", load)
        reads.append((value, received))
        time.sleep(0.0005)
    sys.stdout.write(
        json.dumps(
            {
                "reads": reads,
                "l1_hits": cache.stats.l1.hits,
                "delay_max": bus.stats.delay_max,
                "delay_last": bus.stats.delay_last,
                "received": bus.stats.received,
            }
        )
    )
    cache.close()


if __name__ == "__main__":
    main()
