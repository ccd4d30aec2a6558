"""Write-behind bookkeeping: versions, coalescing, retries, dead letters, backpressure.

A write-behind write is acknowledged only once its value is in the cache *and* its
record is in a durable queue (a Redis Stream on a Redis with AOF), both stored by one
script. A flusher then applies the queue to the database in batches. This module holds
every decision of that pipeline; the drivers (``readscale._async.writebehind``,
``readscale._async.flusher``) carry them out. No I/O, clock or randomness here: ``now``
and the uniform draw ``u`` are arguments.

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
from dataclasses import dataclass, field, replace
from enum import Enum

from readscale._core.writebehind.modes import WriteBehindMode, coerce_mode, parse_assumed
from readscale.errors import ConfigurationError

#: Versions are microseconds since the epoch or above; Lua doubles are exact below 2**53.
MAX_VERSION = 2**53 - 1


# -- names -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class QueueKeys:
    """The Redis keys of one write-behind queue. They share the hash tag ``{queue}``.

    ``acc`` is the hash where counter increments add up (key -> running delta) until a
    flusher moves them into the stream as one record (see :class:`CounterSums`).
    """

    stream: str
    clock: str
    dead: str
    acc: str


def validate_queue_name(name: str) -> str:
    if not name or not name.isprintable() or any(c in name for c in " {}:"):
        raise ConfigurationError(f"write-behind queue name must be printable, without spaces, ':' or braces: {name!r}")
    return name


def queue_keys(prefix: str, queue: str) -> QueueKeys:
    base = f"{prefix}wb:{{{validate_queue_name(queue)}}}"
    return QueueKeys(stream=f"{base}:q", clock=f"{base}:clock", dead=f"{base}:dead", acc=f"{base}:acc")


# -- settings --------------------------------------------------------------------------------


class WhenFull(Enum):
    """What ``write_behind`` does when the queue holds ``max_queue_length`` records."""

    #: Wait (polling with backoff) up to ``max_wait`` seconds, then raise.
    WAIT = "wait"
    #: Raise :class:`~readscale.errors.WriteQueueFullError` at once.
    RAISE = "raise"


@dataclass(frozen=True, slots=True)
class WriteBehindSettings:
    """How the producer queues writes.

    Arguments:
        queue: the queue's name (one stream, one version clock, one dead-letter stream).
        max_queue_length: records the queue may hold (unflushed + in flight); 0: no limit.
        when_full: wait or raise once the queue is full (never drop).
        max_wait: the longest a write waits for room, in seconds (``WhenFull.WAIT``).
        mode: the durability promise, by name (:class:`WriteBehindMode`): ``"durable"``
            (the default), ``"fast"`` or ``"volatile"``. The Redis's settings are checked
            before the first write and every ``recheck_every`` seconds; a Redis that
            cannot keep the promise gets :class:`~readscale.errors.DurabilityError`.
        assume_config: settings to take as given where ``CONFIG GET`` is disabled (a
            managed Redis), e.g. ``{"appendfsync": "always"}``; never over what it reads.
        recheck_every: seconds between checks of the server's settings while writing.
    """

    queue: str = "default"
    max_queue_length: int = 100_000
    when_full: WhenFull = WhenFull.WAIT
    max_wait: float = 5.0
    mode: WriteBehindMode | str = WriteBehindMode.DURABLE
    assume_config: Mapping[str, str] | tuple[tuple[str, str], ...] = ()
    recheck_every: float = 30.0

    def __post_init__(self) -> None:
        validate_queue_name(self.queue)
        object.__setattr__(self, "mode", coerce_mode(self.mode))
        object.__setattr__(self, "assume_config", tuple(sorted(parse_assumed(dict(self.assume_config)).items())))
        if not self.recheck_every > 0:
            raise ConfigurationError(f"recheck_every must be > 0 seconds, got {self.recheck_every}")
        if self.max_queue_length < 0:
            raise ConfigurationError(f"max_queue_length must be >= 0 (0: no limit), got {self.max_queue_length}")
        if not self.max_wait >= 0:
            raise ConfigurationError(f"max_wait must be >= 0 seconds, got {self.max_wait}")

    @property
    def durability(self) -> WriteBehindMode:
        """``mode`` as a :class:`WriteBehindMode` (it may be given by name)."""
        return coerce_mode(self.mode)


@dataclass(frozen=True, slots=True)
class FlusherSettings:
    """How a flusher reads, batches, writes and retries. Durations are in seconds.

    Arguments:
        queue, prefix: which queue (the producer's ``queue`` and its cache's ``prefix``).
        group: the consumer group; every flusher of one queue uses the same group.
        consumer: this flusher's name in the group (default: the host name). A flusher
            restarted under the same name resumes its own pending records at once;
            records of a flusher that never comes back are claimed after ``claim_idle``.
        batch_size: at most this many records per batch (and per transaction).
        batch_wait: a batch closes this long after its first record, full or not.
        block: the longest one idle read waits for new records (also bounds how long a
            stop request waits for an idle read).
        claim_idle: records pending this long in another consumer are claimed.
        max_attempts: a record failing alone this many times is dead-lettered.
        retry_base, retry_cap: the backoff between retries: ``retry_base * 2**n``, capped.
        forget_consumers_after: consumers idle this long with nothing pending are removed
            from the group (0: never).
        mode, assume_config: the producers' durability mode (see
            :class:`WriteBehindSettings`): checked against the server when the flusher
            starts (it refuses to start if the Redis cannot keep it) and every
            ``recheck_every`` seconds after (logged, counted). In ``fast`` mode counter
            increments are applied only once older than the mode's loss window.
        seal_every: seconds between two moves of the counters' running sums into the
            queue (a first increment after a move also asks for one at once).
    """

    queue: str = "default"
    prefix: str = "rs:"
    group: str = "readscale-flusher"
    consumer: str | None = None
    batch_size: int = 500
    batch_wait: float = 0.05
    block: float = 1.0
    claim_idle: float = 30.0
    max_attempts: int = 5
    retry_base: float = 0.05
    retry_cap: float = 5.0
    forget_consumers_after: float = 3600.0
    mode: WriteBehindMode | str = WriteBehindMode.DURABLE
    assume_config: Mapping[str, str] | tuple[tuple[str, str], ...] = ()
    recheck_every: float = 10.0
    seal_every: float = 1.0

    def __post_init__(self) -> None:
        validate_queue_name(self.queue)
        object.__setattr__(self, "mode", coerce_mode(self.mode))
        object.__setattr__(self, "assume_config", tuple(sorted(parse_assumed(dict(self.assume_config)).items())))

        def bad(message: str) -> ConfigurationError:
            return ConfigurationError(f"flusher settings: {message}")

        if not self.group or " " in self.group:
            raise bad(f"group must be a name without spaces, got {self.group!r}")
        if self.consumer is not None and (not self.consumer or " " in self.consumer):
            raise bad(f"consumer must be a name without spaces, got {self.consumer!r}")
        if self.batch_size < 1:
            raise bad(f"batch_size must be >= 1, got {self.batch_size}")
        if not self.batch_wait >= 0:
            raise bad(f"batch_wait must be >= 0 seconds, got {self.batch_wait}")
        if not self.block >= 0.001:
            raise bad(f"block must be >= 0.001 seconds, got {self.block}")
        if not self.claim_idle > 0:
            raise bad(f"claim_idle must be > 0 seconds, got {self.claim_idle}")
        if self.max_attempts < 1:
            raise bad(f"max_attempts must be >= 1, got {self.max_attempts}")
        if not 0 < self.retry_base <= self.retry_cap:
            raise bad(f"need 0 < retry_base <= retry_cap, got {self.retry_base} and {self.retry_cap}")
        if not self.forget_consumers_after >= 0:
            raise bad(f"forget_consumers_after must be >= 0 seconds, got {self.forget_consumers_after}")
        if not self.recheck_every > 0:
            raise bad(f"recheck_every must be > 0 seconds, got {self.recheck_every}")
        if not self.seal_every > 0:
            raise bad(f"seal_every must be > 0 seconds, got {self.seal_every}")

    @property
    def keys(self) -> QueueKeys:
        return queue_keys(self.prefix, self.queue)

    @property
    def durability(self) -> WriteBehindMode:
        """``mode`` as a :class:`WriteBehindMode` (it may be given by name)."""
        return coerce_mode(self.mode)


# -- versions and stream ids ----------------------------------------------------------------


def version_wins(candidate: int, stored: int | None) -> bool:
    """True when a write of version ``candidate`` may replace what is stored.

    The rule every batch writer follows (the PostgreSQL writer's ``WHERE table.version <
    excluded.version``): strictly newer only, so applying the same version twice is a
    no-op and an older version never lands over a newer one.
    """
    return stored is None or candidate > stored


def next_version(last: int, now_us: int) -> int:
    """The version the producer's script assigns (mirrored in Lua; see invariant 1)."""
    return max(last + 1, now_us)


