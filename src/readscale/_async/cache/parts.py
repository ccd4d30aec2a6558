"""The cache's parts, built and wired together. Written once, async;
``readscale._sync.cache.parts`` is generated from this file.

``AsyncCache.__init__`` builds :class:`AsyncParts` once (docs/architecture.md §5). Each part
creates and owns its state; this module only hands each one the parts it uses, in the
one order their dependencies allow: the L2 gate and the entries first, then the versions,
the coherence (L1 and bus), the filler, and the parts the public methods hand their calls
to (batches, reads, writes, the server check).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from readscale._async.backends.base import AsyncBackend
from readscale._async.cache.batch import AsyncBatch
from readscale._async.cache.bus import AsyncInvalidationBus
from readscale._async.cache.checks import AsyncServerCheck
from readscale._async.cache.coherence import AsyncCoherence
from readscale._async.cache.entries import AsyncEntries
from readscale._async.cache.filler import AsyncFiller
from readscale._async.cache.l2 import AsyncL2Gate
from readscale._async.cache.reads import AsyncReads
from readscale._async.cache.versions import AsyncVersions
from readscale._async.cache.writes import AsyncWrites
from readscale._core.cache import breaker as circuit
from readscale._shared.cache.stats import CacheStats
from readscale.codecs import Codec
from readscale.l1 import MemoryStore

if TYPE_CHECKING:  # the purgers need httpx; the cache takes any object of the protocol
    from readscale._async.purge.base import AsyncPurger


class AsyncParts:
    """The parts of one cache, each built over the ones it uses (settings already
    accepted by ``check_settings``)."""

    def __init__(
        self,
        backend: AsyncBackend | None,
        *,
        l1: MemoryStore[str, Any] | None,
        bus: AsyncInvalidationBus | None,
        codec: Codec,
        prefix: str,
        max_value_size: int,
        breaker: circuit.BreakerSettings | None,
        tombstone_ttl: float,
        loader_source: str,
        version_ttl: float,
        purger: AsyncPurger | None,
        stats: CacheStats,
        clock: Callable[[], float],
        monotonic: Callable[[], float],
        rng: Callable[[], float],
    ) -> None:
        self.l2 = AsyncL2Gate(backend, stats=stats, breaker=breaker, tombstone_ttl=tombstone_ttl, monotonic=monotonic)
        self.entries = AsyncEntries(codec=codec, max_value_size=max_value_size, stats=stats, clock=clock, rng=rng)
        self.versions = AsyncVersions(
            self.l2,
            prefix=prefix,
            version_ttl=version_ttl,
            tombstone_ttl=tombstone_ttl,
            monotonic=monotonic,
            before_read=self._start_bus,  # the coherence part is built next, with the versions
        )
        self.coherence = AsyncCoherence(
            self.versions, l1=l1, bus=bus, stats=stats, tombstone_ttl=tombstone_ttl, clock=clock, monotonic=monotonic
        )
        self.filler = AsyncFiller(
            self.l2,
            self.entries,
            self.versions,
            self.coherence,
            stats=stats,
            loader_source=loader_source,
            tombstone_ttl=tombstone_ttl,
            clock=clock,
            monotonic=monotonic,
            rng=rng,
        )
        self.batch = AsyncBatch(
            self.l2,
            self.entries,
            self.versions,
            self.coherence,
            self.filler,
            stats=stats,
            clock=clock,
            monotonic=monotonic,
        )
        self.checks = AsyncServerCheck(self.l2, name=stats.name, prefix=prefix, tombstone_ttl=tombstone_ttl)
        self.reads = AsyncReads(
            self.l2, self.versions, self.coherence, self.filler, self.checks, stats=stats, clock=clock
        )
        self.writes = AsyncWrites(
            self.l2,
            self.entries,
            self.versions,
            self.coherence,
            self.filler,
            self.checks,
            purger=purger,
            stats=stats,
            tombstone_ttl=tombstone_ttl,
            monotonic=monotonic,
        )

    async def _start_bus(self) -> None:
        """Subscribe to the bus before version counters are read (``AsyncVersions``'s
        hook): a bump between the read and the subscription would be missed."""
        await self.coherence.ensure_bus()
