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

This module holds the routes, their HTTP policies and ``create_app``; the data access
behind them (``Shop``, ``Counters``, ``DemoSettings``) is ``readscale.demo.shop``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import psycopg
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route

from readscale import TokenSigner
from readscale.demo.shop import L1_ANSWERED, SERVED_BY, DemoSettings, Shop
from readscale.errors import PrimaryUnavailableError
from readscale.http import AssetManifest, HttpPolicy, HttpSettings
from readscale.metrics import HttpCollector, SharedMetrics
from readscale.starlette import CausalTokenMiddleware, HttpCacheMiddleware, StaticAssets, add_tags, http_policy

CATALOG_HTTP = HttpPolicy.public(60, edge_max_age=3600, stale_while_revalidate=60, stale_if_error=600)
TRENDING_HTTP = HttpPolicy.public(10, edge_max_age=30, stale_while_revalidate=30, stale_if_error=300)
PROFILE_HTTP = HttpPolicy(visibility="private", max_age=30)
NO_STORE = HttpPolicy(visibility="no-store")

log = logging.getLogger("readscale.demo")

STATIC_CSS = "body { font-family: system-ui; } .price { font-weight: bold; }\n"


def _cache_hits(shop: Shop) -> int:
    stats = shop.cache.stats
    return stats.l1.hits + stats.l2.hits + stats.l2.stale_serves + stats.l2.coalesced


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
            tier = (":l1" if L1_ANSWERED.get() else ":l2") if read else ""
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
            token = SERVED_BY.set(nodes)
            l1_token = L1_ANSWERED.set(False)
            try:
                response = await fn(request)
                if background and _cache_hits(shop) > hits_before:
                    shop.counters.background_app_cache += 1
                return served(response, nodes, write, read=request.method == "GET")
            except Exception:
                shop.counters.errors += 1
                raise
            finally:
                L1_ANSWERED.reset(l1_token)
                SERVED_BY.reset(token)

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

    registry = metrics_registry(shop)
    # With several uvicorn workers, a scrape reaches one: SharedMetrics makes it answer
    # for all of them (each writes its counters to the shared directory).
    shared = SharedMetrics(registry, settings.metrics_dir, interval=0.5) if settings.metrics_dir else None

    @http_policy(NO_STORE)
    async def metrics(request: Request) -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        body = shared.exposition() if shared is not None else generate_latest(registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    @http_policy(NO_STORE)
    async def cache_health(request: Request) -> Response:
        # The process's view of its Redis tier: 503 while its breaker skips Redis.
        ok = shop.cache.l2_available
        return Response("ok" if ok else "cache tier unavailable", status_code=200 if ok else 503)

    routes: list[Any] = [
        Route("/healthz", healthz),
        Route("/healthz/cache", cache_health),
        Route("/metrics", metrics),  # not a shop request: the funnel does not count it
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
        if shared is not None:
            shared.start()  # in the worker, after uvicorn forked it

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
            if shared is not None:
                shared.stop()
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
    middleware = HttpCacheMiddleware(wrapped, settings=HttpSettings(edge="varnish"))
    registry.register(HttpCollector(middleware.metrics, app="demo"))
    return middleware


def metrics_registry(shop: Shop) -> Any:
    """The service process's collectors: its cache (L1 and Redis), the replica router,
    the bus and the write-behind producer (the HTTP middleware's joins once it exists)."""
    from prometheus_client import CollectorRegistry

    from readscale.metrics import BusCollector, CacheCollector, ReplicaCollector
    from readscale.writebehind import WriteBehindCollector

    registry = CollectorRegistry()
    registry.register(CacheCollector(shop.cache.stats))
    registry.register(ReplicaCollector(shop.router, name="demo"))
    registry.register(BusCollector(shop.bus))
    registry.register(WriteBehindCollector(shop.views.stats))
    return registry


def write_static(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "app.css").write_text(STATIC_CSS)
    (folder / "app.js").write_text("document.documentElement.dataset.shop = 'readscale';\n")


def app_from_env() -> Any:
    """The uvicorn factory: ``uvicorn --factory readscale.demo.app:app_from_env``."""
    return create_app()
