"""The service the consistency harness drives: one process of a web application built
the way the README shows, reading through every read API readscale offers.

Run as ``python -m readscale.bench.consistency.service`` with its configuration (JSON) in
``READSCALE_CONSISTENCY_CONFIG``; the harness starts two or more of them and sends each
session's requests to any of them (a session's causal token travels in its cookie, as a
browser's would). One process hosts two applications sharing one domain and one token
secret:

- a Starlette app behind :class:`readscale.starlette.CausalTokenMiddleware`:
  ``POST /w`` writes a row (``router.write()``) and invalidates every cached copy of it
  (``cache.invalidate`` with the commit's LSN, ``invalidate_tags``, the ``@cached``
  function's ``invalidate``), or leaves that to the CDC worker; ``GET /r`` reads the row's
  version through the API named by ``api``: the router's ``fetch``, ``fetch_one`` and
  ``read()``, the SQLAlchemy routing session, or the cache's ``get_or_load`` by key, by
  tag, through ``@cached`` and under the ``PROFILE`` preset (read-your-writes entries);
- a Django app behind Django's ``CausalTokenMiddleware`` and ``ReplicaDatabaseRouter``:
  ``POST /dj/w`` writes with the ORM's connection and invalidates through the sync cache;
  ``GET /dj/r`` reads with the ORM, or (``api=dj_cache``) through the sync cache;
- with ``wb_table``, write-behind: ``POST /wb`` stores the key's next value with
  ``write_behind`` (the harness's flusher writes it to ``wb_table`` later) and ``GET /r``
  with ``api=cache_wb`` reads it back through ``get_or_load``, whose loader reads the
  table through the router.

Every response says what served it (the node, whether this request's loader ran, the
session's position), so a violation in the history can be explained. ``sabotage`` turns
one guarantee off on purpose, to prove the harness notices.

Here, the process's objects (:class:`Service`) and its entry point; its parts: the
configuration (``config``), what served a request and the sabotages (``served``), the two
applications (``starlette_app``, ``django_app``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time
from typing import Any

from readscale.bench.consistency.config import CONFIG_ENV, ServiceConfig, pg_parts
from readscale.bench.consistency.django_app import configure_django, django_views, urlpatterns
from readscale.bench.consistency.served import note_loaded, note_node, read_context
from readscale.bench.consistency.starlette_app import starlette_app

__all__ = ["Service", "build", "main"]


class Service:
    """The objects one process of the application holds: the router, the caches, the
    SQLAlchemy session factory, the ``@cached`` function."""

    def __init__(self, config: ServiceConfig) -> None:
        self.config = config
        self.sql = f"SELECT version FROM {config.table} WHERE id = %s"
        self.rng = random.Random(config.seed)

    # -- async side ------------------------------------------------------------------------

    def _backend(self, sync: bool) -> Any:
        from readscale import RedisSettings, backends

        config = self.config
        if config.backend == "memcached":
            assert config.memcached is not None
            cls = backends.MemcachedBackend if sync else backends.AsyncMemcachedBackend
            return cls(config.memcached)
        if config.backend == "cluster":
            cls_c = backends.RedisClusterBackend if sync else backends.AsyncRedisClusterBackend
            return cls_c(RedisSettings(url=f"redis://{config.cluster_nodes[0]}/0"))
        cls_r = backends.RedisBackend if sync else backends.AsyncRedisBackend
        return cls_r(RedisSettings(url=config.redis_url))

    def _cache_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"prefix": self.config.prefix}
        if self.config.tombstone_ttl is not None:
            kwargs["tombstone_ttl"] = self.config.tombstone_ttl
        return kwargs

    async def open(self) -> None:
        from sqlalchemy import BigInteger, Column, Integer, MetaData, Table
        from sqlalchemy.engine import URL
        from sqlalchemy.ext.asyncio import create_async_engine

        from readscale import (
            CATALOG,
            AsyncCache,
            AsyncInvalidationBus,
            AsyncReplicaRouter,
            MemoryStore,
            RedisSettings,
            ReplicaSettings,
        )
        from readscale.sqlalchemy import async_routing_sessionmaker

        config = self.config
        self.router = AsyncReplicaRouter(
            ReplicaSettings(
                primary=config.primary,
                replicas=config.replicas,
                wait_budget=config.wait_budget,
                max_pool_size=8,
                seed=config.seed,
            ),
            on_read=note_node,
        )
        await self.router.open()
        bus = None
        if config.bus_url is not None:
            bus = AsyncInvalidationBus(RedisSettings(url=config.bus_url), channel=config.channel)
        self.cache = AsyncCache(
            self._backend(sync=False), l1=MemoryStore(10_000), bus=bus, policy=CATALOG, **self._cache_kwargs()
        )

        @self.cache.cached("citem:{key}")
        async def load_item(key: int) -> int:
            return await self.load(key)

        self.load_item = load_item
        self.wb: Any = None
        if config.wb_table is not None:
            from readscale.writebehind import AsyncWriteBehind, WriteBehindSettings

            # The harness's Redis has no persistence: the mode that promises nothing.
            self.wb = AsyncWriteBehind(self.cache, WriteBehindSettings(queue=config.wb_queue, mode="volatile"))
            self.wb_locks: dict[int, asyncio.Lock] = {}
        table = Table(config.table, MetaData(), Column("id", Integer, primary_key=True), Column("version", BigInteger))
        self.table = table

        def engine(dsn: str) -> Any:
            p = pg_parts(dsn)
            url = URL.create("postgresql+psycopg", username=p["user"], host=p["host"], port=p["port"],
                             database=p["dbname"])  # fmt: skip
            return create_async_engine(url, pool_size=2, max_overflow=4)

        self.engines = {"primary": engine(config.primary), **{n: engine(d) for n, d in config.replicas.items()}}
        self.sessions = async_routing_sessionmaker(
            self.router,
            primary=self.engines["primary"],
            replicas={n: e for n, e in self.engines.items() if n != "primary"},
        )

    async def close(self) -> None:
        await self.cache.aclose()
        for engine in self.engines.values():
            await engine.dispose()
        await self.router.close()

    async def version_of(self, key: int) -> int:
        row = await self.router.fetch_one(self.sql, (key,))
        assert row is not None
        return int(row[0])

    async def load(self, key: int) -> int:
        note_loaded()
        version = await self.version_of(key)
        if self.config.load_work:
            await asyncio.sleep(self.rng.uniform(self.config.load_work / 2, self.config.load_work))
        return version

    async def load_wb(self, key: int) -> int:
        note_loaded()
        row = await self.router.fetch_one(f"SELECT val FROM {self.config.wb_table} WHERE id = %s", (key,))
        assert row is not None
        if self.config.load_work:
            await asyncio.sleep(self.rng.uniform(self.config.load_work / 2, self.config.load_work))
        return int(row[0])

    async def write_behind(self, key: int) -> dict[str, Any]:
        """The key's next value, through write-behind. The harness sends every write of a
        key to one process, and the lock orders them there: values grow in write order."""
        lock = self.wb_locks.setdefault(key, asyncio.Lock())
        async with lock:
            client: Any = self.cache.backend.client  # type: ignore[union-attr]  # write-behind needs Redis
            version = int(await client.incr(f"{self.config.prefix}wbseq:{key}"))
            await self.wb.write_behind(f"wbitem:{key}", version)
        return {"v": version, "inv": True}

    async def read(self, api: str, key: int, mode: Any) -> int:
        from readscale import BoundedStaleness

        if "staleness" in self.config.sabotage and isinstance(mode, BoundedStaleness):
            mode = BoundedStaleness(10**9)
        with read_context(self.config.sabotage):
            return await self._read(api, key, mode)

    async def _read(self, api: str, key: int, mode: Any) -> int:
        from sqlalchemy import select

        from readscale import PROFILE
        from readscale.replicas import use_mode

        if api == "fetch":
            rows = await self.router.fetch(self.sql, (key,), mode=mode)
            return int(rows[0][0])
        if api == "fetch_one":
            row = await self.router.fetch_one(self.sql, (key,), mode=mode)
            assert row is not None
            return int(row[0])
        if api == "read":
            async with self.router.read(mode) as conn:
                if self.config.read_block_delay:  # the application's own work inside the block
                    await asyncio.sleep(self.rng.uniform(0, self.config.read_block_delay))
                cur = await conn.execute(self.sql, (key,))
                got = await cur.fetchone()
            assert got is not None
            return int(got[0])
        if api == "sqlalchemy":
            with use_mode(mode) if mode is not None else contextlib.nullcontext():
                async with self.sessions() as session:
                    result = await session.execute(select(self.table.c.version).where(self.table.c.id == key))
                    return int(result.scalar_one())
        if api == "cache_key":
            return int(await self.cache.get_or_load(f"item:{key}", lambda: self.load(key)))
        if api == "cache_tag":
            return int(await self.cache.get_or_load(f"titem:{key}", lambda: self.load(key), tags=[f"t:{key}"]))
        if api == "cached":
            return int(await self.load_item(key))
        if api == "cache_profile":
            return int(await self.cache.get_or_load(f"pitem:{key}", lambda: self.load(key), policy=PROFILE))
        if api == "cache_wb":
            return int(await self.cache.get_or_load(f"wbitem:{key}", lambda: self.load_wb(key)))
        raise ValueError(f"unknown read api {api!r}")

    async def write(self, key: int, invalidate: bool) -> dict[str, Any]:
        from readscale._shared.replicas.causal_context import current_context
        from readscale.errors import CacheUnavailableError

        async with self.router.write() as conn:
            cur = await conn.execute(
                f"UPDATE {self.config.table} SET version = version + 1 WHERE id = %s RETURNING version", (key,)
            )
            got = await cur.fetchone()
        assert got is not None
        version = int(got[0])
        context = current_context()
        token = context.token if context is not None else None
        lsn = None if token is None else token.lsn
        out: dict[str, Any] = {"v": version, "inv": False, "lsn": lsn}
        if invalidate:
            try:
                if "tombstone" in self.config.sabotage:  # the textbook delete: no lease, no tombstone
                    await self.cache.delete_many([f"item:{key}", f"pitem:{key}", f"citem:{key}"])
                else:
                    await self.cache.invalidate(f"item:{key}", f"pitem:{key}", lsn=lsn)
                    await self.load_item.invalidate(key)
                await self.cache.invalidate_tags(f"t:{key}")
                out["inv"] = True
            except CacheUnavailableError as exc:
                out["error"] = str(exc)
        return out

    # -- sync side (Django) ------------------------------------------------------------------

    def open_sync(self) -> None:
        from readscale import CATALOG, Cache, InvalidationBus, MemoryStore, RedisSettings

        config = self.config
        bus = None
        if config.bus_url is not None:
            bus = InvalidationBus(RedisSettings(url=config.bus_url), channel=config.channel)
        self.sync_cache = Cache(
            self._backend(sync=True), l1=MemoryStore(10_000), bus=bus, policy=CATALOG, **self._cache_kwargs()
        )


def build(config: ServiceConfig) -> Any:
    """The process's ASGI application: Django under ``/dj/``, the Starlette app elsewhere."""
    unknown = set(config.sabotage) - {"guard", "merge", "staleness", "tombstone", "bus"}
    if unknown:
        raise SystemExit(f"unknown sabotage {sorted(unknown)}")
    item = configure_django(config)
    service = Service(config)
    if "bus" in config.sabotage:
        service.config = config = ServiceConfig(**(config.__dict__ | {"bus_url": None}))
    urlpatterns.extend(django_views(service, item))
    from django.core.asgi import get_asgi_application

    from readscale._core.replicas.causal import TokenSigner
    from readscale.starlette import CausalTokenMiddleware

    django = get_asgi_application()
    starlette = CausalTokenMiddleware(starlette_app(service), signer=TokenSigner(config.secret), secure=False)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/dj/"):
            await django(scope, receive, send)
        else:
            await starlette(scope, receive, send)

    return app


def main() -> None:
    import logging

    import uvicorn

    config = ServiceConfig.from_json(os.environ[CONFIG_ENV])
    logging.basicConfig(level=logging.WARNING, format=f"{config.name} %(asctime)s %(name)s %(levelname)s %(message)s")
    app = build(config)
    started = time.monotonic()
    uvicorn.run(app, host="127.0.0.1", port=config.port, log_level="warning", lifespan="on", access_log=False)
    logging.getLogger("readscale").info("served for %.1f s", time.monotonic() - started)


if __name__ == "__main__":
    main()
