"""A CDC worker process for the crash test: applies batches until none is left, or kills
itself (SIGKILL) right after applying its first batch, before confirming the position.

    python -m tests.cdc.worker_process '<json options>'
"""

from __future__ import annotations

import json
import os
import signal
import sys

from readscale import RedisSettings
from readscale._core.cache.policy import CachePolicy, Tier
from readscale._sync.backends.redis import RedisBackend
from readscale._sync.cache.cache import Cache
from readscale._sync.cdc.worker import CdcRule, CdcSettings, CdcWorker


def main() -> None:
    opts = json.loads(sys.argv[1])
    cache = Cache(
        RedisBackend(RedisSettings(url=opts["redis_url"])),
        policy=CachePolicy(name="cdc", ttl=300.0, tiers=frozenset({Tier.L2})),
        prefix=opts["prefix"],
    )

    def crash(commit_lsn: int) -> None:
        if opts["crash"]:
            os.kill(os.getpid(), signal.SIGKILL)  # applied, not yet confirmed

    worker = CdcWorker(
        cache,
        [CdcRule(opts["table"], keys=("product:{id}",))],
        CdcSettings(dsn=opts["dsn"], slot=opts["slot"], tombstones=False, batch_changes=opts["batch"]),
        on_applied=crash,
    )
    while worker.run_once():
        pass
    sys.stdout.write(json.dumps({"transactions": worker.stats.transactions, "keys": worker.stats.keys_invalidated}))
    worker.close()
    cache.close()


if __name__ == "__main__":
    main()
