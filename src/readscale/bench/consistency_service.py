"""The service the consistency harness drives: one process of a web application built
the way the README shows, reading through every read API readscale offers.

Run as ``python -m readscale.bench.consistency_service`` with its configuration (JSON) in
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
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

CONFIG_ENV = "READSCALE_CONSISTENCY_CONFIG"
SECRET_FIELD = "secret"  # noqa: S105 - the name of a configuration field


@dataclass(frozen=True)
class ServiceConfig:
    name: str
    port: int
    primary: str
    replicas: dict[str, str]
    table: str
    prefix: str
    secret: str
    redis_url: str
    bus_url: str | None  # None: no bus (sabotage), else the bus's Redis
    channel: str
    backend: str = "redis"  # redis | memcached | cluster
    memcached: str | None = None
    cluster_nodes: tuple[str, ...] = ()
    tombstone_ttl: float | None = None  # None: the library's default
    read_block_delay: float = 0.0
    load_work: float = 0.0  # a loader's own work after its read (rendering, computing), up to this
    wait_budget: float = 0.2
    sabotage: tuple[str, ...] = ()
    seed: int = 0
    #: Write-behind writes (``POST /wb``) go to this table's ``val`` through this queue
    #: (the harness runs the flusher); None: no write-behind.
    wb_table: str | None = None
    wb_queue: str = ""

    @classmethod
    def from_json(cls, text: str) -> ServiceConfig:
        data = json.loads(text)
        data["cluster_nodes"] = tuple(data.get("cluster_nodes") or ())
        data["sabotage"] = tuple(data.get("sabotage") or ())
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.__dict__ | {"cluster_nodes": list(self.cluster_nodes), "sabotage": list(self.sabotage)})


# What served the current request: nodes read by the router, whether our loader ran.
_SERVED: ContextVar[dict[str, Any] | None] = ContextVar("consistency_served", default=None)


def _note_node(name: str) -> None:
    served = _SERVED.get()
    if served is not None:
        served.setdefault("nodes", []).append(name)


def _note_loaded() -> None:
    served = _SERVED.get()
    if served is not None:
        served["loaded"] = True


# -- sabotage: one guarantee switched off, to prove the checker catches it --------------------
#
# Each is done by the application, through public APIs only, so it means the same whatever
# the library's internals become:
# - guard: reads run without the session's causal token (a fresh context per read);
# - merge: reads use the token but what they see is not merged back into the session;
# - staleness: a bounded-staleness read asks the router for no bound at all;
# - tombstone: writes delete the keys (the textbook cache-aside delete) instead of invalidating;
# - bus: no invalidation bus.


@contextlib.contextmanager
def _read_context(sabotage: tuple[str, ...]) -> Any:
    from readscale._shared.replicas.causal_context import CausalContext, causal_context, current_context

    if "guard" in sabotage:
        with causal_context():
            yield
    elif "merge" in sabotage:
        session = current_context()
        token = session.token if session is not None else None
        written = session.written_at if session is not None else None
        with causal_context(CausalContext(token, written_at=written)):
            yield
    else:
        yield


# -- building the service ------------------------------------------------------------------


def _pg_parts(dsn: str) -> dict[str, Any]:
    from psycopg.conninfo import conninfo_to_dict

    parts = conninfo_to_dict(dsn)
    return {
        "host": parts.get("host", "127.0.0.1"),
        "port": int(str(parts.get("port") or 5432)),
        "user": parts.get("user", "postgres"),
        "dbname": parts.get("dbname", "postgres"),
    }


def _configure_django(config: ServiceConfig) -> Any:
    """Django's settings, its router and middleware, and the row's model (settings are
    process-wide: this runs once, before anything imports the ORM)."""
    import django
    from django.conf import settings

    from readscale.django import replica_settings

    databases = {}
    for alias, dsn in {"default": config.primary, **config.replicas}.items():
        parts = _pg_parts(dsn)
        databases[alias] = {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": parts["dbname"],
            "USER": parts["user"],
            "HOST": parts["host"],
            "PORT": parts["port"],
        }
    settings.configure(
        DEBUG=False,
        ALLOWED_HOSTS=["*"],
        USE_TZ=True,
        INSTALLED_APPS=["readscale.bench"],
        DATABASES=databases,
        DATABASE_ROUTERS=["readscale.django.ReplicaDatabaseRouter"],
        READSCALE_REPLICA_SETTINGS=replica_settings(
            databases, replicas=list(config.replicas), wait_budget=config.wait_budget, max_pool_size=4
        ),
        READSCALE_TOKEN_SECRET=config.secret,
        READSCALE_TOKEN_SECURE=False,
        MIDDLEWARE=["readscale.django.CausalTokenMiddleware"],
        ROOT_URLCONF=__name__,
        LOGGING_CONFIG=None,
    )
    django.setup()
    from django.db import models

    class Item(models.Model):  # type: ignore[misc]
        id = models.IntegerField(primary_key=True)
        version = models.BigIntegerField()

        class Meta:
            app_label = "bench"
            db_table = config.table
            managed = False

    return Item


urlpatterns: list[Any] = []  # Django's URLconf (filled once Django is configured)


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
            on_read=_note_node,
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
            p = _pg_parts(dsn)
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
        _note_loaded()
        version = await self.version_of(key)
        if self.config.load_work:
            await asyncio.sleep(self.rng.uniform(self.config.load_work / 2, self.config.load_work))
        return version

    async def load_wb(self, key: int) -> int:
        _note_loaded()
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
        with _read_context(self.config.sabotage):
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


def _starlette_app(service: Service) -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from readscale import LATEST, BoundedStaleness
    from readscale._shared.replicas.causal_context import current_context
    from readscale.errors import ReadscaleError

    def mode_of(text: str | None) -> Any:
        if not text or text == "session":
            return None
        if text == "latest":
            return LATEST
        if text.startswith("bs:"):
            return BoundedStaleness(float(text[3:]))
        raise ValueError(f"unknown mode {text!r}")

    def position() -> int | None:
        context = current_context()
        token = context.token if context is not None else None
        return None if token is None else token.lsn

    async def guarded(work: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]) -> JSONResponse:
        served: dict[str, Any] = {}
        reset = _SERVED.set(served)
        try:
            body = await work(served)
        except ReadscaleError as exc:
            return JSONResponse({"error": f"{type(exc).__name__}: {exc}"}, status_code=503)
        finally:
            _SERVED.reset(reset)
        return JSONResponse(body | {"nodes": served.get("nodes", []), "loaded": bool(served.get("loaded")),
                                    "pos": position(), "proc": service.config.name})  # fmt: skip

    async def read(request: Request) -> JSONResponse:
        key = int(request.query_params["k"])
        api = request.query_params.get("api", "fetch")
        mode = mode_of(request.query_params.get("mode"))

        async def work(served: dict[str, Any]) -> dict[str, Any]:
            return {"v": await service.read(api, key, mode)}

        return await guarded(work)

    async def write(request: Request) -> JSONResponse:
        key = int(request.query_params["k"])
        invalidate = request.query_params.get("inv", "app") == "app"

        async def work(served: dict[str, Any]) -> dict[str, Any]:
            return await service.write(key, invalidate)

        return await guarded(work)

    async def write_behind(request: Request) -> JSONResponse:
        key = int(request.query_params["k"])

        async def work(served: dict[str, Any]) -> dict[str, Any]:
            return await service.write_behind(key)

        return await guarded(work)

    async def stats(request: Request) -> JSONResponse:
        router = service.router.stats()
        cache = service.cache.stats
        bus = service.cache.bus.stats if service.cache.bus is not None else None
        return JSONResponse(
            {
                "router": {f.name: getattr(router, f.name) for f in dataclasses.fields(router)},
                "l1_hits": cache.l1.hits,
                "l2_hits": cache.l2.hits,
                "fills_refused": cache.loader.fills_refused,
                "loader_calls": cache.loader.calls,
                "bus_disconnects": None if bus is None else bus.disconnects,
                "bus_received": None if bus is None else bus.received,
            }
        )

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True, "proc": service.config.name})

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        await service.open()
        await asyncio.to_thread(service.open_sync)
        try:
            yield
        finally:
            await service.close()

    return Starlette(
        routes=[
            Route("/r", read),
            Route("/w", write, methods=["POST"]),
            Route("/wb", write_behind, methods=["POST"]),
            Route("/stats", stats),
            Route("/health", health),
        ],
        lifespan=lifespan,
    )


def _django_views(service: Service, item: Any) -> list[Any]:
    from django.db import connections, transaction
    from django.http import HttpRequest, JsonResponse
    from django.urls import path

    from readscale._shared.replicas.causal_context import current_context
    from readscale.errors import CacheUnavailableError, ReadscaleError

    config = service.config

    def position() -> int | None:
        context = current_context()
        token = context.token if context is not None else None
        return None if token is None else token.lsn

    def orm_version(key: int) -> int:
        _note_loaded()
        version = item.objects.filter(id=key).values_list("version", flat=True).first()
        assert version is not None
        return int(version)

    def read(request: HttpRequest) -> JsonResponse:
        key = int(request.GET["k"])
        api = request.GET.get("api", "django")
        served: dict[str, Any] = {}
        reset = _SERVED.set(served)
        try:
            with _read_context(config.sabotage):
                if api == "dj_cache":
                    version = int(service.sync_cache.get_or_load(f"item:{key}", lambda: orm_version(key)))
                else:
                    version = item.objects.filter(id=key).values_list("version", flat=True).first()
        except ReadscaleError as exc:
            return JsonResponse({"error": f"{type(exc).__name__}: {exc}"}, status=503)
        finally:
            _SERVED.reset(reset)
        return JsonResponse({"v": version, "loaded": bool(served.get("loaded")), "pos": position(),
                             "proc": config.name})  # fmt: skip

    def write(request: HttpRequest) -> JsonResponse:
        key = int(request.GET["k"])
        invalidate = request.GET.get("inv", "app") == "app"
        try:
            if request.GET.get("orm") == "1":  # the ORM, in a transaction (the position is learned on commit)
                with transaction.atomic():
                    row = item.objects.select_for_update().get(id=key)
                    row.version += 1
                    row.save(update_fields=["version"])
                    version = int(row.version)
            else:  # raw SQL on the primary alias, autocommit
                with connections["default"].cursor() as cursor:
                    update = f"UPDATE {config.table} SET version = version + 1 WHERE id = %s RETURNING version"
                    cursor.execute(update, [key])
                    version = int(cursor.fetchone()[0])
        except ReadscaleError as exc:
            return JsonResponse({"error": f"{type(exc).__name__}: {exc}"}, status=503)
        out: dict[str, Any] = {"v": version, "inv": False, "pos": position(), "proc": config.name}
        if invalidate:
            keys = (f"item:{key}", f"pitem:{key}", f"citem:{key}")
            try:
                if "tombstone" in config.sabotage:  # the textbook delete: no lease, no tombstone
                    service.sync_cache.delete_many(keys)
                else:
                    service.sync_cache.invalidate(*keys, lsn=position())
                service.sync_cache.invalidate_tags(f"t:{key}")
                out["inv"] = True
            except CacheUnavailableError as exc:
                out["error"] = str(exc)
        return JsonResponse(out)

    from django.views.decorators.csrf import csrf_exempt

    return [path("dj/r", read), path("dj/w", csrf_exempt(write))]


def build(config: ServiceConfig) -> Any:
    """The process's ASGI application: Django under ``/dj/``, the Starlette app elsewhere."""
    unknown = set(config.sabotage) - {"guard", "merge", "staleness", "tombstone", "bus"}
    if unknown:
        raise SystemExit(f"unknown sabotage {sorted(unknown)}")
    item = _configure_django(config)
    service = Service(config)
    if "bus" in config.sabotage:
        service.config = config = ServiceConfig(**(config.__dict__ | {"bus_url": None}))
    urlpatterns.extend(_django_views(service, item))
    from django.core.asgi import get_asgi_application

    from readscale._core.replicas.causal import TokenSigner
    from readscale.starlette import CausalTokenMiddleware

    django_app = get_asgi_application()
    starlette_app = CausalTokenMiddleware(_starlette_app(service), signer=TokenSigner(config.secret), secure=False)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/dj/"):
            await django_app(scope, receive, send)
        else:
            await starlette_app(scope, receive, send)

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
