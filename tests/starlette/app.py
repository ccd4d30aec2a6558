"""The origin the edge tests put behind Varnish: a Starlette app under readscale's middleware.

Every route counts the requests that reach it (``GET /__stats``), so a test can tell how
many requests the edge let through. Started by the tests as ``uvicorn tests.starlette.app:app``.
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from readscale.http import HttpPolicy, HttpSettings
from readscale.starlette import HttpCacheMiddleware, add_tags, check_not_modified, http_policy

hits: Counter[str] = Counter()
VERSIONS: dict[str, int] = {}


def count(request: Request) -> None:
    hits[request.url.path] += 1


@http_policy(HttpPolicy.public(0, edge_max_age=60))
async def public(request: Request) -> Response:
    count(request)
    return PlainTextResponse(f"public #{hits[request.url.path]}")


async def profile(request: Request) -> Response:
    """No policy declared: reads the session cookie, personalised."""
    count(request)
    user = request.cookies.get("session", "anonymous")
    return PlainTextResponse(f"hello {user} #{hits[request.url.path]}")


@http_policy(HttpPolicy.public(0, edge_max_age=60))
async def login(request: Request) -> Response:
    """Declares public but sets a cookie: must be downgraded."""
    count(request)
    response = PlainTextResponse(f"welcome #{hits[request.url.path]}")
    response.set_cookie("session", "alice")
    return response


@http_policy(HttpPolicy.public(0, edge_max_age=1, stale_while_revalidate=30))
async def swr(request: Request) -> Response:
    count(request)
    await asyncio.sleep(0.2)
    return PlainTextResponse(f"swr #{hits[request.url.path]}")


@http_policy(HttpPolicy.public(0, edge_max_age=1, stale_while_revalidate=1, stale_if_error=300))
async def sie(request: Request) -> Response:
    count(request)
    return PlainTextResponse(f"sie #{hits[request.url.path]} pid {os.getpid()}")


@http_policy(HttpPolicy.public(0, edge_max_age=60))
async def slow(request: Request) -> Response:
    count(request)
    await asyncio.sleep(1.0)
    return PlainTextResponse(f"slow #{hits[request.url.path]}")


@http_policy(HttpPolicy.public(0, edge_max_age=300))
async def page(request: Request) -> Response:
    n = int(request.path_params["n"])
    count(request)
    add_tags(request, "group-a" if n <= 3 else "group-b", f"page-{n}")
    return PlainTextResponse(f"page {n} #{hits[request.url.path]}")


@http_policy(HttpPolicy.public(60, edge_max_age=300))
async def document(request: Request) -> Response:
    """A body whose bytes do not depend on the hash seed (sorted keys), tagged by ETag."""
    count(request)
    data = {"names": sorted({"ada", "grace", "barbara", "edsger"}), "meta": {"z": 1, "a": 2}}
    return Response(orjson.dumps(data, option=orjson.OPT_SORT_KEYS), media_type="application/json")


@http_policy(HttpPolicy.public(0, edge_max_age=300, vary=("x-lang",)))
async def reflect(request: Request) -> Response:
    """Reflects request fields into the page: the classic poisoning target. X-Lang is
    declared (the page varies on it); X-Forwarded-Host never reaches it (dropped by the
    edge, and by readscale from untrusted clients)."""
    count(request)
    host = request.headers.get("x-forwarded-host", "example.test")
    lang = request.headers.get("x-lang", "en")
    return PlainTextResponse(f'<a href="https://{host}/home">{lang}</a>')


@http_policy(HttpPolicy.public(60, edge_max_age=300))
async def versioned(request: Request) -> Response:
    key = request.path_params["key"]
    check_not_modified(request, etag_from=VERSIONS.get(key, 1))
    count(request)  # counted only when rendered
    return JSONResponse({"key": key, "version": VERSIONS.get(key, 1)})


@http_policy(HttpPolicy.public(0, edge_max_age=1))
async def revalidated(request: Request) -> Response:
    """Like ``versioned``, but the edge's copy expires after a second: the edge revalidates."""
    key = request.path_params["key"]
    check_not_modified(request, etag_from=VERSIONS.get(key, 1))
    count(request)  # counted only when rendered
    return JSONResponse({"key": key, "version": VERSIONS.get(key, 1)})


@http_policy(HttpPolicy.public(0, edge_max_age=300))
async def bumped(request: Request) -> Response:
    """GET shows a version the edge may keep 300 s; POST to the same URL changes it."""
    key = request.path_params["key"]
    if request.method == "POST":
        VERSIONS[key] = VERSIONS.get(key, 1) + 1
        return PlainTextResponse("ok")
    count(request)
    return JSONResponse({"key": key, "version": VERSIONS.get(key, 1)})


async def bump(request: Request) -> Response:
    key = request.path_params["key"]
    VERSIONS[key] = VERSIONS.get(key, 1) + 1
    return PlainTextResponse("ok")


@http_policy(HttpPolicy.public(no_cache=True, edge_max_age=300))
async def html(request: Request) -> Response:
    """Browsers revalidate every time; the edge holds it (CDN-Cache-Control governs there)."""
    count(request)
    return PlainTextResponse(f"html #{hits[request.url.path]}")


async def stats(request: Request) -> Response:
    return JSONResponse(dict(hits))


async def healthz(request: Request) -> Response:
    return PlainTextResponse("ok")


routes = [
    Route("/public", public),
    Route("/profile", profile),
    Route("/login", login),
    Route("/swr", swr),
    Route("/sie", sie),
    Route("/slow", slow),
    Route("/page/{n:int}", page),
    Route("/document", document),
    Route("/reflect", reflect),
    Route("/versioned/{key}", versioned),
    Route("/revalidated/{key}", revalidated),
    Route("/bump/{key}", bump, methods=["POST"]),
    Route("/bumped/{key}", bumped, methods=["GET", "POST"]),
    Route("/html", html),
    Route("/__stats", stats),
    Route("/healthz", healthz),
]
app = Starlette(routes=routes)
app.add_middleware(HttpCacheMiddleware, settings=HttpSettings(edge="varnish"))
