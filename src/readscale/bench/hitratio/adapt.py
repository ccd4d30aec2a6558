"""The adaptation table of ``readscale bench hitratio`` (issue 17) and the L1's costs.

Traces where a fixed admission window loses (``traces.py``): a cyclic loop 10 % larger
than the cache (LRU never hits), popularity that shifts abruptly (``shift``, the hot set
redrawn every tenth of the trace) and gradually (``drift``), recency-biased
re-references (``recency``) and Zipf with sequential scans (``scan``), each at 0.1 %,
1 % and 10 % of the 100,000-key universe. Beside readscale's adaptive store: LRU, theine
(adaptive W-TinyLFU, when installed), the best *static* window (the store with its
climber off, at each of ``STATIC_WINDOWS``: what a perfect one-off tuning would give)
and the offline optimum (Belady's MIN with bypass).

Costs, each against cachetools and theine in the same run: ns per hit, ns per miss +
set in a full cache (every set evicts), and bytes of overhead per entry (tracemalloc
over 100,000 entries of 500-byte values, keys and values allocated beforehand so only
the structure is counted).
"""

from __future__ import annotations

import gc
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from readscale import NO_VALUE, MemoryStore
from readscale.bench.harness import Rounds, round_robin
from readscale.bench.hitratio.policies import lru_hits, opt_hits, store_hits, theine_hits
from readscale.bench.hitratio.traces import KEYS, cycle_trace, drift_trace, recency_trace, scan_trace, shift_trace
from readscale.l1 import TinyLfuConfig

__all__ = ["STATIC_WINDOWS", "Adaptation", "adaptation_scenarios", "bytes_per_entry", "costs_ns", "static_best"]

