"""Replica lag and health: what the lag observer's polls mean, and when to eject.

Lag (shared/notes/verified-postgres.md section 5 measured the traps):

- **Bytes** behind: the primary's current WAL position minus the replica's replay
  position (``pg_wal_lsn_diff``). Exact, and the signal routing uses.
- **Seconds** behind come from the primary's own history, never from
  ``now() - pg_last_xact_replay_timestamp()``: on an idle primary that age grows
  forever while the replica is current, and ``pg_stat_replication.replay_lag`` turns
  NULL after 10 s and stays stale after a resume. Instead the observer keeps a short
  history of ``(time, primary LSN)`` samples (:class:`PrimaryHistory`). A replica that
  replayed position R reflects the primary as it was at the last sample whose LSN was
  at most R; its lag is the time from then to the latest sample, 0 once it replayed the
  latest sample. An idle primary has a flat history, so a current replica reads 0 lag
  however old its last replayed transaction is.
- ``staleness(R, now)`` is the same measure taken to ``now``: an upper bound on how
  old the replica's data is, which the bounded-staleness mode needs. It is conservative
  (the primary passed R somewhere between two samples) and grows while the primary is
  not observed, which is the honest answer.

Health (:func:`next_health`): hysteresis in both directions (``eject_after`` bad checks
out, ``readmit_after`` good checks back in). A replica that lags too much is
*ejected*, capped by ``max_ejected_fraction`` (at least one may go); a replica that is
unreachable, promoted, or belongs to another cluster is *down*, uncapped, because
routing to it can only fail or return another database's data. Ejection never cancels
reads already running on the replica.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Literal

from readscale._core.replicas.causal import ClusterIdentity
from readscale._core.replicas.settings import HealthPolicy

__all__ = [
    "CheckKind",
    "NodeHealth",
    "PrimaryHistory",
    "PrimarySample",
    "ReplicaCheck",
    "ReplicaSample",
    "ReplicaStatus",
    "assess_replica",
    "ejection_allowance",
    "next_health",
]

HISTORY_SAMPLES = 1024

CheckKind = Literal["ok", "unreachable", "lagging", "promoted", "foreign"]
HealthStatus = Literal["admitted", "ejected", "down"]
# Checks that take a replica out at once and whatever the cap: serving from it is wrong.
_IMMEDIATE: frozenset[CheckKind] = frozenset({"promoted", "foreign"})


@dataclass(frozen=True, slots=True)
class PrimaryHistory:
    """Recent ``(time, primary LSN)`` samples, oldest first; LSNs never decrease."""

    times: tuple[float, ...] = ()
    lsns: tuple[int, ...] = ()

    def add(self, t: float, lsn: int, *, keep: int = HISTORY_SAMPLES) -> PrimaryHistory:
        """A history with this sample appended. A position below the last one means the
        primary's history restarted (a failover or a rebuilt cluster): start over."""
        if self.lsns and (lsn < self.lsns[-1] or t < self.times[-1]):
            return PrimaryHistory((t,), (lsn,))
        if self.lsns and t == self.times[-1]:
            # Two positions at one clock reading: keep the later one, so the earlier
            # never claims to show the primary as it was at that time.
            return PrimaryHistory(self.times, (*self.lsns[:-1], lsn))
        if self.lsns and lsn == self.lsns[-1] and len(self.lsns) >= 2 and self.lsns[-2] == lsn:
            # A flat stretch (idle primary) keeps its first and last samples only.
            return PrimaryHistory((*self.times[:-1], t), self.lsns)
        times, lsns = (*self.times, t), (*self.lsns, lsn)
        if len(lsns) > keep:
            times, lsns = times[-keep:], lsns[-keep:]
        return PrimaryHistory(times, lsns)

    @property
    def latest(self) -> tuple[float, int] | None:
        return (self.times[-1], self.lsns[-1]) if self.lsns else None

    def reflected_at(self, replay_lsn: int) -> float | None:
        """The latest sample time at which the primary was at or before ``replay_lsn``:
        the replica holds everything the primary had then. ``None`` if older than the history."""
        i = bisect.bisect_right(self.lsns, replay_lsn)
        return self.times[i - 1] if i else None

    def lag(self, replay_lsn: int) -> float | None:
        """Seconds behind as of the latest sample (0 once caught up with it); with the
        replica older than the whole history, the history's span (a lower bound)."""
        if not self.lsns:
            return None
        if replay_lsn >= self.lsns[-1]:
            return 0.0
        since = self.reflected_at(replay_lsn)
        return self.times[-1] - (self.times[0] if since is None else since)

    def staleness(self, replay_lsn: int, now: float) -> float | None:
        """At most how many seconds old a replica at ``replay_lsn`` is at ``now``; ``None``
        when the history cannot tell (empty, or the replica is older than all of it)."""
        since = self.reflected_at(replay_lsn)
        return None if since is None else max(0.0, now - since)