def parse_stream_id(entry_id: str) -> tuple[int, int]:
    """``"1700000000000-3"`` -> ``(1700000000000, 3)``: milliseconds and sequence."""
    ms, sep, seq = entry_id.partition("-")
    if not sep or not ms.isdigit() or not seq.isdigit():
        raise ValueError(f"not a stream entry id: {entry_id!r}")
    return int(ms), int(seq)


def enqueued_at(entry_id: str) -> float:
    """When Redis appended the entry (its auto-generated id is the server's time in ms)."""
    return parse_stream_id(entry_id)[0] / 1000.0


# -- records ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class QueuedWrite:
    """One record of the queue as the flusher read it.

    ``data`` is the cache entry's envelope (the encoded value with its metadata), the
    same bytes the producer stored under the key.
    """

    id: str
    key: str
    namespace: str
    version: int
    data: bytes


@dataclass(frozen=True, slots=True)
class Malformed:
    """A stream entry that is not a write record (damaged, or written by something else)."""

    id: str
    reason: str
    fields: Mapping[bytes, bytes] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SealRequest:
    """Written by the first increment after the running sums were last moved: asks a
    flusher to move them into the stream now (see :func:`parse_record`)."""

    id: str


@dataclass(frozen=True, slots=True)
class CounterSums:
    """Counter increments, summed per key in the queue's running-sum hash and moved into
    the stream as this one record by a flusher's atomic script.

    Applied exactly once: the batch writer records ``id`` in the same transaction that
    adds the sums, and skips a record whose id it already holds (a redelivery after a
    flusher crash, a claim, a Redis restart that replays an acknowledgement away).
    """

    id: str
    deltas: Mapping[str, int]


