"""The hit count of each cache policy on a trace, all with demand fill (a miss stores
the key) and counting the cold start: LRU, Belady's MIN with bypass (the offline
optimum), a perfect LFU, the static top-C oracle, readscale's :class:`MemoryStore`, and
theine when it is installed (the reference policies are described in the package
docstring).
"""

from __future__ import annotations

import heapq
from collections import Counter, OrderedDict
from collections.abc import Sequence
from typing import Any

from readscale import NO_VALUE, MemoryStore
from readscale.l1 import TinyLfuConfig

__all__ = ["lfu_hits", "lru_hits", "next_uses", "opt_hits", "static_hits", "store_hits", "theine_hits"]


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
    read_buffer: int | None = None,
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
