"""The reference read-heavy service: a shop on Starlette, using every layer of readscale.

- HTTP: per-route policies (public catalog pages for browsers and the edge, tagged by
  product and category; private profiles; never-cached balances), strong ETags and 304s,
  hashed static assets served ``immutable``.
- Application cache: an in-process L1 over Redis, read-through with stampede protection,
  presets per data type (catalog 1 h, profile 5 min written through, trending 30 s with
  early refresh, balances never), invalidation over the bus.
- Database: the replica router (read-your-writes by WAL position through a signed token
  cookie); catalog changes made straight in SQL reach the cache and the edge through the
  CDC worker, which invalidates keys and purges tags.

Each response says which layer served it (``X-Readscale-Served``: ``app_cache:l1`` or
``app_cache:l2`` for a read the cache answered from memory or Redis, ``app_cache`` for a
view absorbed by Redis or a static asset, ``replica:<name>`` or ``primary``), and each
process publishes its counters to Redis so the demo can add up what every layer
absorbed. Configuration comes from the environment (``READSCALE_DEMO_*``), because
uvicorn starts one app per worker process.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from redis.exceptions import RedisError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route

from readscale import (
    BALANCE,
    CATALOG,
    NO_VALUE,
    PROFILE,
    TRENDING,
    AsyncCache,
    AsyncInvalidationBus,
    AsyncReplicaRouter,
    CachePolicy,
    MemoryStore,
    RedisSettings,
    ReplicaSettings,
    Tier,
    TokenSigner,
)
from readscale.backends import AsyncRedisBackend
from readscale.demo import schema
from readscale.errors import CacheUnavailableError, PrimaryUnavailableError
from readscale.http import AssetManifest, HttpPolicy, HttpSettings
from readscale.starlette import CausalTokenMiddleware, HttpCacheMiddleware, StaticAssets, add_tags, http_policy
from readscale.writebehind import AsyncWriteBehind, WriteBehindSettings

#: Which node served the database read of the current request (None: no read).
_SERVED_BY: ContextVar[list[str] | None] = ContextVar("readscale_demo_served", default=None)
#: Set when the process's in-process tier (L1) answered a cache read of the current request.
_L1_ANSWERED: ContextVar[bool] = ContextVar("readscale_demo_l1_answered", default=False)

CATALOG_HTTP = HttpPolicy.public(60, edge_max_age=3600, stale_while_revalidate=60, stale_if_error=600)
TRENDING_HTTP = HttpPolicy.public(10, edge_max_age=30, stale_while_revalidate=30, stale_if_error=300)
PROFILE_HTTP = HttpPolicy(visibility="private", max_age=30)
NO_STORE = HttpPolicy(visibility="no-store")

#: View counters: kept in the cache for a day, their database rows written behind.
VIEWS = CachePolicy(name="views", ttl=86_400.0, tiers=frozenset({Tier.L2}))

log = logging.getLogger("readscale.demo")

STATIC_CSS = "body { font-family: system-ui; } .price { font-weight: bold; }\n"


@dataclass
class DemoSettings:
    primary: str
    replicas: list[str]
    redis_url: str
    secret: str
    stats_key: str = "demo:stats"
    static_dir: str = ""
    l1_entries: int = 5_000

    @classmethod
    def from_env(cls) -> DemoSettings:
        env = os.environ
        return cls(
            primary=env["READSCALE_DEMO_PRIMARY"],
            replicas=[r for r in env.get("READSCALE_DEMO_REPLICAS", "").split(",") if r],
            redis_url=env["READSCALE_DEMO_REDIS"],
            secret=env["READSCALE_DEMO_SECRET"],
            stats_key=env.get("READSCALE_DEMO_STATS_KEY", "demo:stats"),
            static_dir=env.get("READSCALE_DEMO_STATIC", ""),
            l1_entries=int(env.get("READSCALE_DEMO_L1_ENTRIES", "5000")),
        )


class _TellingL1(MemoryStore[str, Any]):
    """The L1, noting in the request's context when it answers: a read the cache answered
    without it came from Redis (``X-Readscale-Served: app_cache:l2``), one with it from
    the process's memory (``app_cache:l1``)."""

    def get(self, key: str) -> Any:
        found = super().get(key)
        if found is not NO_VALUE:
            _L1_ANSWERED.set(True)
        return found


