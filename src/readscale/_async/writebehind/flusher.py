"""Write-behind, the flusher: apply the queued writes to the database in batches.

Written once, async; ``readscale._sync.writebehind.flusher`` is generated from this file. The loop
is "read, ask the core, act" (``readscale._core.writebehind`` holds every rule):

1. Read a batch: this flusher's own pending records first (its work before a restart),
   then records idle in other consumers past ``claim_idle`` (XAUTOCLAIM: a dead
   flusher's work), then new records, until ``batch_size`` or ``batch_wait``.
2. Coalesce: the newest version of each key wins.
3. Write the batch in one transaction through the batch writer; acknowledge (XACK +
   XDEL) only after it committed. A failure is classified by the writer: transient
   (retry the batch after a backoff) or the data's fault (split the batch to isolate the
   record; dead-letter it after ``max_attempts``).

A flusher killed at any point loses nothing: whatever it had not acknowledged stays
pending and is written again, and the writer's version rule makes that a no-op for rows
that had already committed.

Parts own the rest, each its state: :mod:`.reader` (step 1), :mod:`.counters` (the
summed increments, sealed into the stream and applied exactly once), :mod:`.dead_letters`
(what the flusher gives up on, and the decoding that finds undecodable records),
:mod:`.durability` (the Redis against the mode) and, in fast mode, :mod:`.hold` (what is
read waits out the mode's loss window).

At start the flusher checks the Redis against the durability mode and the writer
against its database (a missing table or column): either refusal ends :meth:`run` with
a :class:`~readscale.errors.ConfigurationError` (the CLI exits 2 with one line) instead
of retrying forever. Servers that are down at start are waited for.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import socket
import time
from collections.abc import Callable, Sequence
from typing import Any, assert_never

from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from readscale._async.writebehind.counters import AsyncCounters
from readscale._async.writebehind.dead_letters import AsyncDeadLetters, error_text, first_line
from readscale._async.writebehind.durability import AsyncFlusherDurability
from readscale._async.writebehind.hold import AsyncHold
from readscale._async.writebehind.queue import AsyncWriteQueue, Entry
from readscale._async.writebehind.reader import AsyncReader
from readscale._async.writebehind.writers import AsyncBatchWriter, default_codecs
from readscale._core.writebehind.flush import (
    Coalesced,
    DeadLetter,
    FailureKind,
    FlushPlan,
    RetryAfter,
    Split,
    WaitFor,
    after_failure,
    after_success,
    backoff,
    coalesce,
    consumers_to_forget,
    next_write,
    plan_flush,
)
from readscale._core.writebehind.records import (
    CounterSums,
    Malformed,
    QueuedWrite,
    SealRequest,
    WriteRecord,
    enqueued_at,
    parse_record,
)
from readscale._core.writebehind.settings import FlusherSettings
from readscale._shared.primitives.locks import AsyncEvent
from readscale._shared.redis_clients import async_redis_client
from readscale._shared.tracing import CLIENT, CONSUMER, event, maybe_span, note
from readscale._shared.writebehind.stats import FlusherStats
from readscale.codecs import Codec
from readscale.errors import CacheUnavailableError, ConfigurationError
from readscale.settings import RedisSettings

log = logging.getLogger("readscale.writebehind")


class _WriterUnavailable(Exception):
    """The writer's start check failed for a reason other than its configuration."""