@dataclass(frozen=True, slots=True)
class PrimarySample:
    """One poll of the primary."""

    in_recovery: bool
    system_identifier: int
    current_lsn: int | None  # None while in recovery
    timeline: int | None


@dataclass(frozen=True, slots=True)
class ReplicaSample:
    """One poll of a replica."""

    in_recovery: bool
    system_identifier: int
    receive_lsn: int | None
    replay_lsn: int | None
    receiver_status: str | None  # pg_stat_wal_receiver.status, None with no WAL receiver
    timeline: int | None  # of the replica's last restartpoint (pg_control_checkpoint)
    replay_timestamp_age: float | None  # now() - pg_last_xact_replay_timestamp(); exported, never routed on


@dataclass(frozen=True, slots=True)
class ReplicaCheck:
    kind: CheckKind
    lag_seconds: float | None = None
    lag_bytes: int | None = None


def assess_replica(
    sample: ReplicaSample | None,
    *,
    identity: ClusterIdentity | None,
    history: PrimaryHistory,
    policy: HealthPolicy,
) -> ReplicaCheck:
    """Judge one poll of a replica (``None``: the poll failed)."""
    if sample is None:
        return ReplicaCheck("unreachable")
    if identity is not None and sample.system_identifier != identity.system_identifier:
        return ReplicaCheck("foreign")
    if not sample.in_recovery:
        return ReplicaCheck("promoted")
    if sample.replay_lsn is None:
        return ReplicaCheck("lagging")
    latest = history.latest
    lag_seconds = history.lag(sample.replay_lsn)
    lag_bytes = None if latest is None else max(0, latest[1] - sample.replay_lsn)
    too_far = (lag_seconds is not None and lag_seconds > policy.max_lag) or (
        policy.max_lag_bytes is not None and lag_bytes is not None and lag_bytes > policy.max_lag_bytes
    )
    return ReplicaCheck("lagging" if too_far else "ok", lag_seconds, lag_bytes)


@dataclass(frozen=True, slots=True)
class NodeHealth:
    """A replica's place in the rotation and its run of consecutive checks."""

    status: HealthStatus = "admitted"
    bad: int = 0
    good: int = 0
    reason: str | None = None

    @property
    def routable(self) -> bool:
        return self.status == "admitted"


def ejection_allowance(total: int, policy: HealthPolicy) -> int:
    """How many of ``total`` replicas may be out for lag at once (at least one)."""
    if total <= 0:
        return 0
    return max(1, int(policy.max_ejected_fraction * total))


def next_health(
    health: NodeHealth,
    check: CheckKind,
    *,
    others_out: int,
    total: int,
    policy: HealthPolicy,
) -> NodeHealth:
    """The health after one more check. ``others_out``: other replicas not admitted now."""
    if check == "ok":
        good = health.good + 1
        if health.status != "admitted" and good >= policy.readmit_after:
            return NodeHealth("admitted", 0, good, None)
        return NodeHealth(health.status, 0, good, health.reason)
    bad = health.bad + 1
    if check in _IMMEDIATE or (check == "unreachable" and bad >= policy.eject_after):
        return NodeHealth("down", bad, 0, check)
    if health.status == "down":
        return NodeHealth("down", bad, 0, health.reason)
    if check == "unreachable" or bad < policy.eject_after or health.status == "ejected":
        return NodeHealth(health.status, bad, 0, check if health.status == "ejected" else health.reason)
    if others_out + 1 > ejection_allowance(total, policy):
        # Kept in rotation by the cap; reads with a token still check its position.
        return NodeHealth("admitted", bad, 0, f"{check}, kept: at most {ejection_allowance(total, policy)} may be out")
    return NodeHealth("ejected", bad, 0, check)


@dataclass(frozen=True, slots=True)
class ReplicaStatus:
    """What the router knows about one node, for metrics and operators."""

    name: str
    role: Literal["primary", "replica"]
    status: HealthStatus
    reason: str | None
    replay_lsn: int | None
    lag_bytes: int | None
    lag_seconds: float | None
    replay_timestamp_age: float | None
    inflight: int
    reads: int
    ejections: int = 0
    readmissions: int = 0
