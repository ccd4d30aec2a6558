"""The lag observer: polls every node in the background and refreshes replay positions
on demand for reads that wait.

Each poll reads the primary's current WAL position (kept as a short history, from which
lag in seconds is derived: see ``readscale._core.replicas.health``), each replica's
receive and replay positions, and judges health with hysteresis. A node that comes back
gets its pool checked, because the connections made before it went down are dead.

Reads refresh positions through one single-flight poll of the replicas (many waiting
reads, one query per replica), and in the background when routing is unsure whether a
replica is fresh (known positions only lag the truth).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

from readscale._async.replicas.nodes import AsyncNode
from readscale._core.replicas.routing import ReadRequest, ReplicaView, eligible
from readscale._core.replicas.settings import ReplicaSettings
from readscale._shared.primitives.flight import AsyncSingleFlight
from readscale._shared.primitives.locks import AsyncEvent
from readscale._shared.primitives.tasks import AsyncBackground
from readscale._shared.replicas.topology import Topology

__all__ = ["REFRESH_INTERVAL", "AsyncLagObserver"]

log = logging.getLogger("readscale")
# At most one background refresh of replay positions per this many seconds.
REFRESH_INTERVAL = 0.005


class AsyncLagObserver:
    """Keeps a router's :class:`~readscale._shared.replicas.topology.Topology` current."""

    def __init__(
        self,
        primary: AsyncNode,
        replicas: Mapping[str, AsyncNode],
        topology: Topology,
        settings: ReplicaSettings,
        clock: Callable[[], float],
    ) -> None:
        self._primary = primary
        self._replicas = replicas
        self._topology = topology
        self._interval = settings.poll_interval
        self._clock = clock
        self._positions: AsyncSingleFlight[str, None] = AsyncSingleFlight()
        self._loop: AsyncBackground[str] = AsyncBackground()
        self._background: AsyncBackground[str] = AsyncBackground()
        self._last_refresh = -REFRESH_INTERVAL
        self._stop = AsyncEvent()

    async def start(self) -> None:
        """Poll once now (so the first read knows the cluster), then every interval."""
        await self.poll()
        self._loop.spawn("observer", self._run)

    async def stop(self) -> None:
        self._stop.set()
        await self._loop.close()
        await self._background.close()

    async def _run(self) -> None:
        while not self._stop.is_set():
            try:
                await self.poll()
            except Exception as exc:  # the observer must outlive any one bad poll
                log.warning(
                    "readscale: lag observer poll failed: %s",
                    exc,
                    exc_info=exc,
                    extra={"event": "replica_poll_failed", "reason": str(exc)},
                )
            await self._stop.wait(self._interval)

    async def poll(self) -> None:
        """Poll every node once: positions, lag, health."""
        now = self._clock()  # before the primary answers: a sample never claims a later time
        if self._topology.record_primary(await self._primary.probe_primary(), now) == "back":
            await self._primary.pool.check()
        for name, node in self._replicas.items():
            if self._topology.record_replica(name, await node.probe_replica()) == "back":
                await node.pool.check()

    async def refresh_positions(self) -> None:
        """Re-read every routable replica's replay position (shared by concurrent callers)."""
        await self._positions.run("positions", self._poll_positions)

    async def _poll_positions(self) -> None:
        for name in self._topology.routable_replicas():
            lsn = await self._replicas[name].probe_position()
            if lsn is not None:
                self._topology.note_position(name, lsn)

    def refresh_if_unsure(self, views: list[ReplicaView], request: ReadRequest, now: float) -> None:
        """Refresh replay positions in the background when a routable replica is not known
        to be fresh enough. The replica a session read last is the only one known to be at
        its token; without this, a session would stick to it (even to the more lagged of
        two replicas) until the next poll."""
        if now - self._last_refresh < REFRESH_INTERVAL:
            return
        if all(eligible(v, request) for v in views if v.routable):
            return
        self._last_refresh = now
        self._background.spawn("positions", self.refresh_positions)
