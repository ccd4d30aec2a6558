"""``readscale bench memcached``: readscale's Memcached client against the peers, in one run.

The client is readscale's own (the meta protocol with leases; see
``readscale._async.backends.memcached``), so the yardstick is what a user would otherwise
pick: meta-memcache and pymemcache (sync), emcache and aiomcache (asyncio). Each does a
``get`` hit of a 500-byte value and a ``get_many`` of 100 hits against one local
memcached, one connection, sequential calls; the contenders run in interleaved rounds
(see the harness) and the medians are reported, with each ratio to the fastest peer
(``<= 1``: readscale is at or ahead of it). A peer that is not installed (the ``bench``
extra) is skipped and the ratio is to the fastest one present.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from readscale.bench.harness import BenchReport, Rounds, ratio, round_robin
from readscale.stack import Stack

VALUE = b"x" * 500
KEYS = 1000
BATCH = 100

SyncRound = Callable[[], float]
AsyncRound = Callable[[], Awaitable[float]]

#: Other builds of readscale's client to time beside this one (label: module path of a
#: package laid out as ``readscale``, for example an older checkout renamed): how a
#: change is measured against what it replaces in the same run.
BASELINES: dict[str, str] = {}


def _backend_class(package: str, sync: bool) -> Any:
    import importlib

    if sync:
        return importlib.import_module(f"{package}._sync.backends.memcached").MemcachedBackend
    return importlib.import_module(f"{package}._async.backends.memcached").AsyncMemcachedBackend


def _keys(prefix: str = "mc") -> list[str]:
    """Each client reads values it wrote itself (client flags mean its own encoding)."""
    return [f"{prefix}:{i}" for i in range(KEYS)]


def _batches(keys: list[str]) -> list[list[str]]:
    return [keys[i : i + BATCH] for i in range(0, KEYS, BATCH)]


# -- sync -------------------------------------------------------------------------------------


def _sync_get(get: Callable[[Any], object], keys: list[Any], calls: int) -> SyncRound:
    def run() -> float:
        started = time.perf_counter()
        for i in range(calls):
            if get(keys[i % KEYS]) is None:
                raise AssertionError("a miss in a hit bench")
        return (time.perf_counter() - started) / calls

    return run


def _sync_many(get_many: Callable[[Any], object], batches: list[Any], calls: int) -> SyncRound:
    def run() -> float:
        started = time.perf_counter()
        for i in range(calls):
            get_many(batches[i % len(batches)])
        return (time.perf_counter() - started) / calls

    return run


def _sync_contenders(address: str, calls: int) -> tuple[dict[str, SyncRound], dict[str, SyncRound], list[Any]]:
    from readscale._sync.backends.memcached import MemcachedBackend

    host, port = address.rsplit(":", 1)
    keys = _keys()
    bkeys = [k.encode() for k in keys]
    backend = MemcachedBackend(address)
    for key in keys:
        backend.set(key, VALUE, 3600)
    gets: dict[str, SyncRound] = {"readscale": _sync_get(backend.get, keys, calls)}
    manys: dict[str, SyncRound] = {"readscale": _sync_many(backend.get_many, _batches(keys), calls // 20)}
    closers: list[Any] = [backend.close]
    for label, package in BASELINES.items():
        other = _backend_class(package, sync=True)(address)
        gets[label] = _sync_get(other.get, keys, calls)
        manys[label] = _sync_many(other.get_many, _batches(keys), calls // 20)
        closers.append(other.close)
    try:
        import importlib

        mm: Any = importlib.import_module("meta_memcache")
        meta = mm.CacheClient.cache_client_from_servers(
            servers=[mm.ServerAddress(host=host, port=int(port))],
            connection_pool_factory_fn=mm.connection_pool_factory_builder(),
        )
        mkeys = _keys("meta")
        for key in mkeys:
            meta.set(key, VALUE, 3600)
        gets["meta-memcache"] = _sync_get(meta.get, mkeys, calls)
        manys["meta-memcache"] = _sync_many(meta.multi_get, _batches(mkeys), calls // 20)
    except ImportError:
        pass
    try:
        from pymemcache.client.base import Client

        pym = Client((host, int(port)), no_delay=True)
        for bkey in bkeys:
            pym.set(bkey, VALUE, 3600)
        gets["pymemcache"] = _sync_get(pym.get, bkeys, calls)
        manys["pymemcache"] = _sync_many(pym.get_many, _batches(bkeys), calls // 20)  # type: ignore[arg-type]
        closers.append(pym.close)
    except ImportError:
        pass
    return gets, manys, closers


# -- async ------------------------------------------------------------------------------------


def _async_get(get: Callable[[Any], Awaitable[object]], keys: list[Any], calls: int) -> AsyncRound:
    async def run() -> float:
        started = time.perf_counter()
        for i in range(calls):
            if await get(keys[i % KEYS]) is None:
                raise AssertionError("a miss in a hit bench")
        return (time.perf_counter() - started) / calls

    return run


def _async_many(get_many: Callable[[Any], Awaitable[object]], batches: list[Any], calls: int) -> AsyncRound:
    async def run() -> float:
        started = time.perf_counter()
        for i in range(calls):
            await get_many(batches[i % len(batches)])
        return (time.perf_counter() - started) / calls

    return run


async def _async_rounds(address: str, calls: int, rounds: int) -> tuple[dict[str, Rounds], dict[str, Rounds]]:
    from readscale._async.backends.memcached import AsyncMemcachedBackend

    host, port = address.rsplit(":", 1)
    keys = _keys()
    backend = AsyncMemcachedBackend(address)
    for key in keys:
        await backend.set(key, VALUE, 3600)
    gets: dict[str, AsyncRound] = {"readscale": _async_get(backend.get, keys, calls)}
    manys: dict[str, AsyncRound] = {"readscale": _async_many(backend.get_many, _batches(keys), calls // 20)}
    closers: list[Callable[[], Awaitable[object]]] = [backend.close]
    for label, package in BASELINES.items():
        other = _backend_class(package, sync=False)(address)
        gets[label] = _async_get(other.get, keys, calls)
        manys[label] = _async_many(other.get_many, _batches(keys), calls // 20)
        closers.append(other.close)
    try:
        import emcache

        em = await emcache.create_client([emcache.MemcachedHostAddress(host, int(port))], max_connections=1)

        async def em_many(batch: list[bytes]) -> object:
            return await em.get_many(batch)

        ekeys = [k.encode() for k in _keys("em")]
        for ekey in ekeys:
            await em.set(ekey, VALUE)
        gets["emcache"] = _async_get(em.get, ekeys, calls)
        manys["emcache"] = _async_many(em_many, _batches(ekeys), calls // 20)  # type: ignore[arg-type]
        closers.append(em.close)
    except ImportError:
        pass
    try:
        import aiomcache

        aio = aiomcache.Client(host, int(port), pool_size=1)

        async def aio_many(batch: list[bytes]) -> object:
            return await aio.multi_get(*batch)

        akeys = [k.encode() for k in _keys("aio")]
        for akey in akeys:
            await aio.set(akey, VALUE)
        gets["aiomcache"] = _async_get(aio.get, akeys, calls)
        manys["aiomcache"] = _async_many(aio_many, _batches(akeys), calls // 20)  # type: ignore[arg-type]
        closers.append(aio.close)
    except ImportError:
        pass
    out: list[dict[str, Rounds]] = []
    try:
        for contenders in (gets, manys):
            for fn in contenders.values():  # warm-up
                await fn()
            per: dict[str, list[float]] = {name: [] for name in contenders}
            for _ in range(rounds):
                for name, fn in contenders.items():
                    per[name].append(await fn())
            out.append({name: Rounds(tuple(values)) for name, values in per.items()})
    finally:
        for close in closers:
            await close()
    return out[0], out[1]


# -- the report -------------------------------------------------------------------------------


def _add(report: BenchReport, prefix: str, measured: dict[str, Rounds]) -> None:
    us = 1e6
    mine = measured["readscale"].median
    report.add(f"{prefix}_us", round(mine * us, 2), "us", measured["readscale"].spread("{:.2e}"))
    for label in BASELINES:
        report.add(f"{prefix}_{label}_us", round(measured[label].median * us, 2), "us", "baseline build")
    peers = {name: r.median for name, r in measured.items() if name != "readscale" and name not in BASELINES}
    for name, value in peers.items():
        report.add(f"{prefix}_{name.replace('-', '_')}_us", round(value * us, 2), "us")
    if peers:
        best = min(peers, key=lambda name: peers[name])
        note = f"readscale / fastest peer ({best})"
        report.add(f"{prefix}_ratio_best_peer", round(ratio(mine, peers[best]), 3), "ratio", note)


def run(*, rounds: int, quick: bool, progress: Callable[[str], None]) -> BenchReport:
    calls = 500 if quick else 4000
    rounds = 2 if quick else rounds
    params = {"rounds": rounds, "calls_per_round": calls, "value_bytes": len(VALUE), "batch": BATCH}
    report = BenchReport("memcached", params=params)
    base = Path(tempfile.mkdtemp(prefix="readscale-bench-memcached-"))
    base.chmod(0o755)
    stack = Stack(base / "stack")
    try:
        stack.prepare()
        address = stack.start_memcached().address
        progress("sync get and get_many")
        gets, manys, closers = _sync_contenders(address, calls)
        try:
            sync_get = round_robin(gets, rounds)
            sync_many = round_robin(manys, rounds)
        finally:
            for close in closers:
                close()
        progress("async get and get_many")
        async_get, async_many = asyncio.run(_async_rounds(address, calls, rounds))
        _add(report, "memcached_get_sync", sync_get)
        _add(report, "memcached_get_many_100_sync", sync_many)
        _add(report, "memcached_get_async", async_get)
        _add(report, "memcached_get_many_100_async", async_many)
    finally:
        stack.down()
        base.rmdir()
    return report
