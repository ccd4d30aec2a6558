"""``readscale bench hitratio``: how often the L1 store hits, against LRU, the best
static choice and the offline optimum, on the same traces; and what one hit costs.

Traces (as in shared/notes/baselines.md §3): Zipf(α) popularity over 100,000 keys,
1,000,000 requests drawn with ``numpy.random.default_rng(1000 + seed).choice`` with
``p ∝ rank**-α``, key ids randomly permuted. Every policy uses demand fill (a miss
stores the key) and the hit ratio counts the whole trace, cold start included.

Reference policies
- LRU: an ``OrderedDict`` (what cachetools' LRUCache does, faster to simulate).
- Belady's MIN: the offline optimum with bypass (a miss may decline to be cached):
  evict whichever cached key is next requested farthest in the future, or skip the
  incoming key when it is itself the farthest. Checked against a brute-force search in
  ``tests/unit/test_hitratio.py``.
- perfect LFU: exact counts of every key ever requested; the ceiling of an online
  frequency policy (W-TinyLFU approximates it with a sketch and a bounded memory).
- static top-C: an oracle that pins the C most requested keys of the trace from the
  start. On an i.i.d. (IRM) trace such as Zipf no online policy can beat it in
  expectation: its contents maximise the probability of the next request, whatever the
  history. It is the ceiling an online policy can approach, not pass.

Recency traces (where frequency misleads, caffeine #106): ``shift`` redraws the
popularity permutation every 100,000 requests, so the hot set moves abruptly; ``news``
makes the newest keys the most popular (a key is born at rank 0 and ages one rank per
``step`` requests), the shape of feeds and trending items; ``loop`` mixes a Zipf stream
with a cyclic scan slightly larger than the cache (LRU's worst case). Two more were
held out of the tuning and show where W-TinyLFU still loses to LRU: ``news08fast``
(keys age four times faster) and ``shift09_10pct`` (abrupt shifts in a 10 % cache,
which relearns 10,000 keys from a long frequency memory).
"""

from __future__ import annotations

import heapq
import random
import statistics
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from readscale import NO_VALUE, MemoryStore
from readscale.bench.harness import BenchReport, Rounds, ratio, round_robin
from readscale.l1 import TinyLfuConfig

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    FloatArray = npt.NDArray[np.float64]

__all__ = [
    "Scenario",
    "hit_path_ns",
    "hit_ratios",
    "lfu_hits",
    "loop_trace",
    "lru_hits",
    "news_trace",
    "next_uses",
    "opt_hits",
    "request_ns",
    "run",
    "scenarios",
    "shift_trace",
    "static_hits",
    "store_hits",
    "zipf_trace",
]

KEYS = 100_000
REQUESTS = 1_000_000


# -- traces ----------------------------------------------------------------------------------


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


# -- reference policies ----------------------------------------------------------------------


def lru_hits(trace: Sequence[int], capacity: int) -> int:
    cache: OrderedDict[int, None] = OrderedDict()
    hits = 0
    move = cache.move_to_end
    for key in trace:
        if key in cache:
            move(key)
            hits += 1
        else:
            cache[key] = None
            if len(cache) > capacity:
                cache.popitem(last=False)
    return hits


def next_uses(trace: Sequence[int]) -> list[int]:
    """For each position, the position of the next request of the same key (len(trace)
    when there is none)."""
    n = len(trace)
    nxt = [n] * n
    last: dict[int, int] = {}
    for i in range(n - 1, -1, -1):
        key = trace[i]
        nxt[i] = last.get(key, n)
        last[key] = i
    return nxt


def opt_hits(trace: Sequence[int], capacity: int) -> int:
    """Belady's MIN with bypass: the most hits any policy could get on ``trace``."""
    nxt = next_uses(trace)
    cache: dict[int, int] = {}  # key -> position of its next request
    heap: list[tuple[int, int]] = []  # (-next request, key); stale items skipped lazily
    hits = 0
    push = heapq.heappush
    for t, key in enumerate(trace):
        upcoming = nxt[t]
        if key in cache:
            hits += 1
        elif len(cache) >= capacity:
            while True:
                farthest, victim = heap[0]
                if cache.get(victim) == -farthest:
                    break
                heapq.heappop(heap)
            if upcoming >= -farthest:
                continue  # the incoming key is the one needed last: do not cache it
            heapq.heappop(heap)
            del cache[victim]
        cache[key] = upcoming
        push(heap, (-upcoming, key))
    return hits


def lfu_hits(trace: Sequence[int], capacity: int) -> int:
    """Hits of a perfect LFU: exact counts of every key ever seen (cached or not), a
    miss admitted only if it is now more frequent than the least frequent cached key.

    The best an online frequency policy can do without the future: on the Zipf traces
    it is the practical ceiling W-TinyLFU approaches, a little below the static oracle
    (which also skips the cold start and knows the final counts from the first request).
    """
    counts: dict[int, int] = {}
    cache: set[int] = set()
    heap: list[tuple[int, int]] = []  # (count, key) of cached keys; stale items skipped
    hits = 0
    push = heapq.heappush
    for key in trace:
        count = counts.get(key, 0) + 1
        counts[key] = count
        if key in cache:
            hits += 1
            push(heap, (count, key))
            continue
        if len(cache) >= capacity:
            while True:
                least, victim = heap[0]
                if victim in cache and counts[victim] == least:
                    break
                heapq.heappop(heap)
            if count <= least:
                continue
            heapq.heappop(heap)
            cache.discard(victim)
        cache.add(key)
        push(heap, (count, key))
    return hits


