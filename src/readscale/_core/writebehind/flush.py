"""Write-behind's flush rules: coalescing, batches, retries, dead letters, backpressure.

A write-behind write is acknowledged only once its value is in the cache *and* its
record is in a durable queue (a Redis Stream on a Redis with AOF), both stored by one
script. A flusher then applies the queue to the database in batches. This module and its
siblings (``settings``, ``records``) hold every decision of that pipeline; the drivers
(``readscale._async.writebehind.producer``, ``readscale._async.writebehind.flusher``) carry them out. No I/O,
clock or randomness here: ``now`` and the uniform draw ``u`` are arguments.

Invariants
----------
1. **Versions only grow.** The producer's script gives each write the version
   ``max(last + 1, redis_time_in_microseconds)`` from one clock key per queue, so
   versions are unique, strictly increasing per key (and per queue), and stay above
   every earlier version even if the clock key were lost, as long as the Redis host's
   clock does not step back. A version fits in a PostgreSQL ``bigint`` and is exact in
   a Lua double (< 2**53) until the year 2255.
2. **The newest version wins, and never an older one over a newer** (:func:`version_wins`).
   The database writer applies a row only when its version is greater than the stored
   one, so a redelivery, a retry or two flushers racing can only rewrite a version the
   database already has (a no-op) or move it forward.
3. **Coalescing keeps the newest record per key** (:func:`coalesce`): one row per key per
   batch, which is also what ``INSERT ... ON CONFLICT DO UPDATE`` needs (it refuses to
   touch a row twice in one statement). Superseded records are acknowledged with the
   record that replaces them, whatever its fate.
4. **Acknowledge after commit.** A record leaves the queue (XACK + XDEL) only after the
   transaction that holds it committed, or atomically with its move to the dead-letter
   stream. A flusher killed at any point leaves its records pending; another flusher
   (or itself, restarted) claims them again (XAUTOCLAIM after ``claim_idle``).
5. **A bad record never blocks the rest** (:func:`after_failure`). A batch that fails
   because of its data is split in halves until the failing record is alone; alone, it
   is retried ``max_attempts`` times, then dead-lettered with its error. A transient
   failure (the database is down) retries the same batch with capped exponential
   backoff, forever: the queue is durable, so waiting loses nothing, and dead-lettering
   good records because a server is down would be worse.
6. **Backpressure, never loss** (:func:`when_queue_full`). Past ``max_queue_length``
   records the producer's script refuses the write (nothing is stored); the producer
   waits within ``max_wait`` or raises at once (``WhenFull.RAISE``). Nothing is dropped.

References: Redis Streams (XADD, XREADGROUP, XACK, XAUTOCLAIM; redis.io/docs/data-types/
streams), Redis persistence (AOF, ``appendfsync``), PostgreSQL ``INSERT ... ON CONFLICT``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import Enum

from readscale._core.writebehind.records import QueuedWrite, parse_stream_id
from readscale._core.writebehind.settings import FlusherSettings, WhenFull, WriteBehindSettings


@dataclass(frozen=True, slots=True)
class Coalesced:
    """A batch reduced to its newest record per key.

    ``winners`` holds one record per key, in the order the winners were queued;
    ``superseded`` maps a key to the ids of its older records, acknowledged together
    with the winner.
    """

    winners: tuple[QueuedWrite, ...]
    superseded: Mapping[str, tuple[str, ...]]

    def ack_ids(self, records: Iterable[QueuedWrite]) -> list[str]:
        """The ids to acknowledge once ``records`` (winners) are settled."""
        ids: list[str] = []
        for record in records:
            ids.append(record.id)
            ids.extend(self.superseded.get(record.key, ()))
        return ids

    @property
    def superseded_count(self) -> int:
        return sum(len(ids) for ids in self.superseded.values())


def _newer(a: QueuedWrite, b: QueuedWrite) -> bool:
    """Is ``a`` newer than ``b``? By version, then (equal versions cannot come from the
    script, but a hand-made record could) by stream position."""
    if a.version != b.version:
        return a.version > b.version
    return parse_stream_id(a.id) > parse_stream_id(b.id)


def coalesce(records: Sequence[QueuedWrite]) -> Coalesced:
    """Keep the newest record per key (invariant 3); a record delivered twice counts once."""
    best: dict[str, QueuedWrite] = {}
    older: dict[str, list[str]] = {}
    seen: set[str] = set()
    for record in records:
        if record.id in seen:
            continue
        seen.add(record.id)
        current = best.get(record.key)
        if current is None:
            best[record.key] = record
        elif _newer(record, current):
            best[record.key] = record
            older.setdefault(record.key, []).append(current.id)
        else:
            older.setdefault(record.key, []).append(record.id)
    winners = tuple(sorted(best.values(), key=lambda r: parse_stream_id(r.id)))
    return Coalesced(winners, {k: tuple(v) for k, v in older.items()})


# -- batches -----------------------------------------------------------------------------------


def batch_closes_at(first_seen: float, settings: FlusherSettings) -> float:
    """A batch is written once full or ``batch_wait`` after its first record arrived."""
    return first_seen + settings.batch_wait


def read_more(have: int, first_seen: float, now: float, settings: FlusherSettings) -> float | None:
    """How long to wait before reading more records into the batch, or None: write it now.

    The flusher waits out the rest of the window and then reads whatever arrived in one
    go, rather than blocking on the stream (which would wake it, and cost a round trip,
    for every single record that trickles in)."""
    if have >= settings.batch_size:
        return None
    remaining = batch_closes_at(first_seen, settings) - now
    return remaining if remaining >= 0.001 else None


# -- failures, retries and dead letters --------------------------------------------------------


class FailureKind(Enum):
    """Why a batch write failed, as the batch writer classifies its exception."""

    #: The server or the connection failed (down, restarting, deadlock, serialization
    #: failure): the data is fine, so the same batch is retried after a backoff.
    TRANSIENT = "transient"
    #: Some record's data was refused (a constraint, a bad value): isolate it.
    RECORD = "record"


def backoff(attempt: int, settings: FlusherSettings, u: float) -> float:
    """Seconds before retry number ``attempt`` (1, 2, ...): ``retry_base * 2**(attempt-1)``
    capped at ``retry_cap``, with "equal jitter" (the upper half drawn with ``u`` in
    [0, 1)) so flushers retrying after one outage do not all hit the server at once."""
    exp = min(max(attempt - 1, 0), 62)
    ceiling = min(settings.retry_cap, settings.retry_base * (2.0**exp))
    return ceiling / 2 + ceiling / 2 * min(max(u, 0.0), 1.0)


@dataclass(frozen=True, slots=True)
class Chunk:
    """Records written in one transaction.

    ``failures`` counts the record failures of a chunk of one record (toward
    ``max_attempts``); ``retries`` counts consecutive failed writes (for the backoff);
    the chunk is not written before ``not_before`` (monotonic seconds).
    """

    records: tuple[QueuedWrite, ...]
    failures: int = 0
    retries: int = 0
    not_before: float = 0.0


@dataclass(frozen=True, slots=True)
class FlushPlan:
    """What is left to write of one batch, in order."""

    chunks: tuple[Chunk, ...]

    @property
    def done(self) -> bool:
        return not self.chunks


@dataclass(frozen=True, slots=True)
class WriteChunk:
    """Write ``plan.chunks[index]`` now."""

    index: int
    chunk: Chunk


@dataclass(frozen=True, slots=True)
class WaitFor:
    """Nothing can be written for ``delay`` seconds (every chunk is backing off)."""

    delay: float


@dataclass(frozen=True, slots=True)
class RetryAfter:
    """The chunk is written again after ``delay`` seconds."""

    delay: float


@dataclass(frozen=True, slots=True)
class Split:
    """The chunk was split in two halves, written next, at once."""

    left: int
    right: int


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """Move ``record`` to the dead-letter stream with its error; go on with the rest."""

    record: QueuedWrite
    attempts: int


Step = RetryAfter | Split | DeadLetter


def plan_flush(winners: Sequence[QueuedWrite]) -> FlushPlan:
    """A plan writing every record of a coalesced batch in one transaction."""
    return FlushPlan((Chunk(tuple(winners)),) if winners else ())


def next_write(plan: FlushPlan, now: float) -> WriteChunk | WaitFor | None:
    """The first chunk due at ``now``, how long until one is due, or None when done."""
    if not plan.chunks:
        return None
    for index, chunk in enumerate(plan.chunks):
        if chunk.not_before <= now:
            return WriteChunk(index, chunk)
    return WaitFor(min(c.not_before for c in plan.chunks) - now)


def after_success(plan: FlushPlan, index: int) -> FlushPlan:
    return FlushPlan(plan.chunks[:index] + plan.chunks[index + 1 :])


def after_failure(
    plan: FlushPlan, index: int, kind: FailureKind, settings: FlusherSettings, u: float, now: float
) -> tuple[FlushPlan, Step]:
    """The next plan and step once chunk ``index``'s write failed (invariant 5).

    - transient: the whole plan pauses for the backoff (the server, not the data, failed,
      so every other chunk would fail too); the chunk keeps its place.
    - record, several records: split in halves, written next and at once.
    - record, one record: after ``max_attempts`` failures it is dead-lettered; before
      that it goes to the back of the plan with a backoff, so the rest is written first.
    """
    chunk = plan.chunks[index]
    before, after = plan.chunks[:index], plan.chunks[index + 1 :]
    if kind is FailureKind.TRANSIENT:
        retries = chunk.retries + 1
        delay = backoff(retries, settings, u)
        until = now + delay
        paused = tuple(replace(c, not_before=max(c.not_before, until)) for c in plan.chunks)
        chunks = (*paused[:index], replace(paused[index], retries=retries), *paused[index + 1 :])
        return FlushPlan(chunks), RetryAfter(delay)
    if len(chunk.records) > 1:
        middle = len(chunk.records) // 2
        left, right = Chunk(chunk.records[:middle]), Chunk(chunk.records[middle:])
        return FlushPlan((*before, left, right, *after)), Split(len(left.records), len(right.records))
    failures, retries = chunk.failures + 1, chunk.retries + 1
    if failures >= settings.max_attempts:
        return FlushPlan(before + after), DeadLetter(chunk.records[0], failures)
    delay = backoff(retries, settings, u)
    moved = Chunk(chunk.records, failures, retries, now + delay)
    return FlushPlan((*before, *after, moved)), RetryAfter(delay)


# -- backpressure -------------------------------------------------------------------------------


def when_queue_full(attempt: int, waited: float, settings: WriteBehindSettings) -> float | None:
    """The delay before asking again for room in a full queue, or None: give up (raise).

    Polls start at 5 ms and double up to 100 ms (a queue drains a batch at a time), and
    the last one is trimmed so the total wait never passes ``max_wait``.
    """
    if settings.when_full is WhenFull.RAISE:
        return None
    remaining = settings.max_wait - waited
    if remaining <= 0:
        return None
    return min(0.005 * 2.0 ** min(attempt, 5), 0.1, remaining)


# -- consumers ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConsumerInfo:
    name: str
    pending: int
    idle: float


def consumers_to_forget(consumers: Iterable[ConsumerInfo], me: str, settings: FlusherSettings) -> list[str]:
    """Consumers to remove from the group: idle past ``forget_consumers_after`` with
    nothing pending (their records were claimed), never this flusher itself. Flushers
    named after their process would otherwise pile up in the group forever."""
    if not settings.forget_consumers_after:
        return []
    return [c.name for c in consumers if c.name != me and c.pending == 0 and c.idle >= settings.forget_consumers_after]


__all__ = [
    "Chunk",
    "Coalesced",
    "ConsumerInfo",
    "DeadLetter",
    "FailureKind",
    "FlushPlan",
    "RetryAfter",
    "Split",
    "Step",
    "WaitFor",
    "WriteChunk",
    "after_failure",
    "after_success",
    "backoff",
    "batch_closes_at",
    "coalesce",
    "consumers_to_forget",
    "next_write",
    "plan_flush",
    "read_more",
    "when_queue_full",
]
