"""Where a read goes: candidate replicas by WAL position, lag and load, then the primary.

The driver runs a small loop and this module decides each step (:func:`plan_read`):

1. **Candidates** are admitted replicas whose last known replay position is at or past
   the read's target LSN (the session's causal token, or the primary's current position
   for ``latest``), and, for bounded staleness, whose data is young enough. Positions
   come from the lag observer and from every guard, so they are never newer than the
   truth: a candidate may turn out fresher than believed, never staler.
2. **Pick** one by the power of two choices: two candidates drawn at random, the one
   with fewer reads in flight wins (on a tie, the one further ahead, then the first
   drawn). This spreads load nearly as well as least-loaded without herding, and a slow
   replica loses draws by itself as its reads pile up. No latency estimate is kept: a
   replica with one slow sample would never get the traffic to correct it.
3. The driver then runs the **guard** (``SELECT pg_last_wal_replay_lsn()``) in a
   statement *before* the one that takes the read's snapshot (verified: a guard inside
   the snapshot's own statement misses writes ~1% of the time under load). A guard
   below the target updates the replica's known position and the loop goes on.
4. With **no candidate**, wait (polling replay positions with a short backoff) until
   the read's wait budget is spent, then **fall back** to the primary through a token
   bucket that protects it (:func:`plan_fallback`): over the limit, keep waiting for a
   replica or a token up to ``max_wait``, then refuse with a ``retry_after``.
5. **Unsettled reads** (:func:`plan_unsettled`). A guard proves a replica replayed the
   token *before* the read's snapshot; the snapshot may be taken later (a slow
   statement, a long ``read()`` block, an ORM that runs its query after routing) and
   see more. What a read saw is bounded by the node's position read *after* its
   statements (replay only moves forward on a node; the primary's current position
   bounds every replica's). Reads whose statements ran where the router could not read
   that position at once (another library's connection) stay *unsettled* on their node
   until it is read. The session's next read either stays on that node, whose guard then
   reads the position (free: it runs anyway), or, if it may not stay (the node is not
   eligible, several nodes are unsettled, or the context is shared by every session of
   the process, where staying would herd all reads onto one replica), reads the
   positions first and merges them before choosing.

No I/O, clock or randomness here: ``now`` and ``rng`` are arguments.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Protocol

__all__ = [
    "FallBack",
    "ReadRequest",
    "Refuse",
    "ReplicaView",
    "Rng",
    "SettleFirst",
    "StayOn",
    "TokenBucket",
    "TryReplica",
    "UsePrimary",
    "Wait",
    "choose_replica",
    "eligible",
    "plan_fallback",
    "plan_read",
    "plan_unsettled",
    "wait_step",
]

# Waits poll replay positions every 1, 2, 4, 8, 10, 10, ... ms.
FIRST_WAIT_STEP = 0.001
MAX_WAIT_STEP = 0.010


class Rng(Protocol):
    def random(self) -> float: ...


@dataclass(frozen=True, slots=True)
class ReplicaView:
    """A replica as routing sees it at one moment."""

    name: str
    routable: bool
    replay_lsn: int | None
    staleness: float | None = None  # seconds, upper bound; None = unknown
    inflight: int = 0


@dataclass(frozen=True, slots=True)
class ReadRequest:
    """What a read needs: a replay position and/or a staleness bound (None: no need)."""

    min_lsn: int | None = None
    max_staleness: float | None = None


@dataclass(frozen=True, slots=True)
class TryReplica:
    name: str


@dataclass(frozen=True, slots=True)
class Wait:
    seconds: float


@dataclass(frozen=True, slots=True)
class FallBack:
    reason: str


@dataclass(frozen=True, slots=True)
class UsePrimary:
    pass


@dataclass(frozen=True, slots=True)
class Refuse:
    reason: str
    retry_after: float


def eligible(view: ReplicaView, request: ReadRequest) -> bool:
    """Whether ``view`` may serve ``request`` as far as routing knows."""
    if not view.routable:
        return False
    if request.min_lsn is not None and (view.replay_lsn is None or view.replay_lsn < request.min_lsn):
        return False
    return request.max_staleness is None or (view.staleness is not None and view.staleness <= request.max_staleness)


def _better(a: ReplicaView, b: ReplicaView) -> ReplicaView:
    """The less loaded of two draws; on a tie the one further ahead, then the first drawn
    (a fixed tie-break by name would herd all reads onto one replica when idle)."""
    if a.inflight != b.inflight:
        return a if a.inflight < b.inflight else b
    ra, rb = a.replay_lsn or 0, b.replay_lsn or 0
    return b if rb > ra else a


def choose_replica(
    views: Sequence[ReplicaView], request: ReadRequest, rng: Rng, exclude: Collection[str] = ()
) -> str | None:
    """The replica to try next (power of two choices among candidates), or None."""
    candidates = [v for v in views if v.name not in exclude and eligible(v, request)]
    if not candidates:
        return None
    if len(candidates) == 1:
        return candidates[0].name
    n = len(candidates)
    i = min(int(rng.random() * n), n - 1)
    j = min(int(rng.random() * (n - 1)), n - 2)
    if j >= i:
        j += 1
    return _better(candidates[i], candidates[j]).name


def wait_step(attempt: int) -> float:
    """The pause before the ``attempt``-th (0-based) re-poll of replay positions."""
    return min(FIRST_WAIT_STEP * float(1 << min(attempt, 16)), MAX_WAIT_STEP)


def plan_read(
    views: Sequence[ReplicaView],
    request: ReadRequest,
    *,
    now: float,
    wait_until: float,
    attempt: int,
    rng: Rng,
    exclude: Collection[str] = (),
) -> TryReplica | Wait | FallBack:
    """The next step of a read: try a replica, wait for one to catch up, or fall back."""
    name = choose_replica(views, request, rng, exclude)
    if name is not None:
        return TryReplica(name)
    alive = [v for v in views if v.routable and v.name not in exclude]
    if not alive:
        return FallBack("no replica is available")
    if now < wait_until:
        return Wait(min(wait_step(attempt), wait_until - now))
    if request.min_lsn is not None:
        return FallBack("no replica has replayed the read's position within the wait budget")
    return FallBack("no replica is fresh enough within the wait budget")


@dataclass(frozen=True, slots=True)
class StayOn:
    """Read on ``name`` again: its guard reads the position that settles the earlier reads there."""

    name: str


@dataclass(frozen=True, slots=True)
class SettleFirst:
    """Read the positions of ``nodes`` (and merge them) before choosing where the read goes."""

    nodes: frozenset[str]


def plan_unsettled(
    unsettled: Collection[str],
    views: Sequence[ReplicaView],
    request: ReadRequest,
    *,
    sticky: bool,
) -> StayOn | SettleFirst | None:
    """What a session read does about the session's unsettled reads (see rule 5).

    ``unsettled``: the nodes (replica names, or ``"primary"``) whose reads may have seen
    past the token. ``sticky``: whether the read may stay on such a node (not for a
    context every session of the process shares). None: nothing to settle.
    """
    if not unsettled:
        return None
    if sticky and len(unsettled) == 1:
        (name,) = unsettled
        view = next((v for v in views if v.name == name), None)
        if view is not None and eligible(view, request):
            return StayOn(name)
    return SettleFirst(frozenset(unsettled))


@dataclass(frozen=True, slots=True)
class TokenBucket:
    """``rate`` tokens per second up to ``burst``; immutable, ``now`` passed in."""

    rate: float
    burst: float
    tokens: float
    updated: float

    @classmethod
    def full(cls, rate: float, burst: float, now: float) -> TokenBucket:
        return cls(rate, burst, burst, now)

    def refill(self, now: float) -> TokenBucket:
        if now <= self.updated:
            return self
        tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        return TokenBucket(self.rate, self.burst, tokens, now)

    def take(self, now: float) -> tuple[bool, TokenBucket]:
        """Take one token if there is one; the bucket afterwards."""
        bucket = self.refill(now)
        if bucket.tokens >= 1:
            return True, TokenBucket(bucket.rate, bucket.burst, bucket.tokens - 1, bucket.updated)
        return False, bucket

    def wait_time(self, now: float) -> float:
        """Seconds until one token is available (``inf`` if it never will be)."""
        bucket = self.refill(now)
        if bucket.tokens >= 1:
            return 0.0
        if bucket.rate <= 0 or bucket.burst < 1:
            return math.inf
        return (1 - bucket.tokens) / bucket.rate


def plan_fallback(
    bucket: TokenBucket,
    *,
    now: float,
    give_up_at: float,
    primary_up: bool,
    attempt: int,
    retry_hint: float,
) -> tuple[UsePrimary | Wait | Refuse, TokenBucket]:
    """Whether a read that found no replica may go to the primary now.

    ``give_up_at``: the end of the read's extra wait when over the limit.
    ``retry_hint``: a retry delay to suggest when the primary itself is down.
    """
    if not primary_up:
        return Refuse("the primary is unreachable and no replica can serve this read", retry_hint), bucket
    ok, bucket = bucket.take(now)
    if ok:
        return UsePrimary(), bucket
    until_token = bucket.wait_time(now)
    if now < give_up_at:
        return Wait(min(wait_step(attempt), give_up_at - now)), bucket
    retry_after = until_token if math.isfinite(until_token) else max(retry_hint, 1.0)
    return Refuse("the primary's fallback rate limit is exhausted", retry_after), bucket
