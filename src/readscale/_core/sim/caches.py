"""One cache, one key: lifetimes, hit ratios, misses, and Che's characteristic time.

The unit of every cache model here is an *entry's lifetime*. Requests for a key arrive
as a Poisson process of rate ``lam``. A miss fills the entry; it then lives until the
first of three deaths:

- its TTL ``ttl`` runs out, counted from the fill and not reset by hits (HTTP max-age
  and s-maxage, a Varnish TTL, a cache entry's TTL all work this way);
- an invalidation: writes delete or purge the key, a Poisson process of rate ``mu``;
- an LRU eviction: no request for ``t_c`` seconds, the *characteristic time* of Che,
  Tung and Wang ("Hierarchical Web caching systems: modeling, design and experimental
  results", IEEE JSAC 20(7), 2002).

Every renewal cycle holds exactly one miss (the fill) and on average ``lam * E[L]``
hits, so the hit ratio is ``x / (1 + x)`` with ``x = lam * E[L]``, and by PASTA it is
also the share of time the key is cached (its expected occupancy). Che's approximation
picks ``t_c`` so that the occupancies of all keys add up to the capacity.

Two limits are exact: pure LRU gives Che's ``1 - exp(-lam * t_c)``; a pure TTL cache
gives ``lam * T / (1 + lam * T)``, the TTL-cache result of Fricker, Robert and Roberts
("A versatile and accurate approximation for LRU cache performance", ITC 24, 2012) and
Jung, Berger and Balakrishnan (INFOCOM 2003). When both bind, the LRU death time past
``t_c`` (a geometric sum of short gaps) is taken as exponential (Renyi's theorem for
geometric sums); the result is monotone in ``ttl``, ``t_c`` and ``1 / mu``.

Finite runs start cold. The expected number of misses of one key in ``[0, D]`` is the
renewal function of cycles ``Exp(lam) + L`` (the lifetime taken at its mean): an exact
sum of Poisson tails while a run spans at most :data:`EXACT_CYCLES` lifetimes, else the
renewal asymptote ``lam*D/(1+x) + (x/(1+x))**2 / 2``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

INF = math.inf
EXACT_CYCLES = 24
_EXP_OVERFLOW = 700.0


def _survival_integral(rate: float, span: float) -> float:
    """``integral of exp(-rate * s) ds over [0, span]``, stable for tiny rates and infinite spans."""
    if math.isinf(span):
        return INF if rate == 0.0 else 1.0 / rate
    x = rate * span
    if x < 1e-6:
        return span * (1.0 - x / 2.0 + x * x / 6.0)
    return -math.expm1(-x) / rate


def entry_lifetime(lam: float, ttl: float = INF, t_c: float = INF, mu: float = 0.0) -> float:
    """Expected lifetime of an entry after its fill (seconds; may be infinite).

    ``lam`` > 0 is the key's request rate, ``ttl`` the TTL from the fill, ``t_c`` the LRU
    characteristic time and ``mu`` >= 0 the rate of invalidations.
    """
    head = _survival_integral(mu, min(ttl, t_c))
    if ttl <= t_c:
        return head
    # t_c < ttl: past t_c the entry survives only if the requests kept coming.
    c = lam * t_c
    if c > _EXP_OVERFLOW:
        zeta_inv = 0.0  # gaps longer than t_c never happen: capacity does not bind
        q = 1.0
    else:
        q = -math.expm1(-c)
        if q == 0.0:
            return head
        # Mean of a gap Exp(lam) truncated to [0, t_c], then the mean excursion length.
        frac = c / 2.0 - c * c / 12.0 if c < 1e-4 else 1.0 - c / math.expm1(c)
        m_c = frac / lam
        zeta_inv = 1.0 / (m_c * math.exp(c))
    return head + q * math.exp(-mu * t_c) * _survival_integral(zeta_inv + mu, ttl - t_c)


def hit_ratio(lam: float, lifetime: float) -> float:
    """Steady-state hit ratio of a key requested at ``lam`` whose entries live ``lifetime``."""
    if lam <= 0.0:
        return 0.0
    x = lam * lifetime
    if math.isinf(x):
        return 1.0
    return x / (1.0 + x)


def _poisson_at_least(mean: float, k: int) -> float:
    """P(Poisson(mean) >= k) for small k (k <= EXACT_CYCLES + 1)."""
    if mean <= 0.0:
        return 0.0 if k > 0 else 1.0
    if mean > _EXP_OVERFLOW:
        return 1.0
    term = math.exp(-mean)
    below = term
    for j in range(1, k):
        term *= mean / j
        below += term
    return max(0.0, 1.0 - below)


def misses_in_run(lam: float, lifetime: float, duration: float) -> float:
    """Expected misses of one key in a run of ``duration`` seconds from a cold cache."""
    if lam <= 0.0 or duration <= 0.0:
        return 0.0
    if math.isinf(lifetime) or lifetime >= duration:
        return -math.expm1(-lam * duration)  # one miss at most: the first request
    cycles = math.floor(duration / lifetime)
    x = lam * lifetime
    if cycles > EXACT_CYCLES:
        h = x / (1.0 + x)
        return lam * duration / (1.0 + x) + h * h / 2.0
    # Renewal k (k = 0, 1, ...) happens by D iff k+1 exponential waits fit in D - k*L.
    return math.fsum(_poisson_at_least(lam * (duration - k * lifetime), k + 1) for k in range(cycles + 1))


def miss_fraction(lam: float, lifetime: float, duration: float | None) -> float:
    """Share of a key's requests that miss: steady state (``duration`` None) or a cold run."""
    if lam <= 0.0:
        return 1.0
    if duration is None:
        return 1.0 - hit_ratio(lam, lifetime)
    return min(1.0, misses_in_run(lam, lifetime, duration) / (lam * duration))


def characteristic_time(
    counts: Sequence[int],
    occupancy: Callable[[int, float], float],
    capacity: float,
) -> float:
    """Che's characteristic time: the ``t_c`` at which expected occupancy equals ``capacity``.

    ``counts[j]`` is the number of keys in bin ``j`` and ``occupancy(j, t_c)`` the expected
    occupancy of one of them (its hit ratio, by PASTA). Returns ``inf`` when the cache
    never fills (capacity at least the keys, or TTLs and invalidations keep it emptier
    than its capacity), and 0 for a capacity of 0.
    """
    if capacity <= 0:
        return 0.0
    if capacity >= sum(counts):
        return INF

    def filled(t_c: float) -> float:
        return math.fsum(n * occupancy(j, t_c) for j, n in enumerate(counts))

    lo, hi = 1e-9, 1e12
    if filled(hi) <= capacity:
        return INF
    if filled(lo) >= capacity:
        return lo
    log_lo, log_hi = math.log(lo), math.log(hi)
    for _ in range(64):
        mid = (log_lo + log_hi) / 2.0
        if filled(math.exp(mid)) < capacity:
            log_lo = mid
        else:
            log_hi = mid
    return math.exp((log_lo + log_hi) / 2.0)
