"""Write-behind, the fast mode's hold: records wait out the loss window before they apply.

Written once, async; ``readscale._sync.writebehind.hold`` is generated from this file.
In fast mode Redis may acknowledge a record it has not yet written to its AOF. Applied to
the database and then lost in a crash, such a write would leave the cache older than the
database, and such a sums record would come back unsealed and be counted twice. So the
flusher holds what it reads for ``FAST_LOSS_WINDOW`` seconds, pending (kept claimed)
while its loop goes on, and drops it if Redis restarted meanwhile (it is then read again
from the stream, as far as Redis kept it). Other modes hold nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from readscale._async.writebehind.queue import AsyncWriteQueue
from readscale._core.writebehind.modes import FAST_LOSS_WINDOW, WriteBehindMode
from readscale._core.writebehind.records import CounterSums, QueuedWrite
from readscale._core.writebehind.settings import FlusherSettings

log = logging.getLogger("readscale.writebehind")


class AsyncHold:
    """The records one flusher holds in fast mode: each with when it may be applied and
    the Redis run id seen before it was read."""

    def __init__(
        self, queue: AsyncWriteQueue, settings: FlusherSettings, *, consumer: str, monotonic: Callable[[], float]
    ) -> None:
        self.queue = queue
        self.settings = settings
        self.consumer = consumer
        self._monotonic = monotonic
        self._held: list[tuple[QueuedWrite | CounterSums, float, str]] = []
        self._touched = 0.0
        self._read_run_id = ""

    def __len__(self) -> int:
        return len(self._held)

    @property
    def active(self) -> bool:
        """Whether what is read is held (fast mode)."""
        return self.settings.durability is WriteBehindMode.FAST

    def clear(self) -> None:
        """Forget the held records (they stay pending in the stream, read again later)."""
        self._held = []

    async def before_read(self) -> None:
        """Note Redis's run id before a read: a restart after it shows at release."""
        if self.active:
            self._read_run_id = await self.queue.run_id()

    def block(self, block: float) -> float:
        """How long a blocking read may wait: no later than the first held record's time."""
        if self._held:
            return max(0.001, min(block, min(at for _, at, _ in self._held) - self._monotonic()))
        return block

    def add(self, records: list[QueuedWrite], sums: list[CounterSums], seen_at: float) -> None:
        """Hold the records read at ``seen_at`` (those not held already)."""
        held = {r.id for r, _, _ in self._held}
        ready_at = seen_at + FAST_LOSS_WINDOW
        fresh: list[QueuedWrite | CounterSums] = [*records, *sums]
        self._held += [(r, ready_at, self._read_run_id) for r in fresh if r.id not in held]

    async def release(self) -> tuple[list[QueuedWrite], list[CounterSums]] | None:
        """The held writes and sums that have waited out the window, no longer held (the
        others are kept claimed); None if Redis restarted since they were read (the
        flusher then reads again what Redis kept)."""
        if not self._held:
            return [], []
        now = self._monotonic()
        if now - self._touched > self.settings.claim_idle / 2:
            await self.queue.keep_claimed(self.settings.group, self.consumer, [r.id for r, _, _ in self._held])
            self._touched = now
        ready = [(r, run) for r, at, run in self._held if at <= now]
        if not ready:
            return [], []
        run_id = await self.queue.run_id()
        if any(run != run_id for _, run in ready):
            log.warning(
                "flusher %s: Redis restarted while %d records waited out the fast mode's window; reading "
                "again those it kept",
                self.consumer,
                len(self._held),
                extra={"event": "flusher_redis_restarted", "consumer": self.consumer, "count": len(self._held)},
            )
            return None
        self._held = [(r, at, run) for r, at, run in self._held if at > now]
        writes = [r for r, _ in ready if isinstance(r, QueuedWrite)]
        sums = [r for r, _ in ready if isinstance(r, CounterSums)]
        return writes, sums


__all__ = ["AsyncHold"]