@dataclass
class Counters:
    """What this process did, published to Redis for the demo's funnel."""

    requests: int = 0
    app_cache: int = 0
    loads: dict[str, int] = field(default_factory=dict)  # node -> request-driven reads
    refresh_loads: dict[str, int] = field(default_factory=dict)  # node -> background reads
    writes: int = 0
    not_modified: int = 0
    errors: int = 0
    static: int = 0  # assets served from memory
    absorbed_writes: int = 0  # view counts acknowledged by Redis, written to the database behind
    background_requests: int = 0  # the edge's background refreshes (grace), not clients'
    background_app_cache: int = 0  # of which answered by the cache


class Shop:
    """The service's data access: every read is cached or routed, every write invalidates."""

    def __init__(self, settings: DemoSettings) -> None:
        self.settings = settings
        redis = RedisSettings(url=settings.redis_url, max_connections=64)
        self.router = AsyncReplicaRouter(
            ReplicaSettings(primary=settings.primary, replicas=settings.replicas), on_read=self._served
        )
        self.bus = AsyncInvalidationBus(redis)
        self.cache = AsyncCache(
            AsyncRedisBackend(redis),
            l1=_TellingL1(settings.l1_entries),
            bus=self.bus,
            policy=CATALOG,
            name="demo",
        )
        #: View counts: in Redis at once, queued for the database (a flusher writes them).
        self.views = AsyncWriteBehind(self.cache, WriteBehindSettings(queue="views"))
        self.counters = Counters()

    async def open(self) -> None:
        await self.router.open()

    async def close(self) -> None:
        await self.router.close()
        await self.cache.aclose()

    # -- reads ------------------------------------------------------------------------------

    def _served(self, node: str) -> None:
        """The router's per-read hook: count the read against the request, or as background
        work (a refresh) when no request is being served in this task."""
        served = _SERVED_BY.get()
        counts = self.counters.loads if served is not None else self.counters.refresh_loads
        counts[node] = counts.get(node, 0) + 1
        if served is not None:
            served.append(node)

    async def _read(self, query: str, params: tuple[Any, ...], *, many: bool = False) -> Any:
        """One routed database read (counted by the router's hook)."""
        rows = await self.router.fetch(query, params)
        return rows if many else (rows[0] if rows else None)

    async def product(self, product_id: int) -> dict[str, Any] | None:
        async def load() -> dict[str, Any] | None:
            row = await self._read(schema.PRODUCT_PAGE, (product_id,))
            if row is None:
                return None
            keys = ("id", "name", "description", "price_cents", "category_id", "category", "rating", "reviews", "sold")
            return dict(zip(keys, row, strict=True))

        result: dict[str, Any] | None = await self.cache.get_or_load(
            f"product:{product_id}", load, policy=CATALOG, tags=[f"product:{product_id}"]
        )
        return result

    async def category(self, category_id: int) -> list[dict[str, Any]]:
        async def load() -> list[dict[str, Any]]:
            rows = await self._read(schema.CATEGORY_PAGE, (category_id,), many=True)
            return [{"id": r[0], "name": r[1], "price_cents": r[2], "rating": r[3]} for r in rows]

        result: list[dict[str, Any]] = await self.cache.get_or_load(
            f"category:{category_id}", load, policy=CATALOG, tags=[f"category:{category_id}"]
        )
        return result

    async def trending(self) -> list[dict[str, Any]]:
        async def load() -> list[dict[str, Any]]:
            rows = await self._read(schema.TRENDING, (), many=True)
            return [{"id": r[0], "name": r[1], "sold": r[2]} for r in rows]

        result: list[dict[str, Any]] = await self.cache.get_or_load("trending", load, policy=TRENDING)
        return result

    async def profile(self, user_id: int) -> dict[str, Any] | None:
        async def load() -> dict[str, Any] | None:
            row = await self._read(schema.PROFILE, (user_id,))
            return None if row is None else _profile(row)

        result: dict[str, Any] | None = await self.cache.get_or_load(f"user:{user_id}:profile", load, policy=PROFILE)
        return result

    async def balance(self, user_id: int) -> int | None:
        # Never cached (BALANCE), always read-your-writes through the session's token.
        async def load() -> int | None:
            row = await self._read(schema.BALANCE, (user_id,))
            return None if row is None else int(row[0])

        result: int | None = await self.cache.get_or_load(f"user:{user_id}:balance", load, policy=BALANCE)
        return result

    # -- writes -----------------------------------------------------------------------------

    async def update_profile(self, user_id: int, bio: str) -> dict[str, Any] | None:
        async def write() -> dict[str, Any] | None:
            async with self.router.write() as conn:
                await conn.execute(schema.UPDATE_PROFILE, (bio, user_id))
                row = await (await conn.execute(schema.PROFILE_IN_WRITE, (user_id,))).fetchone()
            return None if row is None else _profile(row)

        self.counters.writes += 1
        result: dict[str, Any] | None = await self.cache.write_through(f"user:{user_id}:profile", write, policy=PROFILE)
        return result

    async def deposit(self, user_id: int, amount_cents: int) -> int | None:
        self.counters.writes += 1
        async with self.router.write() as conn:
            row = await (await conn.execute(schema.DEPOSIT, (amount_cents, user_id))).fetchone()
        return None if row is None else int(row[0])

    async def change_price(self, product_id: int, price_cents: int) -> None:
        # No invalidation here on purpose: the CDC worker sees the change in the WAL and
        # invalidates product:<id> and category:<cid>, in the cache and at the edge.
        self.counters.writes += 1
        async with self.router.write() as conn:
            await conn.execute(schema.UPDATE_PRICE, (price_cents, product_id))

    async def count_view(self, product_id: int) -> int:
        """A product view: counted in Redis now, written to the database behind (batched).

        With Redis down the view goes straight to the database (fail open for the user,
        a warning for the operator): a write nobody acknowledged durably is never
        dropped. If Redis failed between the INCR and the queue write, that one view is
        counted twice; never lost.
        """
        client = self.cache.backend.client  # type: ignore[union-attr]
        counter = f"demo:views:{product_id}"
        try:
            views = int(await client.incr(counter))
            queued = 0
            # Two views of one product can queue their counts out of order (newest
            # version wins, so 5 could overwrite 6). Whoever queues last looks at the
            # counter afterwards and queues again until what it queued is current, so
            # the last record of every product carries its final count.
            while queued != views:
                queued = views
                await self.views.write_behind(
                    f"views:{product_id}", {"product_id": product_id, "views": queued}, policy=VIEWS
                )
                views = int(await client.get(counter) or queued)
            views = queued
        except (CacheUnavailableError, RedisError, OSError) as exc:
            log.warning("views: Redis unavailable (%s); view of product %s written to the database", exc, product_id)
            self.counters.writes += 1
            served = _SERVED_BY.get()
            if served is not None:
                served.append("primary")  # the response says the primary took it, not the cache
            async with self.router.write() as conn:
                cur = await conn.execute(schema.COUNT_VIEW_DIRECT, {"key": f"views:{product_id}", "id": product_id})
                row = await cur.fetchone()
            return int(row[0]) if row is not None else 0
        self.counters.absorbed_writes += 1
        return views

    async def publish_counters(self) -> None:
        c = self.counters
        stats = self.cache.stats.snapshot()
        payload = {
            "requests": c.requests, "app_cache": c.app_cache, "loads": c.loads, "refresh_loads": c.refresh_loads,
            "writes": c.writes, "not_modified": c.not_modified, "errors": c.errors, "cache": stats,
            "static": c.static, "background_requests": c.background_requests, "absorbed_writes": c.absorbed_writes,
            "background_app_cache": c.background_app_cache,
            "router": {k: v for k, v in vars(self.router.stats()).items() if isinstance(v, int)}
            if hasattr(self.router.stats(), "__dict__") else {},
        }  # fmt: skip
        client = self.cache.backend.client  # type: ignore[union-attr]
        await client.hset(self.settings.stats_key, str(os.getpid()), json.dumps(payload))


