"""Write-behind's records: versions, stream ids, and the records a flusher reads.

Versions only grow and the newest wins (invariants 1 and 2 of
:mod:`readscale._core.writebehind.flush`): :func:`next_version` is the producer script's
rule, :func:`version_wins` every batch writer's. :func:`parse_record` turns a stream
entry into a write, a counter sum, a seal request, or a malformed record (which the
flusher dead-letters rather than let it block the queue).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from readscale.errors import ConfigurationError

#: Versions are microseconds since the epoch or above; Lua doubles are exact below 2**53.
MAX_VERSION = 2**53 - 1


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
class WriteRecord:
    """One write for the database: the newest queued version of ``key``.

    Arguments:
        key: the cache key the application wrote (without the cache's prefix).
        namespace: the cache policy's namespace ("" for none): lets one writer route
            several kinds of data to several tables.
        version: the write's version; apply the record only over an older version.
        value: the decoded value.
        payload: the value as the codec encoded it (JSON text for the JSON codec).
        codec: the codec's name (``json``, ``msgpack``, ``bytes``, ``pickle``).
        entry_id: the record's id in the stream.
        enqueued_at: when it was queued (Redis server time, epoch seconds).
    """

    key: str
    namespace: str
    version: int
    value: Any
    payload: bytes
    codec: str
    entry_id: str
    enqueued_at: float


@dataclass(frozen=True, slots=True)
class CounterRecord:
    """Counter increments for the database: one sums record of the queue.

    ``deltas`` maps a cache key to the sum of its increments in this record. A batch
    writer adds them and records ``entry_id`` in the same transaction, and skips a
    record whose id it already recorded: that is what makes increments exactly once.
    """

    entry_id: str
    deltas: Mapping[str, int]


@dataclass(frozen=True, slots=True)
class RefusedIncrement:
    """A counter's delta the database refused (its key does not convert, a constraint):
    dead-lettered with its error; the rest of its record is applied."""

    key: str
    delta: int
    error: str
    error_type: str


@dataclass(frozen=True, slots=True)
class IncrementsApplied:
    """What a batch writer did with sums records: ``applied`` now, ``duplicates`` it
    had already applied (a redelivery), and the deltas it refused (now or then)."""

    applied: int
    duplicates: int
    refused: tuple[RefusedIncrement, ...] = ()


class RecordRejected(Exception):
    """Raised by a batch writer when a record's data cannot become a row (its key or
    value does not convert): the record's fault, so the flusher isolates it."""


@dataclass(frozen=True, slots=True)
class DeadLetterRecord:
    """A record the flusher gave up on, as kept in the dead-letter stream."""

    id: str
    original_id: str
    key: str
    namespace: str
    version: int | None
    error: str
    error_type: str
    attempts: int
    failed_at: float
    consumer: str
    envelope: bytes = field(repr=False, default=b"")
    #: For a refused counter increment: its delta (``version`` and ``envelope`` are empty).
    delta: int | None = None


__all__ = [
    "MAX_VERSION",
    "CounterRecord",
    "DeadLetterRecord",
    "IncrementsApplied",
    "Malformed",
    "QueuedWrite",
    "RecordRejected",
    "RefusedIncrement",
    "WriteRecord",
    "enqueued_at",
    "next_version",
    "parse_record",
    "parse_stream_id",
    "version_wins",
]
