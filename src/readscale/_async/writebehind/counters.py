"""Write-behind, the counters: summed increments, applied to the database exactly once.

Written once, async; ``readscale._sync.writebehind.counters`` is generated from this file.
The producers' increments add up in the queue's running-sum hash; a flusher moves them
into the stream as a sums record (one atomic script, on a seal request or every
``seal_every``), and the writer adds each sums record to the database exactly once (it
records the record's id in the same transaction and skips ids it holds). The ids it
holds are pruned once no record older than them can come back.

The flusher's loop reads the sums records with the writes and hands them here
(:meth:`AsyncCounters.apply`); deltas the database refuses go to the dead letters.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from readscale._async.writebehind.dead_letters import AsyncDeadLetters, first_line
from readscale._async.writebehind.queue import AsyncWriteQueue
from readscale._async.writebehind.writers import AsyncBatchWriter
from readscale._core.writebehind.flush import backoff
from readscale._core.writebehind.records import (
    CounterRecord,
    CounterSums,
    IncrementsApplied,
    enqueued_at,
    parse_stream_id,
)
from readscale._core.writebehind.settings import FlusherSettings
from readscale._shared.primitives.locks import AsyncEvent
from readscale._shared.writebehind.stats import FlusherStats
from readscale.errors import ConfigurationError

log = logging.getLogger("readscale.writebehind")

#: Seconds between prunes of the ids of applied sums records kept by the writer.
PRUNE_EVERY = 600.0
#: An applied sums record's id is kept at least this long (and while the stream still
#: holds older records), so a redelivery is recognised.
APPLIED_RETENTION = 86_400.0


class AsyncCounters:
    """Seals the running sums of one queue and applies the sums records through the
    writer's ``apply_increments`` (see :class:`~readscale.writebehind.AsyncCounterWriter`);
    owns when to seal and prune next. ``stop`` ends a retry wait (the records stay
    pending for the next flusher)."""

    def __init__(
        self,
        queue: AsyncWriteQueue,
        writer: AsyncBatchWriter,
        settings: FlusherSettings,
        stats: FlusherStats,
        dead_letters: AsyncDeadLetters,
        *,
        consumer: str,
        stop: AsyncEvent,
        clock: Callable[[], float],
        monotonic: Callable[[], float],
        rng: Callable[[], float],
    ) -> None:
        self.queue = queue
        self.writer = writer
        self.settings = settings
        self.stats = stats
        self.consumer = consumer
        self._dead_letters = dead_letters
        self._stop = stop
        self._clock = clock
        self._monotonic = monotonic
        self._rng = rng
        self._next_seal = 0.0
        self._next_prune = 0.0
        self._applied = False

    async def seal_if_due(self) -> None:
        """Seal if ``seal_every`` has passed since the last seal."""
        if self._monotonic() >= self._next_seal:
            await self.seal()

    async def seal(self) -> None:
        """Move the running sums into the stream (any flusher may; the script is atomic)."""
        self._next_seal = self._monotonic() + self.settings.seal_every
        ids = await self.queue.seal()
        if ids:
            self.stats.seals += 1

    async def apply(self, sums: list[CounterSums]) -> None:
        """Add ``sums`` to the database in one transaction, retried after transient
        failures, then acknowledge them (with the refused deltas dead-lettered). A writer
        that cannot apply increments raises :class:`ConfigurationError`: they stay queued."""
        s = self.settings
        apply = getattr(self.writer, "apply_increments", None)
        if apply is None:
            raise ConfigurationError(
                f"queue {s.queue!r} holds counter increments, and the writer {type(self.writer).__name__} cannot "
                "apply them (AsyncPostgresWriter needs counter_column=..., the CLI --counter-column); they stay "
                "queued"
            )
        ids = [r.id for r in sums]
        batch = [CounterRecord(r.id, r.deltas) for r in sums if r.deltas]
        attempt = 0
        held_at = self._monotonic()
        while batch:
            try:
                outcome: IncrementsApplied = await apply(self.queue.keys.stream, batch)
                break
            except ConfigurationError:
                raise
            except Exception as exc:
                attempt += 1
                self.stats.transient_failures += 1
                self.stats.retries += 1
                delay = backoff(attempt, s, self._rng())
                log.warning(
                    "flusher %s: applying %d counter sums records failed (%s: %s); retrying in %.2fs",
                    self.consumer,
                    len(batch),
                    type(exc).__name__,
                    first_line(exc),
                    delay,
                    extra={
                        "event": "flusher_counter_sums_retry",
                        "consumer": self.consumer,
                        "count": len(batch),
                        "reason": first_line(exc),
                        "retry_s": delay,
                    },
                )
                if self._monotonic() - held_at > s.claim_idle / 2:
                    await self.queue.keep_claimed(s.group, self.consumer, ids)
                    held_at = self._monotonic()
                if await self._stop.wait(delay):
                    return
        else:
            outcome = IncrementsApplied(0, 0)
        self._applied = True
        self.stats.transactions += 1 if batch else 0
        self.stats.sums_applied += outcome.applied
        self.stats.sums_duplicates += outcome.duplicates
        self.stats.observe_lag(min(enqueued_at(i) for i in ids), self._clock())
        if outcome.refused:
            await self._dead_letters.increments(ids, outcome.refused)
            return
        self.stats.queue_length = await self.queue.ack(s.group, ids)

    async def prune_if_due(self, now: float) -> None:
        """Prune every ``PRUNE_EVERY`` seconds once this flusher has applied sums."""
        if self._applied and now >= self._next_prune:
            await self.prune()

    async def prune(self) -> None:
        """Let the writer forget ids of applied sums records older than the retention
        and than every record still in the stream (none of those can come back)."""
        self._next_prune = self._monotonic() + PRUNE_EVERY
        prune = getattr(self.writer, "prune_applied", None)
        if prune is None:
            return
        cutoff = int((self._clock() - APPLIED_RETENTION) * 1000)
        first = await self.queue.first_id()
        if first is not None:
            cutoff = min(cutoff, parse_stream_id(first)[0])
        try:
            await prune(self.queue.keys.stream, cutoff)
        except Exception as exc:
            log.warning(
                "flusher %s: pruning applied ids failed (%s); trying again later",
                self.consumer,
                first_line(exc),
                extra={"event": "flusher_prune_failed", "consumer": self.consumer, "reason": first_line(exc)},
            )


__all__ = ["APPLIED_RETENTION", "PRUNE_EVERY", "AsyncCounters"]