#: A counter delta must stay exact through Lua (a double) and PostgreSQL (bigint).
MAX_DELTA = 2**53 - 1

#: Prefix of a counter's field in a sums record (``+views:42``), apart from ``o``.
SUM_FIELD_PREFIX = b"+"


def check_delta(delta: int) -> int:
    """An increment's delta: a non-zero integer within +-2**53 (exact everywhere)."""
    if isinstance(delta, bool) or not isinstance(delta, int):
        raise ConfigurationError(f"a counter increment takes an int, got {type(delta).__name__}")
    if not 0 < abs(delta) <= MAX_DELTA:
        raise ConfigurationError(f"a counter increment must be non-zero and within +-2**53, got {delta}")
    return delta


def parse_record(entry_id: str, fields: Mapping[bytes, bytes]) -> QueuedWrite | CounterSums | SealRequest | Malformed:
    """Read what the scripts write: a value write (``k`` key, ``n`` namespace, ``v``
    version, ``e`` envelope), counter sums (``o`` = ``sum``, then ``+key`` = delta) or a
    seal request (``o`` = ``seal``). Anything else is :class:`Malformed` (dead-lettered
    as is)."""
    op = fields.get(b"o")
    if op is not None:
        return _parse_op(entry_id, op, fields)
    try:
        key = fields[b"k"].decode()
        namespace = fields.get(b"n", b"").decode()
        raw_version = fields[b"v"]
        data = fields[b"e"]
    except KeyError as exc:
        return Malformed(entry_id, f"missing field {exc.args[0]!r}", fields)
    except UnicodeDecodeError:
        return Malformed(entry_id, "key or namespace is not UTF-8", fields)
    if not raw_version.isdigit() or not 0 < int(raw_version) <= MAX_VERSION:
        return Malformed(entry_id, f"bad version {raw_version[:32]!r}", fields)
    if not key:
        return Malformed(entry_id, "empty key", fields)
    return QueuedWrite(entry_id, key, namespace, int(raw_version), bytes(data))


def _parse_op(entry_id: str, op: bytes, fields: Mapping[bytes, bytes]) -> CounterSums | SealRequest | Malformed:
    if op == b"seal":
        return SealRequest(entry_id)
    if op != b"sum":
        return Malformed(entry_id, f"unknown operation {op[:32]!r}", fields)
    deltas: dict[str, int] = {}
    for name, raw in fields.items():
        if name == b"o":
            continue
        if not name.startswith(SUM_FIELD_PREFIX) or len(name) == 1:
            return Malformed(entry_id, f"unexpected field {name[:32]!r} in counter sums", fields)
        try:
            key = name[1:].decode()
            delta = int(raw)
        except (UnicodeDecodeError, ValueError):
            return Malformed(entry_id, f"bad counter {name[:32]!r} = {raw[:32]!r}", fields)
        if delta:
            deltas[key] = delta
    return CounterSums(entry_id, deltas)


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
    "MAX_VERSION",
    "Chunk",
    "Coalesced",
    "ConsumerInfo",
    "DeadLetter",
    "FailureKind",
    "FlushPlan",
    "FlusherSettings",
    "Malformed",
    "QueueKeys",
    "QueuedWrite",
    "RetryAfter",
    "Split",
    "Step",
    "WaitFor",
    "WhenFull",
    "WriteBehindSettings",
    "WriteChunk",
    "after_failure",
    "after_success",
    "backoff",
    "batch_closes_at",
    "coalesce",
    "consumers_to_forget",
    "enqueued_at",
    "next_version",
    "next_write",
    "parse_record",
    "parse_stream_id",
    "plan_flush",
    "queue_keys",
    "read_more",
    "validate_queue_name",
    "version_wins",
    "when_queue_full",
]