def static_hits(trace: Sequence[int], capacity: int) -> int:
    """Hits of an oracle pinning the ``capacity`` most requested keys of the trace."""
    return sum(sorted(Counter(trace).values(), reverse=True)[:capacity])


def store_hits(
    trace: Sequence[int],
    capacity: int,
    *,
    policy: TinyLfuConfig | None = None,
    read_buffer: int = 128,
    seed: int = 0,
) -> int:
    """Hits of a :class:`MemoryStore` of ``capacity`` entries, demand-filled."""
    store: MemoryStore[int, int] = MemoryStore(capacity, policy=policy, read_buffer=read_buffer, seed=seed)
    get = store.get
    put = store.set
    for key in trace:
        if get(key) is NO_VALUE:
            put(key, key, None)
    hits = store.stats.hits
    assert hits + store.stats.misses == len(trace)
    return hits


def theine_hits(trace: Sequence[int], capacity: int) -> int:  # pragma: no cover - optional peer
    from theine import Cache

    cache: Any = Cache(capacity, nolock=True)
    hits = 0
    get = cache.get
    put = cache.set
    for key in trace:
        if get(key)[1]:
            hits += 1
        else:
            put(key, key)
    return hits


# -- the bench -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    name: str  # metric stem, e.g. "zipf099_1pct"
    trace: Callable[[int], list[int]]  # seed -> trace
    capacity: int
    static: bool = True  # the static oracle is meaningful only for stationary traces


def scenarios(n_requests: int = REQUESTS) -> list[Scenario]:
    def zipf(alpha: float) -> Callable[[int], list[int]]:
        return lambda seed: zipf_trace(alpha, seed, n_requests=n_requests)

    return [
        Scenario("zipf099_1pct", zipf(0.99), 1_000),
        Scenario("zipf08_1pct", zipf(0.8), 1_000),
        Scenario("zipf099_10pct", zipf(0.99), 10_000),
        Scenario("zipf08_10pct", zipf(0.8), 10_000),
        Scenario("shift09_1pct", lambda s: shift_trace(0.9, s, n_requests=n_requests), 1_000, static=False),
        Scenario("news08_1pct", lambda s: news_trace(0.8, s, n_requests=n_requests), 1_000, static=False),
        Scenario("loop_1pct", lambda s: loop_trace(0.9, s, loop=1_200, n_requests=n_requests), 1_000),
        # Held out while tuning, kept because the policy loses to LRU here (so does theine).
        Scenario("news08fast_1pct", lambda s: news_trace(0.8, s, step=5, n_requests=n_requests), 1_000, static=False),
        Scenario("shift09_10pct", lambda s: shift_trace(0.9, s, n_requests=n_requests), 10_000, static=False),
    ]


def hit_ratios(scenario: Scenario, seed: int, *, with_theine: bool = False) -> dict[str, float]:
    trace = scenario.trace(seed)
    n = len(trace)
    out = {
        "": store_hits(trace, scenario.capacity) / n,
        "_lru": lru_hits(trace, scenario.capacity) / n,
        "_opt": opt_hits(trace, scenario.capacity) / n,
    }
    if scenario.static:
        out["_static"] = static_hits(trace, scenario.capacity) / n
        out["_lfu"] = lfu_hits(trace, scenario.capacity) / n
    if with_theine:
        out["_theine"] = theine_hits(trace, scenario.capacity) / n
    return out


def hit_path_ns(rounds: int, *, n_keys: int = 10_000, lookups: int = 200_000) -> dict[str, Rounds]:
    """ns per hit of ``MemoryStore.get`` and cachetools ``TTLCache[k]`` (TTL 300 s), each
    minus the empty loop, round-robin: 10,000 resident str keys read in random order."""
    from cachetools import TTLCache

    keys = [f"item:{i}" for i in range(n_keys)]
    order = [keys[i % n_keys] for i in range(lookups)]
    random.Random(7).shuffle(order)
    store: MemoryStore[str, bytes] = MemoryStore(n_keys * 2, seed=1)
    ttl_cache: TTLCache[str, bytes] = TTLCache(maxsize=n_keys * 2, ttl=300)
    for key in keys:
        store.set(key, b"v", 300)
        ttl_cache[key] = b"v"

    def timed(body: Callable[[], None]) -> Callable[[], float]:
        # Best of three passes per round (as timeit does), then the median of rounds:
        # the host is shared, and a neighbour's burst should not land in one contender.
        def one_round() -> float:
            best = float("inf")
            for _ in range(3):
                start = time.perf_counter()
                body()
                best = min(best, time.perf_counter() - start)
            return best

        return one_round

    def empty_loop() -> None:
        for _ in order:
            pass

    def store_loop() -> None:
        get = store.get
        for key in order:
            get(key)

    def ttl_loop() -> None:
        cache = ttl_cache
        for key in order:
            cache[key]

    raw = round_robin({"empty": timed(empty_loop), "store": timed(store_loop), "ttl": timed(ttl_loop)}, rounds)
    base = raw["empty"].values
    assert store.stats.misses == 0
    return {
        name: Rounds(tuple((v - b) / lookups * 1e9 for v, b in zip(raw[name].values, base, strict=True)))
        for name in ("store", "ttl")
    }


