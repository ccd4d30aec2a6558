"""A sampled consistency checker (Polaris-style), as a library API.

Feed it the invalidations you make (or let the CDC worker do it): a sample of them is
checked after ``delay`` seconds by reading the cache and the truth (your function,
reading the database at or past the invalidation's LSN) and comparing. The stale rate
and its nines are reported in ``report()`` and exported to Prometheus.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from readscale._async.cache.cache import AsyncCache
from readscale._core.cache.novalue import NO_VALUE
from readscale._core.cache.policy import CachePolicy
from readscale._core.consistency.sampled import ConsistencyReport, sampled
from readscale._shared.cache.fill_scope import fill_scope
from readscale._shared.primitives.locks import async_sleep

log = logging.getLogger("readscale.consistency")


@dataclass(frozen=True, slots=True)
class _Pending:
    key: str
    lsn: int | None
    policy: CachePolicy | None
    due: float


class AsyncConsistencyChecker:
    """Checks that the cache agrees with the truth after invalidations.

    ``truth(key)`` returns what the database holds for ``key`` now (a fill scope with the
    invalidation's LSN as floor is open around it, so a replica router reads at or past
    the change). ``compare`` decides agreement (equality by default).
    """

    def __init__(
        self,
        cache: AsyncCache,
        truth: Callable[[str], Awaitable[Any]],
        *,
        sample_rate: float = 0.01,
        delay: float = 1.0,
        compare: Callable[[Any, Any], bool] | None = None,
        rng: Callable[[], float] = random.random,
        monotonic: Callable[[], float] = time.monotonic,
        name: str = "cache",
    ) -> None:
        self.cache = cache
        self._truth = truth
        self.sample_rate = sample_rate
        self.delay = delay
        self._compare = compare or (lambda a, b: bool(a == b))
        self._rng = rng
        self._monotonic = monotonic
        self.name = name
        self._pending: list[_Pending] = []
        self.checked = 0
        self.stale = 0
        self.misses = 0
        self.stale_keys: list[str] = []

    def observe(self, keys: Sequence[str], lsn: int | None = None, policy: CachePolicy | None = None) -> int:
        """Record invalidated keys; a sample is queued for a check. How many were sampled."""
        due = self._monotonic() + self.delay
        chosen = [k for k in keys if sampled(self._rng(), self.sample_rate)]
        self._pending.extend(_Pending(k, lsn, policy, due) for k in chosen)
        return len(chosen)

    async def check(self, key: str, *, lsn: int | None = None, policy: CachePolicy | None = None) -> bool:
        """Compare the cache with the truth for one key now; True if consistent."""
        cached = await self.cache.get(key, policy=policy)
        self.checked += 1
        if cached is NO_VALUE:
            self.misses += 1
            return True
        with fill_scope(lsn):
            truth = await self._truth(key)
        if self._compare(cached, truth):
            return True
        self.stale += 1
        if len(self.stale_keys) < 100:
            self.stale_keys.append(key)
        log.warning(
            "consistency: %s is stale in the cache (cached %r, truth %r)",
            key,
            cached,
            truth,
            extra={"event": "consistency_stale_entry", "key": key},
        )
        return False

    async def run_due(self) -> int:
        """Check every sample whose delay has passed; how many were checked."""
        now = self._monotonic()
        due = [p for p in self._pending if p.due <= now]
        self._pending = [p for p in self._pending if p.due > now]
        for item in due:
            await self.check(item.key, lsn=item.lsn, policy=item.policy)
        return len(due)

    async def drain(self) -> None:
        """Wait for and check every pending sample."""
        while self._pending:
            wait = min(p.due for p in self._pending) - self._monotonic()
            if wait > 0:
                await async_sleep(wait)
            await self.run_due()

    def report(self) -> ConsistencyReport:
        return ConsistencyReport(self.checked, self.stale, self.misses)

    def prometheus_collector(self) -> Any:
        """A prometheus-client collector exporting the checked/stale counts and the nines."""
        checker = self

        class Collector:
            def collect(self) -> Any:
                from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

                report = checker.report()
                labels = ["cache"]
                checked = CounterMetricFamily("readscale_consistency_checked", "Sampled reads checked", labels=labels)
                checked.add_metric([checker.name], report.checked)
                stale = CounterMetricFamily("readscale_consistency_stale", "Sampled reads found stale", labels=labels)
                stale.add_metric([checker.name], report.stale)
                nines = GaugeMetricFamily("readscale_cache_consistency_nines", "Consistency in nines", labels=["cache"])
                nines.add_metric([checker.name], report.nines)
                yield checked
                yield stale
                yield nines

        return Collector()
