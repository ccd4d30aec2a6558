"""Write-behind, the flusher's durability check: the Redis against the queue's mode.

Written once, async; ``readscale._sync.writebehind.durability`` is generated from this file.
The flusher checks at start (a refusal ends its run: it will not drain a queue kept by a
Redis too weak for the mode it was promised) and every ``recheck_every`` seconds after
(a refusal is then logged once per cause and counted, and flushing goes on: the queue is
not less safe for being drained). The producer checks on its own terms, refusing writes
(``producer.py``); the rules of both are ``readscale._core.writebehind.modes``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from readscale._async.writebehind.queue import AsyncWriteQueue
from readscale._core.writebehind.modes import FAST_LOSS_WINDOW, WriteBehindMode, check_mode, delayed_fsync_growth
from readscale._core.writebehind.settings import FlusherSettings
from readscale._shared.writebehind.stats import FlusherStats
from readscale.errors import DurabilityError

log = logging.getLogger("readscale.writebehind")


class AsyncFlusherDurability:
    """Checks one flusher's Redis against ``settings.durability``; owns when to check
    next and the last refusal (logged once per cause)."""

    def __init__(
        self,
        queue: AsyncWriteQueue,
        settings: FlusherSettings,
        stats: FlusherStats,
        *,
        consumer: str,
        monotonic: Callable[[], float],
    ) -> None:
        self.queue = queue
        self.settings = settings
        self.stats = stats
        self.consumer = consumer
        self._monotonic = monotonic
        self._next_check = 0.0
        self._refusal: str | None = None

    def due(self, now: float) -> bool:
        """Whether ``recheck_every`` has passed since the last check."""
        return now >= self._next_check

    async def check(self, *, at_start: bool = False) -> bool:
        """Check the Redis against ``settings.mode``: at start a refusal raises
        :class:`DurabilityError`; later it is logged (once per cause) and counted, and
        flushing goes on (the queue is not less safe for being drained)."""
        mode = self.settings.durability
        self._next_check = self._monotonic() + self.settings.recheck_every
        if mode is WriteBehindMode.VOLATILE:
            return True
        facts = await self.queue.server_facts(dict(self.settings.assume_config))
        self.stats.durability_checks += 1
        delayed = facts.delayed_fsyncs
        previous = None if self.stats.aof_delayed_fsync < 0 else self.stats.aof_delayed_fsync
        grown = delayed_fsync_growth(previous, delayed)
        if grown:
            log.warning(
                "flusher %s: Redis postponed %d more AOF fsyncs past its limit (aof_delayed_fsync=%d): its "
                "disk is slow; in fast mode writes acknowledged in the last %.0f s or more were at risk",
                self.consumer,
                grown,
                delayed,
                FAST_LOSS_WINDOW,
                extra={
                    "event": "writebehind_aof_delayed_fsync",
                    "consumer": self.consumer,
                    "count": grown,
                    "aof_delayed_fsync": delayed,
                },
            )
        self.stats.aof_delayed_fsync = -1 if delayed is None else delayed
        refusal = check_mode(mode, facts)
        if refusal is None:
            if self._refusal is not None:
                log.info(
                    "flusher %s: %s keeps mode %r again",
                    self.consumer,
                    self.queue.where,
                    mode.value,
                    extra={
                        "event": "writebehind_durability_ok",
                        "consumer": self.consumer,
                        "backend": self.queue.where,
                        "mode": mode.value,
                    },
                )
            self._refusal = None
            self.stats.durability_ok = 1
            return True
        self.stats.durability_refusals += 1
        self.stats.durability_ok = 0
        error: DurabilityError = refusal.error(self.queue.where)
        if at_start:
            raise error
        if self._refusal != str(error):
            log.error(
                "flusher %s: %s",
                self.consumer,
                error,
                extra={"event": "writebehind_durability_refused", "consumer": self.consumer, "reason": str(error)},
            )
        self._refusal = str(error)
        return False


__all__ = ["AsyncFlusherDurability"]
