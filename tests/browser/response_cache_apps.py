"""The apps of tests/browser/test_response_cache.py: a FastAPI, a Django and a Flask app, each
with readscale's response cache outside its HTTP middleware, over the project's Redis
(``READSCALE_TEST_REDIS_URL``, keys under ``READSCALE_TEST_PREFIX``). Each route counts
its handler's runs; ``/rc/counts`` (never cached) reports them.

Targets: ``tests.browser.response_cache_apps:fastapi``, ``:django`` (Django's ASGI handler),
``:flask`` (``--interface wsgi``).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from typing import Any

from starlette.requests import Request  # FastAPI resolves a handler's annotations from this module
from starlette.responses import Response

from readscale.http import HttpPolicy

runs: Counter[str] = Counter()
SLOW = 0.1  # seconds a stampede's handler takes: long enough for every request to arrive during it
GREETINGS = {"fr": "bonjour", "de": "hallo", "en": "hello"}

SHARED = HttpPolicy.public(0, edge_max_age=60)  # browsers revalidate; shared caches keep it a minute
POLICIES = {
    "slow": SHARED,
    "news": HttpPolicy.public(0, edge_max_age=60, tags=("news",)),
    "tagged": SHARED,  # tagged by the handler (add_tags)
    "open": SHARED,  # asked with Authorization
    "lang": HttpPolicy.public(0, edge_max_age=60, vary=("accept-language",)),
    "cookie": SHARED,  # sets a cookie: never stored
    "private": HttpPolicy.private(60),
}


def greeting(accept_language: str | None) -> str:
    return GREETINGS.get((accept_language or "en")[:2], "hello")


def _env() -> tuple[str, str]:
    return os.environ["READSCALE_TEST_REDIS_URL"], os.environ.get("READSCALE_TEST_PREFIX", "rs-rc:")


def _fastapi() -> Any:
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse, PlainTextResponse

    from readscale import AsyncCache
    from readscale.backends import AsyncRedisBackend
    from readscale.l1 import MemoryStore
    from readscale.settings import RedisSettings
    from readscale.starlette import HttpCacheMiddleware, ResponseCacheMiddleware, add_tags, http_policy

    url, prefix = _env()
    cache = AsyncCache(AsyncRedisBackend(RedisSettings(url=url)), l1=MemoryStore(1000), prefix=prefix)
    app = FastAPI()

    @app.get("/rc/counts")
    async def counts() -> JSONResponse:
        return JSONResponse(dict(runs))

    def make(name: str) -> Any:
        @http_policy(POLICIES[name])
        async def endpoint(request: Request, response: Response) -> str:
            runs[name] += 1
            if name == "slow":
                await asyncio.sleep(SLOW)
            if name == "tagged":
                add_tags(request, "tagged")
            if name == "cookie":
                response.set_cookie("seen", "1")
            if name == "lang":
                return greeting(request.headers.get("accept-language"))
            return f"{name} {runs[name]}"

        return endpoint

    for name in POLICIES:  # one endpoint per route, each with its own policy
        app.add_api_route(f"/rc/{name}", make(name), response_class=PlainTextResponse, methods=["GET"])
    app.add_middleware(HttpCacheMiddleware)
    app.add_middleware(ResponseCacheMiddleware, cache=cache)
    return app


def _flask() -> Any:
    import flask

    from readscale import Cache
    from readscale.backends import RedisBackend
    from readscale.flask import HttpCacheMiddleware, ResponseCacheMiddleware, add_tags, http_policy
    from readscale.l1 import MemoryStore
    from readscale.settings import RedisSettings

    url, prefix = _env()
    cache = Cache(RedisBackend(RedisSettings(url=url)), l1=MemoryStore(1000), prefix=prefix)
    app = flask.Flask(__name__)

    @app.get("/rc/counts")
    def counts() -> Any:
        return flask.jsonify(dict(runs))

    def make(name: str) -> Any:
        @http_policy(POLICIES[name])
        def view() -> Any:
            runs[name] += 1
            if name == "slow":
                time.sleep(SLOW)
            if name == "tagged":
                add_tags("tagged")
            lang = greeting(flask.request.headers.get("accept-language"))
            response = flask.make_response(lang if name == "lang" else f"{name} {runs[name]}")
            response.content_type = "text/plain; charset=utf-8"
            if name == "cookie":
                response.set_cookie("seen", "1")
            return response

        view.__name__ = f"rc_{name}"
        return view

    for name in POLICIES:
        app.add_url_rule(f"/rc/{name}", view_func=make(name))
    app.wsgi_app = HttpCacheMiddleware(app.wsgi_app)  # type: ignore[method-assign]
    app.wsgi_app = ResponseCacheMiddleware(app.wsgi_app, cache=cache, app=app)  # type: ignore[method-assign]
    return app


def _django() -> Any:
    import django
    from django.conf import settings

    _env()  # fails early when the test did not give the Redis URL
    settings.configure(
        DEBUG=False,
        SECRET_KEY="response-cache-tests",
        ALLOWED_HOSTS=["*"],
        ROOT_URLCONF=__name__,
        INSTALLED_APPS=[],
        MIDDLEWARE=["readscale.django.ResponseCacheMiddleware", "readscale.django.HttpCacheMiddleware"],
        READSCALE_RESPONSE_CACHE=f"{__name__}:django_cache",
    )
    django.setup()
    from django.core.handlers.asgi import ASGIHandler

    return ASGIHandler()


def __getattr__(name: str) -> Any:
    if name == "fastapi":
        return _built("fastapi", _fastapi)
    if name == "django":
        return _built("django", _django)
    if name == "flask":
        return _built("flask", _flask)
    if name == "django_cache":
        return _built("django_cache", _django_cache)
    if name == "urlpatterns":
        return _built("urlpatterns", _urlpatterns)
    raise AttributeError(name)


_made: dict[str, Any] = {}


def _built(name: str, build: Any) -> Any:
    if name not in _made:
        _made[name] = build()
    return _made[name]


def _django_cache() -> Any:
    from readscale import Cache
    from readscale.backends import RedisBackend
    from readscale.l1 import MemoryStore
    from readscale.settings import RedisSettings

    url, prefix = _env()
    return Cache(RedisBackend(RedisSettings(url=url)), l1=MemoryStore(1000), prefix=prefix)


def _urlpatterns() -> list[Any]:
    from django.http import HttpRequest, HttpResponse, JsonResponse
    from django.urls import path

    from readscale.django import add_tags, http_policy

    def counts(request: HttpRequest) -> HttpResponse:
        return JsonResponse(dict(runs))

    def make(name: str) -> Any:
        @http_policy(POLICIES[name])
        def view(request: HttpRequest) -> HttpResponse:
            runs[name] += 1
            if name == "slow":
                time.sleep(SLOW)
            if name == "tagged":
                add_tags(request, "tagged")
            text = greeting(request.headers.get("accept-language")) if name == "lang" else f"{name} {runs[name]}"
            response = HttpResponse(text, content_type="text/plain; charset=utf-8")
            if name == "cookie":
                response.set_cookie("seen", "1")
            return response

        return view

    return [path("rc/counts", counts), *(path(f"rc/{name}", make(name)) for name in POLICIES)]


__all__ = ["POLICIES", "greeting", "runs"]