def request_ns(rounds: int, trace: Sequence[int], capacity: int) -> dict[str, Rounds]:
    """Amortised ns per request of a cache-aside loop over ``trace`` (``get``, then
    ``set`` on a miss, TTL 300 s), from an empty cache: what the hit path's deferred
    bookkeeping costs once it is replayed on writes. MemoryStore against cachetools
    ``TTLCache`` (an LRU, so it misses more), round-robin."""
    from cachetools import TTLCache

    def store_pass() -> float:
        store: MemoryStore[int, int] = MemoryStore(capacity, seed=0)
        get = store.get
        put = store.set
        start = time.perf_counter()
        for key in trace:
            if get(key) is NO_VALUE:
                put(key, key, 300.0)
        return (time.perf_counter() - start) / len(trace) * 1e9

    def ttl_pass() -> float:
        cache: TTLCache[int, int] = TTLCache(maxsize=capacity, ttl=300)
        missing = object()
        get = cache.get
        start = time.perf_counter()
        for key in trace:
            if get(key, missing) is missing:
                cache[key] = key
        return (time.perf_counter() - start) / len(trace) * 1e9

    return round_robin({"store": store_pass, "ttl": ttl_pass}, rounds)


def run(*, rounds: int, quick: bool, progress: Callable[[str], None]) -> BenchReport:
    seeds = [0] if quick else [0, 1, 2]
    n_requests = 200_000 if quick else REQUESTS
    report = BenchReport(
        "hitratio",
        params={
            "keys": KEYS,
            "requests": n_requests,
            "seeds": seeds,
            "policy": str(TinyLfuConfig()),
            "hit_path_rounds": rounds,
        },
    )
    try:
        import theine  # noqa: F401

        with_theine = True
    except ImportError:  # pragma: no cover
        with_theine = False
    for scenario in scenarios(n_requests):
        per_seed: dict[str, list[float]] = {}
        for seed in seeds:
            progress(f"{scenario.name} seed {seed}")
            for suffix, value in hit_ratios(scenario, seed, with_theine=with_theine).items():
                per_seed.setdefault(suffix, []).append(value)
        for suffix, values in per_seed.items():
            note = "seeds: " + ", ".join(f"{v:.4f}" for v in values)
            report.add(f"hit_ratio_{scenario.name}{suffix}", round(statistics.median(values), 4), "ratio", note)
    # What the lossy read buffer costs: only reads beyond its size between two writes
    # are lost, so look where hits run longest (Zipf 1.2, 10 % cache: ~93 % hits).
    progress("read buffer")
    trace = zipf_trace(1.2, 0, n_requests=n_requests)
    capacity = 10_000
    for suffix, size in (("", 128), ("_ring8", 8), ("_exact", 1 << 20)):
        value = store_hits(trace, capacity, read_buffer=size) / len(trace)
        note = f"read buffer of {size} hits" + (" (never wraps: every hit replayed)" if size > 128 else "")
        report.add(f"hit_ratio_zipf12_10pct{suffix}", round(value, 4), "ratio", note)
    report.add("hit_ratio_zipf12_10pct_lru", round(lru_hits(trace, capacity) / len(trace), 4), "ratio")
    progress("hit path")
    ns = hit_path_ns(rounds)
    report.add("l1_get_ns", round(ns["store"].median, 1), "ns", ns["store"].spread("{:.0f}"))
    report.add("l1_get_ns_cachetools_ttl", round(ns["ttl"].median, 1), "ns", ns["ttl"].spread("{:.0f}"))
    report.add(
        "l1_get_ratio_cachetools_ttl",
        round(ratio(ns["store"].median, ns["ttl"].median), 3),
        "ratio",
        "MemoryStore.get / TTLCache[k], same rounds",
    )
    progress("cache-aside loop")
    per_request = request_ns(rounds, zipf_trace(0.99, 0, n_requests=200_000), 1_000)
    report.add(
        "l1_request_ns_zipf099_1pct",
        round(per_request["store"].median, 1),
        "ns",
        "get + set on miss, amortised, 200k requests; " + per_request["store"].spread("{:.0f}"),
    )
    report.add(
        "l1_request_ns_zipf099_1pct_cachetools_ttl",
        round(per_request["ttl"].median, 1),
        "ns",
        per_request["ttl"].spread("{:.0f}"),
    )
    return report