class AsyncFlusher:
    """Flushes one write-behind queue to the database through ``writer``.

    Arguments:
        writer: the batch writer (see :class:`AsyncBatchWriter`).
        redis: the Redis holding the queue: a URL or :class:`RedisSettings` (its socket
            timeout is raised above ``settings.block`` so blocking reads fit in it).
        client: a ready redis-py asyncio client instead (not closed by :meth:`aclose`).
        settings: batching, retries, claiming (:class:`FlusherSettings`).
        codecs: codecs the producers used (default: JSON, msgpack, bytes).
        clock: wall-clock seconds (flush lag); monotonic: for waits and deadlines;
        rng: uniform in [0, 1) for backoff jitter.

    Run it as a task (``await flusher.run()`` until :meth:`stop`), or call
    :meth:`run_once` / :meth:`drain` yourself. Counters are in ``flusher.stats``.
    """

    def __init__(
        self,
        writer: AsyncBatchWriter,
        redis: str | RedisSettings | None = None,
        *,
        client: Any | None = None,
        settings: FlusherSettings | None = None,
        codecs: Sequence[Codec] | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.writer = writer
        self.settings = settings or FlusherSettings()
        self.consumer = self.settings.consumer or socket.gethostname()
        self._owns_client = client is None
        where = "redis"
        if client is None:
            if isinstance(redis, RedisSettings):
                redis_settings = redis
            else:
                redis_settings = RedisSettings(url=redis) if redis else RedisSettings()
            timeout_ms = max(redis_settings.socket_timeout_ms, (self.settings.block + 5.0) * 1000)
            redis_settings = dataclasses.replace(redis_settings, socket_timeout_ms=timeout_ms)
            client = async_redis_client(redis_settings, retry=Retry(NoBackoff(), 1))
            where = redis_settings.safe_url
        self.queue = AsyncWriteQueue(client, self.settings.keys, where=where)
        self.stats = FlusherStats(self.settings.queue)
        self._clock = clock
        self._monotonic = monotonic
        self._rng = rng
        self._stop = AsyncEvent()
        self._group_ready = False
        self._next_housekeeping = 0.0
        self._started = False
        self._durability = AsyncFlusherDurability(self.queue, self.settings, self.stats, consumer=self.consumer,
                                                  monotonic=monotonic)  # fmt: skip
        self._hold = AsyncHold(self.queue, self.settings, consumer=self.consumer, monotonic=monotonic)
        self._reader = AsyncReader(self.queue, self.settings, self.stats, self._hold, consumer=self.consumer,
                                   stop=self._stop, monotonic=monotonic)  # fmt: skip
        codecs_by_id = {codec.id: codec for codec in (codecs or default_codecs())}
        self._dead_letters = AsyncDeadLetters(self.queue, self.settings, self.stats, codecs_by_id,
                                              consumer=self.consumer, clock=clock)  # fmt: skip
        self._counters = AsyncCounters(self.queue, writer, self.settings, self.stats, self._dead_letters,
                                       consumer=self.consumer, stop=self._stop, clock=clock, monotonic=monotonic,
                                       rng=rng)  # fmt: skip

    # -- running -----------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask :meth:`run` to return: the batch being written is committed and acknowledged
        (a batch waiting to retry is left pending for the next flusher)."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    async def run(self, on_started: Callable[[], None] | None = None) -> None:
        """Flush until :meth:`stop`. Redis and database outages are waited out (logged
        and counted); they never end the loop. A configuration that cannot work (the
        Redis too weak for the mode at start, a missing table or column, counters with
        a writer that cannot apply them) raises :class:`ConfigurationError`.
        ``on_started`` is called once the start checks passed."""
        failures = 0
        while not self._stop.is_set():
            try:
                if not self._started:
                    await self.start()
                    if on_started is not None:
                        on_started()
                await self.run_once()
                failures = 0
            except CacheUnavailableError as exc:
                failures += 1
                self.stats.redis_errors += 1
                self._lost_track()
                delay = backoff(failures, self.settings, self._rng())
                log.warning(
                    "flusher %s: %s; retrying in %.2fs",
                    self.consumer,
                    exc,
                    delay,
                    extra={
                        "event": "flusher_redis_retry",
                        "consumer": self.consumer,
                        "reason": str(exc),
                        "retry_s": delay,
                    },
                )
                await self._stop.wait(delay)
            except _WriterUnavailable as exc:
                failures += 1
                self.stats.transient_failures += 1
                delay = backoff(failures, self.settings, self._rng())
                log.warning(
                    "flusher %s: the writer's start check failed (%s); retrying in %.2fs",
                    self.consumer,
                    exc,
                    delay,
                    extra={
                        "event": "flusher_start_check_retry",
                        "consumer": self.consumer,
                        "reason": str(exc),
                        "retry_s": delay,
                    },
                )
                await self._stop.wait(delay)

    async def start(self) -> None:
        """The start checks (see the module docstring), once; :meth:`run` and
        :meth:`run_once` call it. Raises :class:`DurabilityError` or another
        :class:`ConfigurationError` for a configuration that cannot work."""
        if self._started:
            return
        await self.check_durability(at_start=True)
        check = getattr(self.writer, "check", None)
        if check is not None:
            try:
                await check()
            except ConfigurationError:
                raise
            except Exception as exc:
                raise _WriterUnavailable(f"{type(exc).__name__}: {first_line(exc)}") from exc
        self._started = True

    async def check_durability(self, *, at_start: bool = False) -> bool:
        """Check the Redis against ``settings.mode``: at start a refusal raises
        :class:`DurabilityError`; later it is logged (once per cause) and counted, and
        flushing goes on (the queue is not less safe for being drained)."""
        return await self._durability.check(at_start=at_start)

    async def run_once(self) -> int:
        """Read one batch (waiting up to ``block`` for it) and write it; the number of
        records taken from the queue (0: nothing to do)."""
        await self.start()
        if not self._group_ready:
            await self.queue.ensure_group(self.settings.group)
            self._group_ready = True
        await self._housekeeping()
        await self._counters.seal_if_due()
        await self._release_held()
        entries = await self._reader.read()
        if entries:
            await self._flush(entries)
        return len(entries) + len(self._hold)

    async def drain(self, timeout: float = 60.0) -> bool:
        """Flush until the queue is empty (true) or ``timeout`` seconds pass (false)."""
        deadline = self._monotonic() + timeout
        while self._monotonic() < deadline:
            try:
                handled = await self.run_once()
            except CacheUnavailableError:
                self.stats.redis_errors += 1
                self._lost_track()
                await self._stop.wait(self.settings.retry_base)
                continue
            if not handled and await self.queue.length() == 0 and await self.queue.pending_sums() == 0:
                return True
        return False

    async def aclose(self) -> None:
        """Close the Redis client this flusher made (not the writer: it belongs to you)."""
        if self._owns_client:
            await self.queue.aclose()

    def _lost_track(self) -> None:
        """After a Redis error, start again from this consumer's own pending records (the
        batch in hand was not acknowledged, held sums are read again), and check the
        group exists."""
        self._reader.restart()
        self._group_ready = False
        self._hold.clear()

    async def _housekeeping(self) -> None:
        now = self._monotonic()
        if self._durability.due(now):
            await self.check_durability()
        await self._counters.prune_if_due(now)
        if now < self._next_housekeeping:
            return
        self._next_housekeeping = now + max(self.settings.claim_idle, 10.0)
        self.stats.queue_length = await self.queue.length()
        consumers = await self.queue.consumers(self.settings.group)
        for name in consumers_to_forget(consumers, self.consumer, self.settings):
            await self.queue.forget_consumer(self.settings.group, name)
            log.info(
                "flusher %s: removed idle consumer %s from the group",
                self.consumer,
                name,
                extra={"event": "flusher_idle_consumer_removed", "consumer": self.consumer, "node": name},
            )

    # -- writing -------------------------------------------------------------------------------

    async def _flush(self, entries: list[Entry]) -> None:
        self.stats.records_read += len(entries)
        seen_at = self._monotonic()
        records: list[QueuedWrite] = []
        sums: list[CounterSums] = []
        gone: list[str] = []
        seal_requests: list[str] = []
        for entry_id, fields in entries:
            if not fields:  # deleted from the stream while pending: nothing to write
                gone.append(entry_id)
                continue
            parsed = parse_record(entry_id, fields)
            if isinstance(parsed, Malformed):
                await self._dead_letters.malformed(parsed)
            elif isinstance(parsed, SealRequest):
                seal_requests.append(parsed.id)
            elif isinstance(parsed, CounterSums):
                sums.append(parsed)
            else:
                records.append(parsed)
        if seal_requests:
            await self._counters.seal()  # first: the requests are acknowledged only once their sums are in the stream
            gone += seal_requests
        if gone:
            self.stats.queue_length = await self.queue.ack(self.settings.group, gone)
        if self._hold.active:  # fast mode: applied once the loss window has passed (see .hold)
            self._hold.add(records, sums, seen_at)
            return
        if records:
            await self._flush_writes(records)
        if sums:
            await self._counters.apply(sums)

    async def _flush_writes(self, records: list[QueuedWrite]) -> None:
        attributes: dict[str, str | int] = {
            "readscale.writebehind.consumer": self.consumer,
            "readscale.writebehind.records": len(records),
        }
        with maybe_span("readscale.writebehind.flush", attributes, CONSUMER):
            coalesced = coalesce(records)
            self.stats.coalesced += coalesced.superseded_count
            note("readscale.writebehind.superseded", coalesced.superseded_count)
            decoded = await self._dead_letters.decode(coalesced)
            winners = [r for r in coalesced.winners if r.id in decoded]
            if winners:
                self.stats.batches += 1
                await self._write(plan_flush(winners), coalesced, decoded)

    async def _release_held(self) -> None:
        """Write the held records (fast mode) that have waited out the loss window; read
        again what Redis kept if it restarted meanwhile."""
        ready = await self._hold.release()
        if ready is None:
            self._lost_track()
            return
        writes, sums = ready
        if writes:
            await self._flush_writes(writes)
        if sums:
            await self._counters.apply(sums)

    async def _write(self, plan: FlushPlan, coalesced: Coalesced, decoded: dict[str, WriteRecord]) -> None:
        s = self.settings
        claimed_at = self._monotonic()
        while True:
            now = self._monotonic()
            if now - claimed_at > s.claim_idle / 2:
                # Still on this batch (retrying): keep other flushers from claiming it.
                held = [r for c in plan.chunks for r in c.records]
                await self.queue.keep_claimed(s.group, self.consumer, coalesced.ack_ids(held))
                claimed_at = now
            action = next_write(plan, now)
            if action is None:
                return
            if isinstance(action, WaitFor):
                if await self._stop.wait(min(action.delay, s.claim_idle / 3)):
                    log.info(
                        "flusher %s: stopping; %d records left pending",
                        self.consumer,
                        sum(len(c.records) for c in plan.chunks),
                        extra={
                            "event": "flusher_stopping",
                            "consumer": self.consumer,
                            "count": sum(len(c.records) for c in plan.chunks),
                        },
                    )
                    return
                continue
            batch = [decoded[r.id] for r in action.chunk.records]
            with maybe_span("readscale.writebehind.write", {"db.operation.batch.size": len(batch)}, CLIENT):
                try:
                    applied = await self.writer.write_batch(batch)
                except Exception as exc:
                    note("error.type", type(exc).__qualname__)
                    failure: Exception | None = exc
                else:
                    failure = None
            if failure is not None:
                plan = await self._failed(plan, action.index, coalesced, failure)
                continue
            self._committed(batch, applied)
            ids = coalesced.ack_ids(action.chunk.records)
            self.stats.observe_lag(min(enqueued_at(i) for i in ids), self._clock())
            self.stats.queue_length = await self.queue.ack(s.group, ids)
            plan = after_success(plan, action.index)

    def _committed(self, batch: list[WriteRecord], applied: object) -> None:
        self.stats.transactions += 1
        self.stats.batch_sizes.observe(len(batch))
        # A writer that returns no count (None) is taken to have applied everything.
        count = max(0, min(applied, len(batch))) if isinstance(applied, int) else len(batch)
        self.stats.rows_applied += count
        self.stats.rows_skipped += len(batch) - count

    def _classify(self, exc: Exception) -> FailureKind:
        """The writer's verdict on ``exc``; a classifier that fails says "transient" (a
        retry loses nothing, a wrong dead letter would need an operator)."""
        try:
            return self.writer.failure_kind(exc)
        except Exception as classify_exc:
            log.error(
                "flusher %s: the writer could not classify %s (%s); treating it as transient",
                self.consumer,
                type(exc).__name__,
                classify_exc,
                exc_info=classify_exc,
                extra={"event": "flusher_unclassified_error", "consumer": self.consumer, "reason": type(exc).__name__},
            )
            return FailureKind.TRANSIENT

    async def _failed(self, plan: FlushPlan, index: int, coalesced: Coalesced, exc: Exception) -> FlushPlan:
        kind = self._classify(exc)
        size = len(plan.chunks[index].records)
        plan, step = after_failure(plan, index, kind, self.settings, self._rng(), self._monotonic())
        if kind is FailureKind.TRANSIENT:
            self.stats.transient_failures += 1
        else:
            self.stats.record_failures += 1
        match step:
            case RetryAfter(delay=delay):
                self.stats.retries += 1
                log.warning(
                    "flusher %s: writing %d records failed (%s: %s: %s); retrying in %.2fs",
                    self.consumer,
                    size,
                    kind.value,
                    type(exc).__name__,
                    first_line(exc),
                    delay,
                    extra={
                        "event": "flusher_write_retry",
                        "consumer": self.consumer,
                        "count": size,
                        "reason": first_line(exc),
                        "retry_s": delay,
                    },
                )
            case Split(left=left, right=right):
                self.stats.splits += 1
                log.info(
                    "flusher %s: a batch of %d was refused (%s); writing halves of %d and %d to find the record",
                    self.consumer,
                    size,
                    first_line(exc),
                    left,
                    right,
                    extra={
                        "event": "flusher_batch_split",
                        "consumer": self.consumer,
                        "count": size,
                        "reason": first_line(exc),
                    },
                )
            case DeadLetter(record=record, attempts=attempts):
                event("readscale.writebehind.dead_letter", {
                    "readscale.writebehind.key": record.key,
                    "readscale.writebehind.version": record.version,
                    "readscale.writebehind.attempts": attempts,
                    "error.type": type(exc).__qualname__,
                })  # fmt: skip
                await self._dead_letters.write(record, coalesced, error_text(exc), type(exc).__name__, attempts)
            case _:
                assert_never(step)
        return plan


__all__ = ["AsyncFlusher"]
