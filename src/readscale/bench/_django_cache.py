"""``readscale bench cache``'s Django part: readscale's Django cache backend
(``readscale.django.cache.RedisCache``) against django-redis on one Redis, side by side
in interleaved rounds: a get that hits, a set, a ``get_many`` of 100 keys.

Both store the same 500-byte document with pickle (django-redis's default; readscale's
signed pickle, the serializer a Django site names), over one connection pool each, with
no in-process tier (readscale's L1 is off, so both pay the network on every call); a
last contender is readscale's backend with its L1 on (``L1_MAX_ENTRIES``), for the get.
Rounds are short (a few hundred calls) and many, so a noisy machine moves both sides
alike; each round also reports its CPU time per call (``time.process_time``: this
process's user and system time, what the backend itself costs, free of the scheduler's
noise on a loaded machine).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from readscale.bench.harness import Rounds, round_robin

KEYS = 1000
BATCH = 100


def _configure() -> None:
    from django.conf import settings

    if not settings.configured:
        settings.configure(SECRET_KEY="readscale-bench-django-cache-" + "x" * 20, CACHES={}, USE_TZ=True)


def contenders(url: str, doc: Any, calls: int) -> dict[str, dict[str, tuple[Callable[[], object], int]]]:
    """``{operation: {contender: (one round's loop, calls in it)}}``."""
    _configure()
    from django_redis.cache import RedisCache as DjangoRedisCache

    from readscale.django.cache import RedisCache

    def ours(prefix: str, **options: Any) -> Any:
        params = {"KEY_PREFIX": prefix, "OPTIONS": {"SERIALIZER": "pickle", **options}, "TIMEOUT": 3600}
        return RedisCache(url, params)

    backends: dict[str, Any] = {
        "readscale": ours("bench-rs"),
        "django_redis": DjangoRedisCache(url, {"KEY_PREFIX": "bench-dr", "TIMEOUT": 3600}),
    }
    with_l1 = ours("bench-l1", L1_MAX_ENTRIES=2 * KEYS)
    keys = [f"doc:{i}" for i in range(KEYS)]
    batches = [keys[i : i + BATCH] for i in range(0, KEYS, BATCH)]
    for backend in (*backends.values(), with_l1):
        backend.set_many(dict.fromkeys(keys, doc))
    many = max(calls // 20, 10)

    def get(backend: Any) -> tuple[Callable[[], object], int]:
        return (lambda: [backend.get(keys[i % KEYS]) for i in range(calls)]), calls

    def set_(backend: Any) -> tuple[Callable[[], object], int]:
        return (lambda: [backend.set(keys[i % KEYS], doc) for i in range(calls)]), calls

    def get_many(backend: Any) -> tuple[Callable[[], object], int]:
        return (lambda: [backend.get_many(batches[i % len(batches)]) for i in range(many)]), many

    out = {
        op: {name: make(backend) for name, backend in backends.items()}
        for op, make in (("get", get), ("set", set_), ("get_many_100", get_many))
    }
    out["get"]["readscale_l1"] = get(with_l1)
    return out


def _timed(loop: Callable[[], object], calls: int, cpu: list[float]) -> Callable[[], float]:
    """One round of ``loop``: wall seconds per call, and its CPU seconds per call into ``cpu``."""

    def run() -> float:
        wall, processor = time.perf_counter(), time.process_time()
        loop()
        cpu.append((time.process_time() - processor) / calls)
        return (time.perf_counter() - wall) / calls

    return run


def measure(url: str, doc: Any, calls: int, rounds: int) -> dict[str, dict[str, tuple[Rounds, Rounds]]]:
    """Per operation and contender: (wall seconds per call, CPU seconds per call), over
    interleaved rounds (the warm-up round's CPU time is dropped)."""
    out: dict[str, dict[str, tuple[Rounds, Rounds]]] = {}
    for op, fns in contenders(url, doc, calls).items():
        cpu: dict[str, list[float]] = {name: [] for name in fns}
        wall = round_robin({name: _timed(loop, n, cpu[name]) for name, (loop, n) in fns.items()}, rounds)
        out[op] = {name: (wall[name], Rounds(tuple(cpu[name][-rounds:]))) for name in fns}
    return out


__all__ = ["measure"]
