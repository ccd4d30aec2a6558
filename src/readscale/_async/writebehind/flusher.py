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

Counters: the producers' increments add up in the queue's running-sum hash; a flusher
moves them into the stream as a sums record (one atomic script, on a seal request or
every ``seal_every``), and the writer adds each sums record to the database exactly
once (it records the record's id in the same transaction and skips ids it holds).

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

import redis.asyncio as redis_asyncio
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from readscale._async.writebehind.queue import AsyncWriteQueue, Entry
from readscale._async.writebehind.writers import (
    AsyncBatchWriter,
    default_codecs,
)
from readscale._core.cache.entry import EnvelopeError, decode_envelope
from readscale._core.cache.keys import physical_key
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
    read_more,
)
from readscale._core.writebehind.modes import FAST_LOSS_WINDOW, WriteBehindMode, check_mode, delayed_fsync_growth
from readscale._core.writebehind.records import (
    CounterRecord,
    CounterSums,
    IncrementsApplied,
    Malformed,
    QueuedWrite,
    SealRequest,
    WriteRecord,
    enqueued_at,
    parse_record,
    parse_stream_id,
)
from readscale._core.writebehind.settings import FlusherSettings
from readscale._shared.primitives.locks import AsyncEvent
from readscale._shared.writebehind.stats import FlusherStats
from readscale.codecs import Codec
from readscale.errors import CacheUnavailableError, ConfigurationError, CorruptValueError, DurabilityError
from readscale.settings import RedisSettings

log = logging.getLogger("readscale.writebehind")

MAX_ERROR_TEXT = 2000


#: Seconds between prunes of the ids of applied sums records kept by the writer.
PRUNE_EVERY = 600.0
#: An applied sums record's id is kept at least this long (and while the stream still
#: holds older records), so a redelivery is recognised.
APPLIED_RETENTION = 86_400.0


class _WriterUnavailable(Exception):
    """The writer's start check failed for a reason other than its configuration."""


