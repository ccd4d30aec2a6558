"""Write-behind that loses no acknowledged write.

``write_behind(key, value)`` stores the value in the cache and appends the write to a
durable queue (a Redis Stream, on a Redis with AOF) in one atomic script, then returns
its version. How durable is a mode chosen by name (:class:`WriteBehindMode`:
``durable``, the default, ``fast`` or ``volatile``), checked against the Redis's real
settings before the first write and when a flusher starts; a Redis that cannot keep the
promise is refused with :class:`DurabilityError`. ``increment(key, delta)`` queues a
counter's delta, which the flusher applies exactly once.

A flusher applies the queue to the database in batches, one transaction each, newest
version wins, acknowledging only after the commit; a crashed flusher's work is claimed
by another; a record that keeps failing goes to a dead-letter stream with its
error. Past ``max_queue_length`` writers wait or get :class:`WriteQueueFullError`.

    from readscale import AsyncCache
    from readscale.backends import AsyncRedisBackend
    from readscale.writebehind import AsyncFlusher, AsyncPostgresWriter, AsyncWriteBehind

    cache = AsyncCache(AsyncRedisBackend.from_url(REDIS_URL))
    wb = AsyncWriteBehind(cache)
    version = await wb.write_behind("user:42", {"name": "Ada"})   # reads see it at once

    # elsewhere (or `readscale writebehind run`):
    flusher = AsyncFlusher(AsyncPostgresWriter(DSN, table="users"), REDIS_URL)
    await flusher.run()

Sync twins: :class:`WriteBehind`, :class:`Flusher`, :class:`PostgresWriter`. The
PostgreSQL writers need the ``postgres`` extra and are imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from readscale._async.writebehind.flusher import AsyncFlusher
from readscale._async.writebehind.producer import AsyncWriteBehind
from readscale._async.writebehind.queue import AsyncWriteQueue
from readscale._async.writebehind.writers import AsyncBatchWriter, default_codecs
from readscale._core.writebehind.flush import FailureKind
from readscale._core.writebehind.modes import FAST_LOSS_WINDOW, PROMISES, WriteBehindMode
from readscale._core.writebehind.records import (
    CounterRecord,
    DeadLetterRecord,
    IncrementsApplied,
    RecordRejected,
    RefusedIncrement,
    WriteRecord,
)
from readscale._core.writebehind.settings import FlusherSettings, WhenFull, WriteBehindSettings
from readscale._shared.lazy import lazy_exports
from readscale._shared.writebehind.stats import FlusherStats, WriteBehindStats
from readscale._sync.writebehind.flusher import Flusher
from readscale._sync.writebehind.producer import WriteBehind
from readscale._sync.writebehind.queue import WriteQueue
from readscale._sync.writebehind.writers import BatchWriter
from readscale.metrics import WriteBehindCollector

if TYPE_CHECKING:
    from readscale._async.writebehind.postgres import AsyncPostgresWriter
    from readscale._sync.writebehind.postgres import PostgresWriter

# The PostgreSQL writers need psycopg: imported when first asked for, with an install hint.
__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "AsyncPostgresWriter": "readscale._async.writebehind.postgres",
        "PostgresWriter": "readscale._sync.writebehind.postgres",
    },
)


__all__ = [
    "FAST_LOSS_WINDOW",
    "PROMISES",
    "AsyncBatchWriter",
    "AsyncFlusher",
    "AsyncPostgresWriter",
    "AsyncWriteBehind",
    "AsyncWriteQueue",
    "BatchWriter",
    "CounterRecord",
    "DeadLetterRecord",
    "FailureKind",
    "Flusher",
    "FlusherSettings",
    "FlusherStats",
    "IncrementsApplied",
    "PostgresWriter",
    "RecordRejected",
    "RefusedIncrement",
    "WhenFull",
    "WriteBehind",
    "WriteBehindCollector",
    "WriteBehindMode",
    "WriteBehindSettings",
    "WriteBehindStats",
    "WriteQueue",
    "WriteRecord",
    "default_codecs",
]