def _cache_hits(shop: Shop) -> int:
    stats = shop.cache.stats
    return stats.l1.hits + stats.l2.hits + stats.l2.stale_serves + stats.l2.coalesced


def _profile(row: tuple[Any, ...]) -> dict[str, Any]:
    keys = ("id", "name", "email", "bio", "orders", "spent_cents")
    return dict(zip(keys, row, strict=True))


def _session_user(request: Request) -> int | None:
    session = request.cookies.get("session", "")
    if session.startswith("user-") and session[5:].isdigit():
        return int(session[5:])
    return None


def create_app(settings: DemoSettings | None = None) -> Any:
    settings = settings or DemoSettings.from_env()
    shop = Shop(settings)

    def served(response: Response, nodes: list[str] | None, write: bool, read: bool) -> Response:
        if nodes is None:  # a background refresh by the edge
            return response
        if write:
            response.headers["x-readscale-served"] = "primary"
        elif nodes:
            node = nodes[-1]
            response.headers["x-readscale-served"] = "primary" if node == "primary" else f"replica:{node}"
        else:
            shop.counters.app_cache += 1
            # A read says which tier answered; a view absorbed by Redis is no cache read.
            tier = (":l1" if _L1_ANSWERED.get() else ":l2") if read else ""
            response.headers["x-readscale-served"] = f"app_cache{tier}"
        return response

    def endpoint(
        fn: Callable[[Request], Awaitable[Response]], *, write: bool = False
    ) -> Callable[[Request], Awaitable[Response]]:
        async def handle(request: Request) -> Response:
            background = request.headers.get("x-readscale-bgfetch") == "1"
            nodes: list[str] | None = None if background else []
            if background:
                shop.counters.background_requests += 1
                hits_before = _cache_hits(shop)
            else:
                shop.counters.requests += 1
            token = _SERVED_BY.set(nodes)
            l1_token = _L1_ANSWERED.set(False)
            try:
                response = await fn(request)
                if background and _cache_hits(shop) > hits_before:
                    shop.counters.background_app_cache += 1
                return served(response, nodes, write, read=request.method == "GET")
            except Exception:
                shop.counters.errors += 1
                raise
            finally:
                _L1_ANSWERED.reset(l1_token)
                _SERVED_BY.reset(token)

        return functools.wraps(fn)(handle)  # the name, and the handler's HTTP policy (http_policy)

    @http_policy(CATALOG_HTTP)
    async def product(request: Request) -> Response:
        product_id = int(request.path_params["id"])
        data = await shop.product(product_id)
        if data is None:
            return JSONResponse({"error": "no such product"}, status_code=404)
        add_tags(request, f"product:{product_id}", f"category:{data['category_id']}")
        return JSONResponse(data)

    @http_policy(CATALOG_HTTP)
    async def category(request: Request) -> Response:
        category_id = int(request.path_params["id"])
        add_tags(request, f"category:{category_id}")
        return JSONResponse(await shop.category(category_id))

    @http_policy(TRENDING_HTTP)
    async def trending(request: Request) -> Response:
        return JSONResponse(await shop.trending())

    def owner(request: Request) -> int | None:
        user_id = int(request.path_params["id"])
        return user_id if _session_user(request) == user_id else None

    @http_policy(PROFILE_HTTP)
    async def profile(request: Request) -> Response:
        user_id = owner(request)
        if user_id is None:
            return JSONResponse({"error": "sign in"}, status_code=401)
        return JSONResponse(await shop.profile(user_id))

    @http_policy(NO_STORE)
    async def update_profile(request: Request) -> Response:
        user_id = owner(request)
        if user_id is None:
            return JSONResponse({"error": "sign in"}, status_code=401)
        body = await request.json()
        return JSONResponse(await shop.update_profile(user_id, str(body.get("bio", ""))[:500]))

    @http_policy(NO_STORE)
    async def balance(request: Request) -> Response:
        user_id = owner(request)
        if user_id is None:
            return JSONResponse({"error": "sign in"}, status_code=401)
        return JSONResponse({"balance_cents": await shop.balance(user_id)})

    @http_policy(NO_STORE)
    async def deposit(request: Request) -> Response:
        user_id = owner(request)
        if user_id is None:
            return JSONResponse({"error": "sign in"}, status_code=401)
        amount = int((await request.json()).get("amount_cents", 0))
        if not 0 < amount <= 100_000:
            return JSONResponse({"error": "amount_cents must be 1..100000"}, status_code=422)
        return JSONResponse({"balance_cents": await shop.deposit(user_id, amount)})

    @http_policy(NO_STORE)
    async def change_price(request: Request) -> Response:
        if request.client is None or request.client.host not in ("127.0.0.1", "::1"):
            return JSONResponse({"error": "admin only"}, status_code=403)
        price = int((await request.json()).get("price_cents", 0))
        await shop.change_price(int(request.path_params["id"]), max(price, 0))
        return JSONResponse({"ok": True})

    @http_policy(NO_STORE)
    async def view(request: Request) -> Response:
        views = await shop.count_view(int(request.path_params["id"]))
        return JSONResponse({"views": views}, status_code=202)

    @http_policy(NO_STORE)
    async def healthz(request: Request) -> Response:
        return Response("ok", media_type="text/plain")

    @http_policy(NO_STORE)
    async def cache_health(request: Request) -> Response:
        # The process's view of its Redis tier: 503 while its breaker skips Redis.
        ok = shop.cache.l2_available
        return Response("ok" if ok else "cache tier unavailable", status_code=200 if ok else 503)

    routes: list[Any] = [
        Route("/healthz", healthz),
        Route("/healthz/cache", cache_health),
        Route("/products/{id:int}", endpoint(product)),
        Route("/categories/{id:int}", endpoint(category)),
        Route("/trending", endpoint(trending)),
        Route("/users/{id:int}/profile", endpoint(profile), methods=["GET"]),
        Route("/users/{id:int}/profile", endpoint(update_profile, write=True), methods=["POST"]),
        Route("/users/{id:int}/balance", endpoint(balance), methods=["GET"]),
        Route("/users/{id:int}/balance", endpoint(deposit, write=True), methods=["POST"]),
        Route("/admin/products/{id:int}/price", endpoint(change_price, write=True), methods=["POST"]),
        Route("/products/{id:int}/views", endpoint(view), methods=["POST"]),
    ]
    if settings.static_dir:
        assets = StaticAssets(AssetManifest.build(Path(settings.static_dir)))

        async def static(scope: Any, receive: Any, send: Any) -> None:
            shop.counters.static += 1  # served from the process's memory: the app tier

            async def tagged(message: Any) -> None:
                if message["type"] == "http.response.start":
                    message["headers"] = [*message.get("headers", []), (b"x-readscale-served", b"app_cache")]
                await send(message)

            await assets(scope, receive, tagged)

        routes.append(Mount("/static", app=static))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await shop.open()

        async def publish() -> None:
            while True:
                await asyncio.sleep(0.25)
                with contextlib.suppress(Exception):
                    await shop.publish_counters()

        task = asyncio.ensure_future(publish())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(Exception):
                await shop.publish_counters()
            await shop.close()

    async def unavailable(request: Request, exc: Exception) -> Response:
        # The primary (or every node) is unreachable: a write cannot be acknowledged.
        # Say so, and when to try again, instead of a 500; never cache it.
        log.warning("%s %s: %s: %s", request.method, request.url.path, type(exc).__name__, exc)
        return JSONResponse(
            {"error": "the database is unavailable; try again"},
            status_code=503,
            headers={"retry-after": "1", "cache-control": "no-store"},
        )

    handlers: dict[Any, Any] = {PrimaryUnavailableError: unavailable, psycopg.OperationalError: unavailable}
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers=handlers)
    app.state.shop = shop
    signer = TokenSigner(settings.secret.encode())
    # persist="write": a public page whose miss read a replica must not set a cookie (the
    # edge could not share it); read-your-writes only needs the token after a write.
    wrapped = CausalTokenMiddleware(app, signer=signer, cookie_path="/users", secure=False, persist="write")
    return HttpCacheMiddleware(wrapped, settings=HttpSettings(edge="varnish"))


def write_static(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "app.css").write_text(STATIC_CSS)
    (folder / "app.js").write_text("document.documentElement.dataset.shop = 'readscale';\n")


def app_from_env() -> Any:
    """The uvicorn factory: ``uvicorn --factory readscale.demo.app:app_from_env``."""
    return create_app()
