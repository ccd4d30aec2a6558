"""What a replica router knows about its nodes, shared by its readers and its lag observer.

One :class:`Topology` per router holds, under one lock, each replica's health and last
known replay position, reads in flight and round-trip time, the primary's health and
position history, the cluster identity, the primary-protection token bucket and the
counters. Nothing here waits or does I/O, so the async router (one event loop) and the
sync router (many threads) share this code unchanged; decisions are delegated to
``readscale._core``.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Literal

from readscale._core.postgres.lsn import timeline_from_walfile
from readscale._core.replicas.causal import ClusterIdentity
from readscale._core.replicas.health import (
    CheckKind,
    NodeHealth,
    PrimaryHistory,
    PrimarySample,
    ReplicaSample,
    ReplicaStatus,
    assess_replica,
    next_health,
)
from readscale._core.replicas.routing import Refuse, ReplicaView, TokenBucket, UsePrimary, Wait, plan_fallback
from readscale._core.replicas.settings import PRIMARY, ReplicaSettings

__all__ = ["RouterStats", "Topology"]

Transition = Literal["none", "out", "back"]


@dataclass(frozen=True, slots=True)
class RouterStats:
    """Counters since the router opened (a snapshot)."""

    replica_reads: int = 0
    primary_reads: int = 0  # fallbacks to the primary (rate-limited)
    time_window_primary_reads: int = 0  # reads the time-window rule sent to the primary
    writes: int = 0
    waits: int = 0  # reads that waited for a replica to catch up
    guard_misses: int = 0  # guards that found a replica behind the read's target
    retries: int = 0  # idempotent reads retried on another node after a failure
    refusals: int = 0  # reads refused with ReplicaUnavailableError
    tokens_reset: int = 0  # causal tokens dropped for another cluster history
    settles: int = 0  # positions read to settle reads another library ran (before moving node, or at the end)
    positions_unknown: int = 0  # unsettled reads whose position no node could tell: monotonic reads at risk


@dataclass
class _Replica:
    name: str
    health: NodeHealth = field(default_factory=NodeHealth)
    replay_lsn: int | None = None
    lag_bytes: int | None = None
    lag_seconds: float | None = None
    replay_timestamp_age: float | None = None
    inflight: int = 0
    reads: int = 0
    ejections: int = 0  # taken out of rotation (routable -> not)
    readmissions: int = 0  # back in rotation


class Topology:
    """The routing state of one router (see module docstring). Every method is atomic."""

    def __init__(self, settings: ReplicaSettings, now: float) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._replicas = {name: _Replica(name) for name, _ in settings.replica_dsns}
        self._primary = _Replica(PRIMARY)
        self.identity: ClusterIdentity | None = None
        self.history = PrimaryHistory()
        protection = settings.protection
        self._bucket = TokenBucket.full(protection.rate, protection.burst, now)
        self._stats: dict[str, int] = dict.fromkeys(RouterStats.__dataclass_fields__, 0)

    # -- counters ----------------------------------------------------------------------

    def count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._stats[name] += n

    def stats(self) -> RouterStats:
        with self._lock:
            return RouterStats(**self._stats)

    # -- reading the state -------------------------------------------------------------

    def views(self, now: float) -> list[ReplicaView]:
        with self._lock:
            history = self.history
            return [
                ReplicaView(
                    name=r.name,
                    routable=r.health.routable,
                    replay_lsn=r.replay_lsn,
                    staleness=None if r.replay_lsn is None else history.staleness(r.replay_lsn, now),
                    inflight=r.inflight,
                )
                for r in self._replicas.values()
            ]

    def routable_replicas(self) -> list[str]:
        with self._lock:
            return [r.name for r in self._replicas.values() if r.health.routable]

    @property
    def primary_up(self) -> bool:
        return self._primary.health.status != "down"

    def primary_reason(self) -> str | None:
        return self._primary.health.reason

    def staleness(self, replay_lsn: int, now: float) -> float | None:
        with self._lock:
            return self.history.staleness(replay_lsn, now)

    def status(self) -> list[ReplicaStatus]:
        with self._lock:
            latest = self.history.latest
            out = [
                ReplicaStatus(
                    name=PRIMARY,
                    role="primary",
                    status=self._primary.health.status,
                    reason=self._primary.health.reason,
                    replay_lsn=None if latest is None else latest[1],
                    lag_bytes=0 if latest is not None else None,
                    lag_seconds=0.0 if latest is not None else None,
                    replay_timestamp_age=None,
                    inflight=self._primary.inflight,
                    reads=self._primary.reads,
                )
            ]
            out += [
                ReplicaStatus(
                    name=r.name,
                    role="replica",
                    status=r.health.status,
                    reason=r.health.reason,
                    replay_lsn=r.replay_lsn,
                    lag_bytes=r.lag_bytes,
                    lag_seconds=r.lag_seconds,
                    replay_timestamp_age=r.replay_timestamp_age,
                    inflight=r.inflight,
                    reads=r.reads,
                    ejections=r.ejections,
                    readmissions=r.readmissions,
                )
                for r in self._replicas.values()
            ]
            return out

    # -- what the lag observer and the guards learn --------------------------------------

    def note_position(self, name: str, replay_lsn: int) -> None:
        """A replica's replay position just read (guard or wait poll)."""
        with self._lock:
            replica = self._replicas[name]
            replica.replay_lsn = replay_lsn
            latest = self.history.latest
            if latest is not None:
                replica.lag_bytes = max(0, latest[1] - replay_lsn)

    def record_primary(self, sample: PrimarySample | None, now: float) -> Transition:
        """One poll of the primary (``None``: it failed); says whether it just went down or came back."""
        with self._lock:
            primary = self._primary
            before = primary.health.status != "down"
            if sample is None:
                primary.health = next_health(
                    primary.health, "unreachable", others_out=0, total=1, policy=self.settings.health
                )
            elif sample.in_recovery or sample.current_lsn is None:
                primary.health = NodeHealth("down", primary.health.bad + 1, 0, "in recovery: not a primary")
            else:
                primary.health = next_health(primary.health, "ok", others_out=0, total=1, policy=self.settings.health)
                if sample.timeline is not None:
                    identity = ClusterIdentity(sample.system_identifier, sample.timeline)
                    if identity != self.identity:
                        self.identity = identity
                        self.history = PrimaryHistory()
                self.history = self.history.add(now, sample.current_lsn)
            after = primary.health.status != "down"
            return "out" if before and not after else "back" if after and not before else "none"

    def record_replica(self, name: str, sample: ReplicaSample | None) -> Transition:
        """One poll of a replica; says whether it just left or rejoined the rotation."""
        with self._lock:
            replica = self._replicas[name]
            if sample is not None:
                replica.replay_lsn = sample.replay_lsn
                replica.replay_timestamp_age = sample.replay_timestamp_age
                if self.identity is None and sample.in_recovery and sample.timeline is not None:
                    # The primary has not answered yet (down at startup): the replicas tell
                    # which cluster and timeline they follow.
                    self.identity = ClusterIdentity(sample.system_identifier, sample.timeline)
            check = assess_replica(sample, identity=self.identity, history=self.history, policy=self.settings.health)
            if check.lag_seconds is not None or check.lag_bytes is not None:
                replica.lag_seconds, replica.lag_bytes = check.lag_seconds, check.lag_bytes
            return self._apply_check(replica, check.kind)

    def record_failure(self, name: str) -> Transition:
        """A read or guard on ``name`` failed for a connection reason: one bad check."""
        with self._lock:
            if name == PRIMARY:
                before = self._primary.health.routable
                self._primary.health = next_health(
                    self._primary.health, "unreachable", others_out=0, total=1, policy=self.settings.health
                )
                return "out" if before and not self._primary.health.routable else "none"
            return self._apply_check(self._replicas[name], "unreachable")

    def _apply_check(self, replica: _Replica, kind: CheckKind) -> Transition:
        before = replica.health.routable
        others_out = sum(1 for r in self._replicas.values() if r is not replica and not r.health.routable)
        replica.health = next_health(
            replica.health, kind, others_out=others_out, total=len(self._replicas), policy=self.settings.health
        )
        after = replica.health.routable
        if before and not after:
            replica.ejections += 1
            return "out"
        if after and not before:
            replica.readmissions += 1
            return "back"
        return "none"

    def record_not_replica(self, name: str) -> Transition:
        """A guard found ``name`` out of recovery (promoted, or a primary listed as a replica)."""
        with self._lock:
            return self._apply_check(self._replicas[name], "promoted")

    def learn_identity(self, system_identifier: int, walfile: str) -> ClusterIdentity:
        """The identity after a commit: the primary's system and the timeline it wrote on."""
        timeline = timeline_from_walfile(walfile)
        with self._lock:
            identity = self.identity
            if identity is None or identity.system_identifier != system_identifier or identity.timeline != timeline:
                identity = ClusterIdentity(system_identifier, timeline)
                self.identity = identity
                self.history = PrimaryHistory()
            return identity

    # -- reads in flight ---------------------------------------------------------------

    def begin_read(self, name: str) -> None:
        with self._lock:
            node = self._primary if name == PRIMARY else self._replicas[name]
            node.inflight += 1

    def end_read(self, name: str, *, served: bool) -> None:
        with self._lock:
            node = self._primary if name == PRIMARY else self._replicas[name]
            node.inflight -= 1
            if served:
                node.reads += 1

    # -- primary protection ------------------------------------------------------------

    def plan_fallback(
        self, *, now: float, give_up_at: float, attempt: int, retry_hint: float
    ) -> UsePrimary | Wait | Refuse:
        """May a read that found no replica use the primary now (takes a token if so)?"""
        with self._lock:
            step, self._bucket = plan_fallback(
                self._bucket,
                now=now,
                give_up_at=give_up_at,
                primary_up=self._primary.health.status != "down",
                attempt=attempt,
                retry_hint=retry_hint,
            )
            return step
