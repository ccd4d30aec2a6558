"""Freshness: what a read should do with the entry it found.

Given an entry's metadata, the current wall-clock time ``now`` and a uniform random
``u`` in (0, 1], :func:`assess` returns one state; the driver carries it out and
``match``-es on every state::

    FRESH           serve it
    EARLY_REFRESH   serve it, and refresh once in the background (XFetch fired)
    STALE           serve it, and refresh once in the background (inside SWR)
    STALE_IF_ERROR  load; serve this stale value only if the load fails (inside SIE)
    EXPIRED         past every window: a miss

Rules, in order (``t`` = ``now``, ``f`` = ``created_at + fresh_ttl``):

1. ``t < f`` and XFetch fires -> EARLY_REFRESH, else FRESH. XFetch (Vattani, Chierichetti,
   Lowenstein, "Optimal Probabilistic Cache Stampede Prevention", VLDB 2015) refreshes
   when ``t - delta * beta * ln(u) >= f``: each reader independently, with a probability
   that rises as expiry nears and with the load time ``delta``, so one reader refreshes
   a hot key before it expires and no coordination is needed. ``beta = 0`` disables it.
2. ``f <= t < f + swr`` -> STALE (RFC 5861 stale-while-revalidate, applied to the cache).
3. ``f <= t < f + sie`` -> STALE_IF_ERROR (RFC 5861 stale-if-error).
4. otherwise EXPIRED.

An entry created in the future (clock skew between processes) counts as fresh from its
own creation: its age is taken as zero.
"""

from __future__ import annotations

import math
from enum import Enum

from readscale._core.cache.entry import EntryMeta


class Freshness(Enum):
    FRESH = "fresh"
    EARLY_REFRESH = "early_refresh"
    STALE = "stale"
    STALE_IF_ERROR = "stale_if_error"
    EXPIRED = "expired"

    @property
    def servable(self) -> bool:
        """True when the value may be returned without waiting for a load."""
        return self in _SERVABLE


_SERVABLE = frozenset({Freshness.FRESH, Freshness.EARLY_REFRESH, Freshness.STALE})


def xfetch_fires(now: float, fresh_until: float, delta: float, beta: float, u: float) -> bool:
    """True when XFetch says this reader should refresh early. ``u`` is uniform in (0, 1]."""
    if beta <= 0.0 or delta <= 0.0:
        return False
    if u <= 0.0:
        return True  # ln(0) is -inf: the gap is infinite
    return now - delta * beta * math.log(u) >= fresh_until


def assess(meta: EntryMeta, now: float, u: float, beta: float) -> Freshness:
    """The state of an entry at ``now`` (see the module docstring)."""
    fresh_until = meta.created_at + meta.fresh_ttl
    now = max(now, meta.created_at)
    if now < fresh_until:
        if xfetch_fires(now, fresh_until, meta.load_time, beta, u):
            return Freshness.EARLY_REFRESH
        return Freshness.FRESH
    age_past = now - fresh_until
    if age_past < meta.swr:
        return Freshness.STALE
    if age_past < meta.sie:
        return Freshness.STALE_IF_ERROR
    return Freshness.EXPIRED


def jittered_ttl(ttl: float, jitter: float, u: float) -> float:
    """``ttl`` shortened by up to ``jitter`` (a fraction in [0, 1)) times ``u`` in [0, 1].

    Jitter only ever shortens: the configured TTL stays an upper bound on how long a value
    is served as fresh, and entries filled together expire spread over
    ``[ttl * (1 - jitter), ttl]`` instead of all at once.
    """
    if jitter <= 0.0:
        return ttl
    return ttl * (1.0 - jitter * min(max(u, 0.0), 1.0))


def storage_ttl(meta: EntryMeta, now: float) -> float:
    """How long the backend should keep the entry from ``now``: until it is no longer
    useful (fresh plus the longer stale window). At least one millisecond."""
    return max(meta.usable_until - now, 0.001)


def l1_ttl(meta: EntryMeta, now: float, cap: float | None) -> float:
    """How long an in-process copy may live: never past the entry's freshness, so an L1
    copy never outlives the L2 entry's fresh window, and at most ``cap`` seconds."""
    remaining = meta.created_at + meta.fresh_ttl - now
    if cap is not None:
        remaining = min(remaining, cap)
    return remaining
