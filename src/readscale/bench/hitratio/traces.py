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

__all__ = ["KEYS", "REQUESTS", "loop_trace", "news_trace", "shift_trace", "zipf_probabilities", "zipf_trace"]

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