class _Undecodable(Exception):
    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


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
            client = redis_asyncio.Redis.from_url(
                redis_settings.url, retry=Retry(NoBackoff(), 1), **redis_settings.client_kwargs()
            )
            where = redis_settings.safe_url
        self.queue = AsyncWriteQueue(client, self.settings.keys, where=where)
        self.stats = FlusherStats(self.settings.queue)
        self._codecs = {codec.id: codec for codec in (codecs or default_codecs())}
        self._clock = clock
        self._monotonic = monotonic
        self._rng = rng
        self._stop = AsyncEvent()
        self._group_ready = False
        self._history: str | None = "0"  # read this consumer's own pending records first
        self._claim_start = "0-0"
        self._next_claim = 0.0
        self._next_housekeeping = 0.0
        self._started = False
        self._next_durability_check = 0.0
        self._refusal: str | None = None
        self._next_seal = 0.0
        self._next_prune = 0.0
        self._applied_sums = False
        # fast mode: (record, when it may be applied, the Redis run_id seen before it was read)
        self._held: list[tuple[QueuedWrite | CounterSums, float, str]] = []
        self._held_touched = 0.0
        self._read_run_id = ""

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
                log.warning("flusher %s: %s; retrying in %.2fs", self.consumer, exc, delay)
                await self._stop.wait(delay)
            except _WriterUnavailable as exc:
                failures += 1
                self.stats.transient_failures += 1
                delay = backoff(failures, self.settings, self._rng())
                log.warning("flusher %s: the writer's start check failed (%s); retrying in %.2fs", self.consumer,
                            exc, delay)  # fmt: skip
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
                raise _WriterUnavailable(f"{type(exc).__name__}: {_first_line(exc)}") from exc
        self._started = True

    async def check_durability(self, *, at_start: bool = False) -> bool:
        """Check the Redis against ``settings.mode``: at start a refusal raises
        :class:`DurabilityError`; later it is logged (once per cause) and counted, and
        flushing goes on (the queue is not less safe for being drained)."""
        mode = self.settings.durability
        self._next_durability_check = self._monotonic() + self.settings.recheck_every
        if mode is WriteBehindMode.VOLATILE:
            return True
        facts = await self.queue.server_facts(dict(self.settings.assume_config))
        self.stats.durability_checks += 1
        delayed = facts.delayed_fsyncs
        previous = None if self.stats.aof_delayed_fsync < 0 else self.stats.aof_delayed_fsync
        grown = delayed_fsync_growth(previous, delayed)
        if grown:
            log.warning("flusher %s: Redis postponed %d more AOF fsyncs past its limit (aof_delayed_fsync=%d): its "
                        "disk is slow; in fast mode writes acknowledged in the last %.0f s or more were at risk",
                        self.consumer, grown, delayed, FAST_LOSS_WINDOW)  # fmt: skip
        self.stats.aof_delayed_fsync = -1 if delayed is None else delayed
        refusal = check_mode(mode, facts)
        if refusal is None:
            if self._refusal is not None:
                log.info("flusher %s: %s keeps mode %r again", self.consumer, self.queue.where, mode.value)
            self._refusal = None
            self.stats.durability_ok = 1
            return True
        self.stats.durability_refusals += 1
        self.stats.durability_ok = 0
        error: DurabilityError = refusal.error(self.queue.where)
        if at_start:
            raise error
        if self._refusal != str(error):
            log.error("flusher %s: %s", self.consumer, error)
        self._refusal = str(error)
        return False

    async def run_once(self) -> int:
        """Read one batch (waiting up to ``block`` for it) and write it; the number of
        records taken from the queue (0: nothing to do)."""
        await self.start()
        if not self._group_ready:
            await self.queue.ensure_group(self.settings.group)
            self._group_ready = True
        await self._housekeeping()
        if self._monotonic() >= self._next_seal:
            await self._seal()
        await self._release_held()
        entries = await self._read_batch()
        if entries:
            await self._flush(entries)
        return len(entries) + len(self._held)

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
        self._history = "0"
        self._group_ready = False
        self._held = []

    # -- reading -------------------------------------------------------------------------------

    async def _read_batch(self) -> list[Entry]:
        s, group = self.settings, self.settings.group
        if s.durability is WriteBehindMode.FAST:  # before the read: a restart after it shows at release
            self._read_run_id = await self.queue.run_id()
        if self._history is not None:
            entries = await self.queue.read_own_pending(group, self.consumer, self._history, s.batch_size)
            if entries:
                self._history = entries[-1][0]
                return entries
            self._history = None
        now = self._monotonic()
        if now >= self._next_claim:
            start, claimed, deleted = await self.queue.claim(group, self.consumer, s.claim_idle, self._claim_start,
                                                            s.batch_size)  # fmt: skip
            self._claim_start = start
            if start == "0-0":  # a full pass: look again in a while
                self._next_claim = now + min(s.claim_idle / 2, 10.0)
            if deleted:
                log.info("flusher %s: %d pending records were deleted from the stream", self.consumer, len(deleted))
            if claimed:
                self.stats.reclaimed += len(claimed)
                log.info("flusher %s: claimed %d records of a stalled flusher", self.consumer, len(claimed))
                return claimed
        block = s.block
        if self._held:  # wake up in time for the first held record
            block = max(0.001, min(block, min(at for _, at, _ in self._held) - self._monotonic()))
        entries = await self.queue.read_new(group, self.consumer, s.batch_size, block)
        if not entries:
            return entries
        first_seen = self._monotonic()
        while (wait := read_more(len(entries), first_seen, self._monotonic(), s)) is not None:
            if await self._stop.wait(wait):
                break
            more = await self.queue.read_new(group, self.consumer, s.batch_size - len(entries), None)
            entries.extend(more)
        return entries

    async def _housekeeping(self) -> None:
        now = self._monotonic()
        if now >= self._next_durability_check:
            await self.check_durability()
        if self._applied_sums and now >= self._next_prune:
            await self._prune_applied()
        if now < self._next_housekeeping:
            return
        self._next_housekeeping = now + max(self.settings.claim_idle, 10.0)
        self.stats.queue_length = await self.queue.length()
        consumers = await self.queue.consumers(self.settings.group)
        for name in consumers_to_forget(consumers, self.consumer, self.settings):
            await self.queue.forget_consumer(self.settings.group, name)
            log.info("flusher %s: removed idle consumer %s from the group", self.consumer, name)

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
                await self._dead_letter_malformed(parsed)
            elif isinstance(parsed, SealRequest):
                seal_requests.append(parsed.id)
            elif isinstance(parsed, CounterSums):
                sums.append(parsed)
            else:
                records.append(parsed)
        if seal_requests:
            await self._seal()  # first: the requests are acknowledged only once their sums are in the stream
            gone += seal_requests
        if gone:
            self.stats.queue_length = await self.queue.ack(self.settings.group, gone)
        if self.settings.durability is WriteBehindMode.FAST:
            # In fast mode Redis may acknowledge a record it has not yet written to its AOF.
            # Applied to the database and then lost in a crash, such a write would leave the
            # cache older than the database, and such a sums record would come back
            # unsealed and be counted twice. So records wait out the mode's loss window,
            # held (pending) while the loop goes on, and are dropped if Redis restarted.
            held = {r.id for r, _, _ in self._held}
            ready_at = seen_at + FAST_LOSS_WINDOW
            fresh: list[QueuedWrite | CounterSums] = [*records, *sums]
            self._held += [(r, ready_at, self._read_run_id) for r in fresh if r.id not in held]
            return
        if records:
            await self._flush_writes(records)
        if sums:
            await self._apply_sums(sums)

    async def _flush_writes(self, records: list[QueuedWrite]) -> None:
        coalesced = coalesce(records)
        self.stats.coalesced += coalesced.superseded_count
        decoded: dict[str, WriteRecord] = {}
        for record in coalesced.winners:
            try:
                decoded[record.id] = self._decode(record)
            except _Undecodable as exc:
                await self._dead_letter(record, coalesced, exc.reason, "undecodable", 0)
        winners = [r for r in coalesced.winners if r.id in decoded]
        if winners:
            self.stats.batches += 1
            await self._write(plan_flush(winners), coalesced, decoded)

    # -- counters ------------------------------------------------------------------------------

    async def _seal(self) -> None:
        """Move the running sums into the stream (any flusher may; the script is atomic)."""
        self._next_seal = self._monotonic() + self.settings.seal_every
        ids = await self.queue.seal()
        if ids:
            self.stats.seals += 1

    async def _release_held(self) -> None:
        """Write the held records (fast mode) that have waited out the loss window, if
        Redis has not restarted since they were read; keep the others claimed."""
        if not self._held:
            return
        now = self._monotonic()
        if now - self._held_touched > self.settings.claim_idle / 2:
            await self.queue.keep_claimed(self.settings.group, self.consumer, [r.id for r, _, _ in self._held])
            self._held_touched = now
        ready = [(r, run) for r, at, run in self._held if at <= now]
        if not ready:
            return
        run_id = await self.queue.run_id()
        if any(run != run_id for _, run in ready):
            log.warning("flusher %s: Redis restarted while %d records waited out the fast mode's window; reading "
                        "again those it kept", self.consumer, len(self._held))  # fmt: skip
            self._lost_track()
            return
        self._held = [(r, at, run) for r, at, run in self._held if at > now]
        writes = [r for r, _ in ready if isinstance(r, QueuedWrite)]
        sums = [r for r, _ in ready if isinstance(r, CounterSums)]
        if writes:
            await self._flush_writes(writes)
        if sums:
            await self._apply_sums(sums)

    async def _apply_sums(self, sums: list[CounterSums]) -> None:
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
                log.warning("flusher %s: applying %d counter sums records failed (%s: %s); retrying in %.2fs",
                            self.consumer, len(batch), type(exc).__name__, _first_line(exc), delay)  # fmt: skip
                if self._monotonic() - held_at > s.claim_idle / 2:
                    await self.queue.keep_claimed(s.group, self.consumer, ids)
                    held_at = self._monotonic()
                if await self._stop.wait(delay):
                    return
        else:
            outcome = IncrementsApplied(0, 0)
        self._applied_sums = True
        self.stats.transactions += 1 if batch else 0
        self.stats.sums_applied += outcome.applied
        self.stats.sums_duplicates += outcome.duplicates
        self._observe_lag(ids)
        if outcome.refused:
            self.stats.increments_refused += len(outcome.refused)
            refused = [(r.key, r.delta, r.error[:MAX_ERROR_TEXT], r.error_type) for r in outcome.refused]
            length = await self.queue.dead_letter_increments(s.group, ids, refused, int(self._clock() * 1000),
                                                             self.consumer)  # fmt: skip
            self.stats.queue_length = length
            for r in outcome.refused:
                log.error("flusher %s: the database refused counter %s += %d (%s: %s); it is in the dead-letter "
                          "stream %s", self.consumer, r.key, r.delta, r.error_type, r.error[:200],
                          self.queue.keys.dead)  # fmt: skip
            return
        self.stats.queue_length = await self.queue.ack(s.group, ids)

    async def _prune_applied(self) -> None:
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
            log.warning("flusher %s: pruning applied ids failed (%s); trying again later", self.consumer,
                        _first_line(exc))  # fmt: skip

    def _decode(self, record: QueuedWrite) -> WriteRecord:
        try:
            _, codec_id, payload = decode_envelope(record.data)
        except EnvelopeError as exc:
            raise _Undecodable(f"not a readable cache entry: {exc.reason}") from None
        codec = self._codecs.get(codec_id)
        if codec is None:
            raise _Undecodable(f"codec id {codec_id} is unknown to this flusher (pass it in codecs=)")
        raw = bytes(payload)
        try:
            value = codec.decode(raw)
        except CorruptValueError as exc:
            raise _Undecodable(str(exc)) from None
        return WriteRecord(
            key=record.key,
            namespace=record.namespace,
            version=record.version,
            value=value,
            payload=raw,
            codec=codec.name,
            entry_id=record.id,
            enqueued_at=enqueued_at(record.id),
        )

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
                    log.info("flusher %s: stopping; %d records left pending", self.consumer,
                             sum(len(c.records) for c in plan.chunks))  # fmt: skip
                    return
                continue
            batch = [decoded[r.id] for r in action.chunk.records]
            try:
                applied = await self.writer.write_batch(batch)
            except Exception as exc:
                plan = await self._failed(plan, action.index, coalesced, exc)
                continue
            self._committed(batch, applied)
            ids = coalesced.ack_ids(action.chunk.records)
            self._observe_lag(ids)
            self.stats.queue_length = await self.queue.ack(s.group, ids)
            plan = after_success(plan, action.index)

    def _committed(self, batch: list[WriteRecord], applied: object) -> None:
        self.stats.transactions += 1
        self.stats.batch_sizes.observe(len(batch))
        # A writer that returns no count (None) is taken to have applied everything.
        count = max(0, min(applied, len(batch))) if isinstance(applied, int) else len(batch)
        self.stats.rows_applied += count
        self.stats.rows_skipped += len(batch) - count

    def _observe_lag(self, ids: list[str]) -> None:
        oldest = min(enqueued_at(i) for i in ids)
        lag = max(0.0, self._clock() - oldest)
        self.stats.flush_lag = lag
        self.stats.lags.observe(lag)

    def _classify(self, exc: Exception) -> FailureKind:
        """The writer's verdict on ``exc``; a classifier that fails says "transient" (a
        retry loses nothing, a wrong dead letter would need an operator)."""
        try:
            return self.writer.failure_kind(exc)
        except Exception as classify_exc:
            log.error("flusher %s: the writer could not classify %s (%s); treating it as transient", self.consumer,
                      type(exc).__name__, classify_exc, exc_info=classify_exc)  # fmt: skip
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
                log.warning("flusher %s: writing %d records failed (%s: %s: %s); retrying in %.2fs",
                            self.consumer, size, kind.value, type(exc).__name__, _first_line(exc), delay)  # fmt: skip
            case Split(left=left, right=right):
                self.stats.splits += 1
                log.info("flusher %s: a batch of %d was refused (%s); writing halves of %d and %d to find the record",
                         self.consumer, size, _first_line(exc), left, right)  # fmt: skip
            case DeadLetter(record=record, attempts=attempts):
                await self._dead_letter(record, coalesced, _error_text(exc), type(exc).__name__, attempts)
            case _:
                assert_never(step)
        return plan

    # -- dead letters ----------------------------------------------------------------------------

    async def _dead_letter(
        self, record: QueuedWrite, coalesced: Coalesced, error: str, error_type: str, attempts: int
    ) -> None:
        fields: dict[str, str | bytes] = {
            "k": record.key,
            "n": record.namespace,
            "v": str(record.version),
            "e": record.data,
            "id": record.id,
            "error": error[:MAX_ERROR_TEXT],
            "type": error_type,
            "attempts": str(attempts),
            "at": str(int(self._clock() * 1000)),
            "consumer": self.consumer,
        }
        entry = physical_key(self.settings.prefix, record.namespace, record.key)
        ids = coalesced.ack_ids([record])
        length, dropped = await self.queue.dead_letter(self.settings.group, ids, fields, entry, record.data)
        self.stats.dead_letters += 1
        self.stats.queue_length = length
        log.error("flusher %s: gave up on %s version %d after %d attempts (%s: %s); it is in the dead-letter "
                  "stream %s%s", self.consumer, record.key, record.version, attempts, error_type, error[:200],
                  self.queue.keys.dead, " and its cache entry was dropped" if dropped else "")  # fmt: skip

    async def _dead_letter_malformed(self, record: Malformed) -> None:
        fields: dict[str, str | bytes] = {k.decode(errors="replace"): v for k, v in record.fields.items()}
        fields.update(
            {
                "id": record.id,
                "error": record.reason,
                "type": "malformed",
                "attempts": "0",
                "at": str(int(self._clock() * 1000)),
                "consumer": self.consumer,
            }
        )
        keys = self.queue.keys
        await self.queue.dead_letter(self.settings.group, [record.id], fields, keys.dead, b"")
        self.stats.dead_letters += 1
        log.error("flusher %s: record %s is not a write-behind record (%s); moved to %s", self.consumer, record.id,
                  record.reason, keys.dead)  # fmt: skip


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def _error_text(exc: BaseException) -> str:
    return str(exc).strip() or type(exc).__name__


__all__ = ["AsyncFlusher"]
