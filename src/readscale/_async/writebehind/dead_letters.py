"""Write-behind, the dead letters: what the flusher gives up on, kept for an operator.

Written once, async; ``readscale._sync.writebehind.dead_letters`` is generated from this file.
A record the flusher cannot write goes to the queue's dead-letter stream with its error,
the attempts made and the consumer that gave up, and leaves the queue in the same script
(``readscale writebehind requeue`` puts it back once the cause is fixed). Three kinds:

- a write the database refused ``max_attempts`` times when alone in its batch (the
  flusher's loop decides that, through ``after_failure``); its cache entry is dropped,
  since the database will not hold what it says;
- a write whose value this flusher cannot decode (an envelope it cannot read, a codec it
  does not know): :meth:`AsyncDeadLetters.decode` sorts those out before the batch is
  written, so one bad record never holds up the others;
- a stream record that is no write-behind record at all, and counter deltas the
  database refused (the rest of their sums record is applied).

The part owns nothing but its wiring: the queue's script moves the record atomically, and
the counts go to the flusher's :class:`~readscale._shared.writebehind.stats.FlusherStats`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence

from readscale._async.writebehind.queue import AsyncWriteQueue
from readscale._core.cache.entry import EnvelopeError, decode_envelope
from readscale._core.cache.keys import physical_key
from readscale._core.writebehind.flush import Coalesced
from readscale._core.writebehind.records import Malformed, QueuedWrite, RefusedIncrement, WriteRecord, enqueued_at
from readscale._core.writebehind.settings import FlusherSettings
from readscale._shared.writebehind.stats import FlusherStats
from readscale.codecs import Codec
from readscale.errors import CorruptValueError

log = logging.getLogger("readscale.writebehind")

#: The longest error text kept in a dead letter (characters).
MAX_ERROR_TEXT = 2000


class _Undecodable(Exception):
    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class AsyncDeadLetters:
    """Moves the records one flusher gives up on to the dead-letter stream, and decodes
    the writes (an undecodable one is such a record)."""

    def __init__(
        self,
        queue: AsyncWriteQueue,
        settings: FlusherSettings,
        stats: FlusherStats,
        codecs: Mapping[int, Codec],
        *,
        consumer: str,
        clock: Callable[[], float],
    ) -> None:
        self.queue = queue
        self.settings = settings
        self.stats = stats
        self.consumer = consumer
        self._codecs = codecs
        self._clock = clock

    async def decode(self, coalesced: Coalesced) -> dict[str, WriteRecord]:
        """The batch's winners decoded, by stream id; each one that cannot be is
        dead-lettered (it never reaches the writer)."""
        decoded: dict[str, WriteRecord] = {}
        for record in coalesced.winners:
            try:
                decoded[record.id] = self._decode(record)
            except _Undecodable as exc:
                await self.write(record, coalesced, exc.reason, "undecodable", 0)
        return decoded

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

    async def write(
        self, record: QueuedWrite, coalesced: Coalesced, error: str, error_type: str, attempts: int
    ) -> None:
        """Give up on ``record`` (and the older versions it superseded in the batch):
        dead-letter it and drop its cache entry if that still holds this version."""
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
        log.error(
            "flusher %s: gave up on %s version %d after %d attempts (%s: %s); it is in the dead-letter stream %s%s",
            self.consumer,
            record.key,
            record.version,
            attempts,
            error_type,
            error[:200],
            self.queue.keys.dead,
            " and its cache entry was dropped" if dropped else "",
            extra={
                "event": "flusher_dead_letter",
                "consumer": self.consumer,
                "key": record.key,
                "version": record.version,
                "count": attempts,
                "reason": error[:200],
            },
        )

    async def malformed(self, record: Malformed) -> None:
        """A stream record that is not a write-behind record, moved aside as it is."""
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
        log.error(
            "flusher %s: record %s is not a write-behind record (%s); moved to %s",
            self.consumer,
            record.id,
            record.reason,
            keys.dead,
            extra={
                "event": "flusher_malformed_record",
                "consumer": self.consumer,
                "record": record.id,
                "reason": record.reason,
            },
        )

    async def increments(self, ids: list[str], refused: Sequence[RefusedIncrement]) -> None:
        """The deltas the database refused, dead-lettered; the sums records ``ids`` (whose
        other deltas are applied) leave the queue in the same script."""
        self.stats.increments_refused += len(refused)
        rows = [(r.key, r.delta, r.error[:MAX_ERROR_TEXT], r.error_type) for r in refused]
        length = await self.queue.dead_letter_increments(self.settings.group, ids, rows, int(self._clock() * 1000),
                                                         self.consumer)  # fmt: skip
        self.stats.queue_length = length
        for r in refused:
            log.error(
                "flusher %s: the database refused counter %s += %d (%s: %s); it is in the dead-letter stream %s",
                self.consumer,
                r.key,
                r.delta,
                r.error_type,
                r.error[:200],
                self.queue.keys.dead,
                extra={
                    "event": "flusher_counter_dead_letter",
                    "consumer": self.consumer,
                    "key": r.key,
                    "count": r.delta,
                    "reason": r.error[:200],
                },
            )


def first_line(exc: BaseException) -> str:
    """An error in one line, for a log line or a refusal."""
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def error_text(exc: BaseException) -> str:
    """An error as a dead letter keeps it (cut to :data:`MAX_ERROR_TEXT`)."""
    return str(exc).strip() or type(exc).__name__


__all__ = ["MAX_ERROR_TEXT", "AsyncDeadLetters", "error_text", "first_line"]
