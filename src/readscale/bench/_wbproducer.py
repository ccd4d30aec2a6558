"""One producer process of the write-behind crash harness (``python -m readscale.bench._wbproducer``).

Runs ``--threads`` threads, each writing through the sync :class:`WriteBehind` for
``--seconds``: values (``{"p": producer, "s": seq}`` on a random key of ``--keys``, or,
for a ``--unique`` share of them, on a key of their own, so that a lost write cannot
hide behind a later one of its key) and,
with ``--counters``, increments of 1 on a random counter of ``--counter-keys``. Every
acknowledged operation is recorded with its wall-clock time; every attempt that raised
(Redis down: not acknowledged, though it may still have been applied) apart. The time
recorded is when the call was made: a loss's distance to the crash that caused it is
then never under-stated by a thread scheduled late after its reply. At the end
everything is written as JSON to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import random
import threading
import time
from pathlib import Path
from typing import Any

from readscale import RedisSettings
from readscale._core.cache.policy import CachePolicy, Tier
from readscale._core.writebehind.settings import WriteBehindSettings
from readscale._sync.backends.redis import RedisBackend
from readscale._sync.cache.cache import Cache
from readscale._sync.writebehind.producer import WriteBehind
from readscale.errors import CacheUnavailableError

POLICY = CachePolicy(name="crash", ttl=3600.0, jitter=0.0, early_refresh=0.0, tiers=frozenset({Tier.L2}))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--queue", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--mode", default="durable")
    parser.add_argument("--producer", type=int, required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--keys", type=int, default=200)
    parser.add_argument("--counters", type=float, default=0.0, help="share of operations that are increments")
    parser.add_argument("--unique", type=float, default=0.5, help="share of value writes on a key of their own")
    parser.add_argument("--counter-keys", type=int, default=20)
    parser.add_argument("--pause", type=float, default=0.0, help="seconds between two operations of a thread")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    cache = Cache(RedisBackend(RedisSettings(url=args.url, socket_timeout_ms=3000.0)), policy=POLICY,
                  prefix=args.prefix)  # fmt: skip
    wb = WriteBehind(cache, WriteBehindSettings(queue=args.queue, max_queue_length=0, mode=args.mode))
    lock = threading.Lock()
    seq = 0
    out: dict[str, Any] = {"acked": [], "unacked": [], "increments": [], "unacked_increments": [], "errors": []}
    deadline = time.monotonic() + args.seconds

    def next_seq() -> int:
        nonlocal seq
        with lock:
            seq += 1
            return seq

    def worker(n: int) -> None:
        rng = random.Random(args.producer * 1000 + n)
        while time.monotonic() < deadline:
            if rng.random() < args.counters:
                key = f"c{rng.randrange(args.counter_keys)}"
                called = time.time()
                try:
                    wb.increment(key, 1)
                except CacheUnavailableError:
                    with lock:
                        out["unacked_increments"].append(key)
                    time.sleep(0.05)
                    continue
                with lock:
                    out["increments"].append((key, called))
            else:
                s = next_seq()
                key = f"u{args.producer}.{s}" if rng.random() < args.unique else f"k{rng.randrange(args.keys)}"
                called = time.time()
                try:
                    version = wb.write_behind(key, {"p": args.producer, "s": s})
                except CacheUnavailableError:
                    with lock:
                        out["unacked"].append((key, s))
                    time.sleep(0.05)
                    continue
                with lock:
                    out["acked"].append((key, version, s, called))
            if args.pause:
                time.sleep(args.pause)

    def guarded(n: int) -> None:
        try:
            worker(n)
        except Exception as exc:  # anything else is a finding: record it, the harness fails on it
            with lock:
                out["errors"].append(f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=guarded, args=(n,)) for n in range(args.threads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    cache.close()
    Path(args.out).write_text(json.dumps(out))


if __name__ == "__main__":
    main()
