"""Write-behind, the flusher's reads: which records of the stream make the next batch.

Written once, async; ``readscale._sync.writebehind.reader`` is generated from this file.
A batch is, in this order: this flusher's own pending records (its work before a restart
or a Redis error), then records idle in other consumers past ``claim_idle`` (XAUTOCLAIM:
a dead flusher's work, looked for again after a full pass only every half
``claim_idle``), then new records, gathered until ``batch_size`` or ``batch_wait``
(``read_more`` in ``readscale._core.writebehind.flush`` decides).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from readscale._async.writebehind.hold import AsyncHold
from readscale._async.writebehind.queue import AsyncWriteQueue, Entry
from readscale._core.writebehind.flush import read_more
from readscale._core.writebehind.settings import FlusherSettings
from readscale._shared.primitives.locks import AsyncEvent
from readscale._shared.writebehind.stats import FlusherStats

log = logging.getLogger("readscale.writebehind")


class AsyncReader:
    """Reads one flusher's batches; owns where it is in its own pending records and in
    the claim pass. A blocking read wakes in time for the first record ``hold`` keeps."""

    def __init__(
        self,
        queue: AsyncWriteQueue,
        settings: FlusherSettings,
        stats: FlusherStats,
        hold: AsyncHold,
        *,
        consumer: str,
        stop: AsyncEvent,
        monotonic: Callable[[], float],
    ) -> None:
        self.queue = queue
        self.settings = settings
        self.stats = stats
        self.consumer = consumer
        self._hold = hold
        self._stop = stop
        self._monotonic = monotonic
        self._history: str | None = "0"  # read this consumer's own pending records first
        self._claim_start = "0-0"
        self._next_claim = 0.0

    def restart(self) -> None:
        """Read this consumer's own pending records again first (after a Redis error: the
        batch in hand was not acknowledged)."""
        self._history = "0"

    async def read(self) -> list[Entry]:
        """The next batch (empty: nothing came within ``block``)."""
        s, group = self.settings, self.settings.group
        await self._hold.before_read()
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
                log.info(
                    "flusher %s: %d pending records were deleted from the stream",
                    self.consumer,
                    len(deleted),
                    extra={"event": "flusher_pending_deleted", "consumer": self.consumer, "count": len(deleted)},
                )
            if claimed:
                self.stats.reclaimed += len(claimed)
                log.info(
                    "flusher %s: claimed %d records of a stalled flusher",
                    self.consumer,
                    len(claimed),
                    extra={"event": "flusher_claimed_stalled", "consumer": self.consumer, "count": len(claimed)},
                )
                return claimed
        entries = await self.queue.read_new(group, self.consumer, s.batch_size, self._hold.block(s.block))
        if not entries:
            return entries
        first_seen = self._monotonic()
        while (wait := read_more(len(entries), first_seen, self._monotonic(), s)) is not None:
            if await self._stop.wait(wait):
                break
            more = await self.queue.read_new(group, self.consumer, s.batch_size - len(entries), None)
            entries.extend(more)
        return entries


__all__ = ["AsyncReader"]
