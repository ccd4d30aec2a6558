"""One producer process of the write-behind crash test (run as a script).

Writes through the sync ``WriteBehind`` until it has ``--writes`` acknowledged writes,
each a value naming its producer and sequence number on a random key of ``--keys``,
spread over at least ``--seconds`` (so the flusher can be killed many times meanwhile).
It records every acknowledged ``(key, version, seq)`` and every attempt that raised
(``(key, seq)``: not acknowledged, though it may still have been applied), and writes
both as JSON to ``--out`` when done.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

from readscale._core.policy import CachePolicy, Tier
from readscale._core.writebehind import WriteBehindSettings
from readscale._sync.backends.redis import RedisBackend
from readscale._sync.cache import Cache
from readscale._sync.writebehind import WriteBehind
from readscale.errors import CacheUnavailableError
from readscale.settings import RedisSettings


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--queue", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--producer", type=int, required=True)
    parser.add_argument("--writes", type=int, required=True)
    parser.add_argument("--keys", type=int, required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--seconds", type=float, default=0.0, help="spread the writes over at least this long")
    args = parser.parse_args()

    policy = CachePolicy(name="crash", ttl=3600.0, jitter=0.0, early_refresh=0.0, tiers=frozenset({Tier.L2}))
    cache = Cache(RedisBackend(RedisSettings(url=args.url)), policy=policy, prefix=args.prefix)
    wb = WriteBehind(cache, WriteBehindSettings(queue=args.queue, max_queue_length=0))
    rng = random.Random(args.producer)
    acked: list[tuple[str, int, int]] = []
    unacked: list[tuple[str, int]] = []
    seq = 0
    started = time.monotonic()
    while len(acked) < args.writes:
        seq += 1
        key = f"k{rng.randrange(args.keys)}"
        try:
            version = wb.write_behind(key, {"p": args.producer, "s": seq})
        except CacheUnavailableError:
            unacked.append((key, seq))
            time.sleep(0.02)
            continue
        acked.append((key, version, seq))
        ahead = started + args.seconds * len(acked) / args.writes - time.monotonic()
        if ahead > 0.01:
            time.sleep(ahead)
    elapsed = time.monotonic() - started
    cache.close()
    Path(args.out).write_text(json.dumps({"acked": acked, "unacked": unacked, "seconds": elapsed}))


if __name__ == "__main__":
    main()
