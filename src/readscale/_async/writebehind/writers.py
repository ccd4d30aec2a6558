"""Write-behind, the writers a flusher drives: the protocols a database writer implements
(:class:`AsyncBatchWriter`, and optionally :class:`AsyncCounterWriter` and
:class:`AsyncCheckedWriter`) and the codecs a flusher decodes without being told.
``readscale._async.writebehind.postgres`` holds the PostgreSQL writer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from readscale._core.writebehind.flush import (
    FailureKind,
)
from readscale._core.writebehind.records import (
    CounterRecord,
    IncrementsApplied,
    WriteRecord,
)
from readscale.codecs import BytesCodec, Codec, JsonCodec, MsgpackCodec


class AsyncBatchWriter(Protocol):
    """Applies batches of writes to the database. :class:`AsyncPostgresWriter` is one.

    ``write_batch`` writes every record in ONE transaction and commits it, or raises
    with nothing committed. It must be idempotent by version: a record is applied only
    over an older version of its key (or none), so a redelivered or reordered record
    never replaces a newer one. Records of one batch have distinct keys. It returns how
    many records changed the database (the rest were versions it already had).

    ``failure_kind`` says whether an exception ``write_batch`` raised was transient (the
    server or the connection: retry the same batch) or the data's fault (a constraint,
    a bad value: the flusher isolates the record and dead-letters it if it keeps failing).
    """

    async def write_batch(self, records: Sequence[WriteRecord]) -> int: ...

    def failure_kind(self, exc: Exception) -> FailureKind: ...


class AsyncCounterWriter(Protocol):
    """A batch writer that also applies counter increments (optional; the PostgreSQL
    writer is one when given a ``counter_column``).

    ``apply_increments`` adds every record's deltas in ONE transaction that also records
    each record's ``entry_id`` under ``queue``, skipping records already recorded: so a
    redelivered record is applied once. It returns what it did, including deltas it
    refused (now, or when it first applied a redelivered record).
    """

    async def apply_increments(self, queue: str, records: Sequence[CounterRecord]) -> IncrementsApplied: ...


class AsyncCheckedWriter(Protocol):
    """A batch writer with a start check (optional): ``check`` raises
    :class:`~readscale.errors.ConfigurationError` when its target cannot work (a missing
    table or column, no privilege), anything else when the database is unreachable
    (the flusher waits and tries again)."""

    async def check(self) -> None: ...


def default_codecs() -> tuple[Codec, ...]:
    """The codecs a flusher decodes without being told (pickle needs its secret)."""
    return (JsonCodec(), MsgpackCodec(), BytesCodec())


__all__ = ["AsyncBatchWriter", "AsyncCheckedWriter", "AsyncCounterWriter", "default_codecs"]