STATIC_WINDOWS = (0.01, 0.1, 0.25, 0.5, 0.75, 1.0)
SIZES = (("01pct", KEYS // 1_000), ("1pct", KEYS // 100), ("10pct", KEYS // 10))


@dataclass(frozen=True)
class Adaptation:
    name: str  # metric stem, e.g. "cycle_1pct"
    trace: Callable[[], list[int]]
    capacity: int


def adaptation_scenarios(n_requests: int, seed: int = 0) -> list[Adaptation]:
    out: list[Adaptation] = []

    def cycle(capacity: int) -> Callable[[], list[int]]:
        return lambda: cycle_trace(capacity + capacity // 10, seed, n_requests=n_requests)

    for size, capacity in SIZES:
        out.extend(
            [
                Adaptation(f"cycle_{size}", cycle(capacity), capacity),
                Adaptation(
                    f"shift_{size}",
                    lambda: shift_trace(0.9, seed, period=n_requests // 10, n_requests=n_requests),
                    capacity,
                ),
                Adaptation(f"drift_{size}", lambda: drift_trace(0.9, seed, n_requests=n_requests), capacity),
                Adaptation(f"recency_{size}", lambda: recency_trace(seed, n_requests=n_requests), capacity),
                Adaptation(
                    f"scan_{size}",
                    lambda: scan_trace(0.9, seed, every=n_requests // 20, n_requests=n_requests),
                    capacity,
                ),
            ]
        )
    return out


def static_best(trace: list[int], capacity: int) -> tuple[int, float]:
    """(hits, window) of the best fixed window: the climber off, every hit replayed."""
    best = (-1, 0.0)
    for window in STATIC_WINDOWS:
        config = TinyLfuConfig(adaptive=False, window=window)
        best = max(best, (store_hits(trace, capacity, policy=config, read_buffer=1 << 20), window))
    return best


def adaptation_ratios(scenario: Adaptation, *, with_theine: bool) -> dict[str, float]:
    trace = scenario.trace()
    n = len(trace)
    hits, window = static_best(trace, scenario.capacity)
    out = {
        "": store_hits(trace, scenario.capacity) / n,
        "_lru": lru_hits(trace, scenario.capacity) / n,
        "_static": hits / n,
        "_static_window": window,
        "_opt": opt_hits(trace, scenario.capacity) / n,
    }
    if with_theine:
        out["_theine"] = theine_hits(trace, scenario.capacity) / n
    return out


# -- costs -----------------------------------------------------------------------------------


def _contenders(capacity: int) -> dict[str, tuple[Callable[[], Any], Callable[..., Any], Callable[..., Any]]]:
    """name -> (make, get(cache, key) -> hit?, put(cache, key, value))."""
    from cachetools import LRUCache, TTLCache

    def store_get(cache: Any, key: str) -> bool:
        return cache.get(key) is not NO_VALUE

    def store_put(cache: Any, key: str, value: bytes) -> None:
        cache.set(key, value, 300.0)

    def ct_get(cache: Any, key: str) -> bool:
        return cache.get(key) is not None

    def ct_put(cache: Any, key: str, value: bytes) -> None:
        cache[key] = value

    out: dict[str, tuple[Callable[[], Any], Callable[..., Any], Callable[..., Any]]] = {
        "readscale": (lambda: MemoryStore(capacity, seed=1), store_get, store_put),
        "cachetools_lru": (lambda: LRUCache(maxsize=capacity), ct_get, ct_put),
        "cachetools_ttl": (lambda: TTLCache(maxsize=capacity, ttl=300), ct_get, ct_put),
    }
    try:
        from theine import Cache
    except ImportError:  # pragma: no cover - the bench extra installs it
        return out

    def th_get(cache: Any, key: str) -> bool:
        return bool(cache.get(key)[1])

    def th_put(cache: Any, key: str, value: bytes) -> None:
        cache.set(key, value)

    out["theine"] = (lambda: Cache(capacity), th_get, th_put)
    return out


def costs_ns(rounds: int, *, capacity: int = 10_000, ops: int = 50_000) -> dict[str, dict[str, Rounds]]:
    """{"hit"|"miss_set": {contender: ns per operation}}: a hit reads a resident key (in
    random order), a miss + set looks up a new key and stores it in a full cache (every
    set evicts); each minus the empty loop, contenders round-robin."""
    import random

    resident = [f"item:{i}" for i in range(capacity)]
    hits = [resident[i % capacity] for i in range(ops)]
    random.Random(7).shuffle(hits)
    value = b"v" * 100
    contenders = _contenders(capacity)
    caches = {}
    for name, (make, _, put) in contenders.items():
        cache = make()
        for key in resident:
            put(cache, key, value)
        caches[name] = cache
    fresh_round = [0]

    def hit_body(name: str) -> Callable[[], float]:
        _, get, _ = contenders[name]
        cache = caches[name]

        def body() -> float:
            start = time.perf_counter()
            for key in hits:
                get(cache, key)
            return time.perf_counter() - start

        return body

    def miss_body(name: str) -> Callable[[], float]:
        _, get, put = contenders[name]
        cache = caches[name]

        def body() -> float:
            fresh_round[0] += 1
            keys = [f"new:{fresh_round[0]}:{i}" for i in range(ops)]
            start = time.perf_counter()
            for key in keys:
                if not get(cache, key):
                    put(cache, key, value)
            return time.perf_counter() - start

        return body

    def empty() -> float:
        noop = _noop
        start = time.perf_counter()
        for key in hits:
            noop(None, key)
        return time.perf_counter() - start

    out: dict[str, dict[str, Rounds]] = {}
    for kind, make_body in (("hit", hit_body), ("miss_set", miss_body)):
        gc.collect()
        raw = round_robin({"empty": empty, **{name: make_body(name) for name in contenders}}, rounds)
        base = raw["empty"].values
        out[kind] = {
            name: Rounds(tuple((v - b) / ops * 1e9 for v, b in zip(raw[name].values, base, strict=True)))
            for name in contenders
        }
    return out


def _noop(cache: Any, key: str) -> bool:
    return False


def bytes_per_entry(n: int = 100_000, value_size: int = 500) -> dict[str, float]:
    """Bytes of structure per entry (tracemalloc), keys and values excluded."""
    from cachetools import LRUCache, TTLCache

    def store(ttl: float | None, bounded: bool) -> Callable[[list[str], list[bytes]], Any]:
        def fill(keys: list[str], values: list[bytes]) -> Any:
            cache: MemoryStore[str, bytes] = MemoryStore(n, n * value_size if bounded else None, seed=1)
            for key, value in zip(keys, values, strict=True):
                cache.set(key, value, ttl, value_size)
            return cache

        return fill

    def cachetools(kind: Any) -> Callable[[list[str], list[bytes]], Any]:
        def fill(keys: list[str], values: list[bytes]) -> Any:
            cache = kind()
            for key, value in zip(keys, values, strict=True):
                cache[key] = value
            return cache

        return fill

    fills: dict[str, Callable[[list[str], list[bytes]], Any]] = {
        "readscale": store(None, False),
        "readscale_ttl": store(300.0, False),
        "readscale_bytes": store(None, True),
        "cachetools_lru": cachetools(lambda: LRUCache(maxsize=n)),
        "cachetools_ttl": cachetools(lambda: TTLCache(maxsize=n, ttl=300)),
    }
    try:
        from theine import Cache

        def theine_fill(keys: list[str], values: list[bytes]) -> Any:
            cache: Any = Cache(n)
            for key, value in zip(keys, values, strict=True):
                cache.set(key, value)
            return cache

        fills["theine"] = theine_fill
    except ImportError:  # pragma: no cover
        pass
    out: dict[str, float] = {}
    for name, fill in fills.items():
        keys = [f"item:{i:08d}" for i in range(n)]
        values = [bytes([i % 256]) * value_size for i in range(n)]
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        cache = fill(keys, values)
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        out[name] = (after - before) / n
        del cache
    return out
