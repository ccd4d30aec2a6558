"""The request traces ``readscale bench hitratio`` replays (see the package docstring):
Zipf(α) popularity over permuted key ids, and the recency traces where frequency
misleads (``shift``, ``news``, ``loop``). Each is a pure function of its seed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    FloatArray = npt.NDArray[np.float64]

__all__ = [
    "KEYS",
    "REQUESTS",
    "cycle_trace",
    "drift_trace",
    "loop_trace",
    "news_trace",
    "recency_trace",
    "scan_trace",
    "shift_trace",
    "zipf_probabilities",
    "zipf_trace",
]

KEYS = 100_000
REQUESTS = 1_000_000


def _numpy() -> Any:
    try:
        import numpy
    except ImportError as exc:  # pragma: no cover - the bench extra installs it
        raise ImportError("the hit-ratio bench needs numpy: pip install 'readscale[bench]'", name="numpy") from exc
    return numpy


def zipf_probabilities(n_keys: int, alpha: float) -> FloatArray:
    np = _numpy()
    weights = np.arange(1, n_keys + 1, dtype=np.float64) ** -alpha
    result: FloatArray = weights / weights.sum()
    return result


def zipf_trace(alpha: float, seed: int, *, n_keys: int = KEYS, n_requests: int = REQUESTS) -> list[int]:
    """Zipf(α) requests over ``n_keys`` keys, key ids permuted (see the module docstring)."""
    np = _numpy()
    rng = np.random.default_rng(1000 + seed)
    ranks = rng.choice(n_keys, size=n_requests, p=zipf_probabilities(n_keys, alpha))
    permutation = rng.permutation(n_keys)
    keys: list[int] = permutation[ranks].tolist()
    return keys


def shift_trace(
    alpha: float, seed: int, *, period: int = 100_000, n_keys: int = KEYS, n_requests: int = REQUESTS
) -> list[int]:
    """Zipf(α) whose popularity permutation is redrawn every ``period`` requests."""
    np = _numpy()
    rng = np.random.default_rng(2000 + seed)
    ranks = rng.choice(n_keys, size=n_requests, p=zipf_probabilities(n_keys, alpha))
    out = np.empty(n_requests, dtype=np.int64)
    for start in range(0, n_requests, period):
        out[start : start + period] = rng.permutation(n_keys)[ranks[start : start + period]]
    keys: list[int] = out.tolist()
    return keys


def news_trace(alpha: float, seed: int, *, step: int = 20, n_keys: int = KEYS, n_requests: int = REQUESTS) -> list[int]:
    """The newest keys are the most popular: at request t, rank r means key t//step - r."""
    np = _numpy()
    rng = np.random.default_rng(3000 + seed)
    ranks = rng.choice(n_keys, size=n_requests, p=zipf_probabilities(n_keys, alpha))
    born = np.arange(n_requests, dtype=np.int64) // step
    keys: list[int] = (born - ranks + n_keys).tolist()
    return keys


def loop_trace(
    alpha: float, seed: int, *, loop: int, share: float = 0.5, n_keys: int = KEYS, n_requests: int = REQUESTS
) -> list[int]:
    """Zipf(α) requests mixed with a cyclic scan over ``loop`` other keys (``share`` of
    the requests)."""
    np = _numpy()
    rng = np.random.default_rng(4000 + seed)
    zipf = rng.permutation(n_keys)[rng.choice(n_keys, size=n_requests, p=zipf_probabilities(n_keys, alpha))]
    scan = rng.random(n_requests) < share
    position = np.cumsum(scan) % loop
    keys: list[int] = np.where(scan, n_keys + position, zipf).tolist()
    return keys


# -- the adaptation traces (issue 17): where a fixed window loses to LRU or to frequency ----------


def cycle_trace(loop: int, seed: int, *, n_requests: int = REQUESTS) -> list[int]:
    """A pure cyclic loop over ``loop`` keys (ids permuted by ``seed``): LRU's worst case
    when ``loop`` is slightly larger than the cache (it never hits), the frequency
    policy's best (it pins most of the loop)."""
    np = _numpy()
    ids = np.random.default_rng(5000 + seed).permutation(loop)
    keys: list[int] = ids[np.arange(n_requests) % loop].tolist()
    return keys


def drift_trace(
    alpha: float, seed: int, *, step: int = 10, n_keys: int = KEYS, n_requests: int = REQUESTS
) -> list[int]:
    """Zipf(α) whose popularity slides: at request t, rank r means key (r + t//step) mod
    ``n_keys`` (ids permuted), so each key climbs the ranks for a while, peaks, then drops
    out of the hot set for good: popularity that shifts gradually."""
    np = _numpy()
    rng = np.random.default_rng(6000 + seed)
    ranks = rng.choice(n_keys, size=n_requests, p=zipf_probabilities(n_keys, alpha))
    ids = rng.permutation(n_keys)
    slide = np.arange(n_requests, dtype=np.int64) // step
    keys: list[int] = ids[(ranks + n_keys - slide % n_keys) % n_keys].tolist()
    return keys


def recency_trace(
    seed: int, *, reuse: float = 0.7, alpha: float = 0.6, n_keys: int = KEYS, n_requests: int = REQUESTS
) -> list[int]:
    """Recency-biased re-references: with probability ``reuse`` a request repeats the key
    of a recent request, at a distance drawn log-uniformly from 1 to the whole history
    (so short distances dominate at every scale), else it draws a key from a weak
    Zipf(``alpha``). The stack model of temporal locality, where recency, not long-run
    frequency, predicts the next request."""
    np = _numpy()
    rng = np.random.default_rng(7000 + seed)
    fresh = rng.permutation(n_keys)[rng.choice(n_keys, size=n_requests, p=zipf_probabilities(n_keys, alpha))]
    again = (rng.random(n_requests) < reuse).tolist()
    span = np.exp(rng.random(n_requests) * np.log(n_requests)).astype(np.int64).tolist()
    out: list[int] = fresh.tolist()
    for t in range(1, n_requests):
        if again[t]:
            out[t] = out[t - min(span[t], t)]
    return out


def scan_trace(
    alpha: float,
    seed: int,
    *,
    scan: int = 5_000,
    every: int = 50_000,
    n_keys: int = KEYS,
    n_requests: int = REQUESTS,
) -> list[int]:
    """Zipf(α) requests interrupted every ``every`` requests by a sequential scan of
    ``scan`` keys never requested before (a batch job, a crawler): the scan floods an LRU
    and tells nothing about what comes next."""
    np = _numpy()
    rng = np.random.default_rng(8000 + seed)
    ranks = rng.choice(n_keys, size=n_requests, p=zipf_probabilities(n_keys, alpha))
    zipf: list[int] = rng.permutation(n_keys)[ranks].tolist()
    out: list[int] = []
    fresh = n_keys
    position = 0
    while len(out) < n_requests:
        out.extend(zipf[position : position + every])
        position += every
        out.extend(range(fresh, fresh + scan))
        fresh += scan
    return out[:n_requests]
