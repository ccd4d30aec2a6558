"""The two apps ``readscale bench http`` loads under uvicorn (not part of the library API).

``managed``: Starlette with readscale's middleware; ``/item/{id}`` declares a public
policy with an edge TTL and a tag, and gets a strong ETag of its body; ``/static/...``
serves fingerprinted assets from ``$READSCALE_BENCH_STATIC``. ``bare``: the same
handler on plain Starlette, with the same Cache-Control written by hand.
"""

from __future__ import annotations

import os
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route

from readscale.http import AssetManifest, HttpPolicy, HttpSettings
from readscale.starlette import HttpCacheMiddleware, StaticAssets, http_policy

PAYLOAD = {"id": 0, "name": "item", "price": 1234, "tags": ["a", "b", "c"], "text": "x" * 400}


def _body(item_id: str) -> bytes:
    return orjson.dumps({**PAYLOAD, "id": item_id})


@http_policy(HttpPolicy.public(60, edge_max_age=300, tags=("items",)))
async def managed_item(request: Request) -> Response:
    return Response(_body(request.path_params["id"]), media_type="application/json")


async def bare_item(request: Request) -> Response:
    return Response(
        _body(request.path_params["id"]),
        media_type="application/json",
        headers={"cache-control": "public, max-age=60", "cdn-cache-control": "max-age=300"},
    )


_routes: list[BaseRoute] = [Route("/item/{id}", managed_item)]
if os.environ.get("READSCALE_BENCH_STATIC"):
    _routes.append(Mount("/static", app=StaticAssets(AssetManifest.build(os.environ["READSCALE_BENCH_STATIC"]))))
managed = Starlette(routes=_routes)
managed.add_middleware(HttpCacheMiddleware, settings=HttpSettings(edge="varnish"))
bare = Starlette(routes=[Route("/item/{id}", bare_item)])


# -- the same page through each framework's recommended stack (edge share) ---------------
#
# ``/page/{id}``: public for 60 s (the edge 300 s), varies on Accept-Language, a cheap
# validator, a "replica read" that merges a position into the causal context, sessions
# on and the causal-token middleware inside the HTTP one, as docs/http.md composes them.
# Loaded by uvicorn as ``readscale.bench._http_apps:<framework>_page`` (Flask with
# ``--interface wsgi``); built on first access so importing this module needs none of
# the four frameworks.

_SECRET = "readscale bench: edge share secret"  # noqa: S105 - signs the bench's own cookies
_GREETING = {"en": "hello", "fr": "bonjour", "de": "hallo"}


def _page_text(item_id: str, accept_language: str | None) -> str:
    from readscale._core.replicas.causal import CausalToken
    from readscale.replicas import current_context

    context = current_context()
    if context is not None:  # what a replica read does: merge the replica's position
        context.observe(CausalToken(7, 1, 1_000))
    lang = (accept_language or "en")[:2]
    return f"{_GREETING.get(lang, 'hello')} {item_id} " + "x" * 400


def _starlette_page(fastapi: bool) -> object:
    from starlette.middleware.sessions import SessionMiddleware
    from starlette.responses import PlainTextResponse

    from readscale import TokenSigner
    from readscale.starlette import CausalTokenMiddleware, check_not_modified

    policy = HttpPolicy.public(60, edge_max_age=300, vary=("accept-language",))

    @http_policy(policy)
    async def page(request: Request) -> Response:
        check_not_modified(request, etag_from=1)
        return PlainTextResponse(_page_text(request.path_params["id"], request.headers.get("accept-language")))

    app: Any
    if fastapi:
        from fastapi import FastAPI

        app = FastAPI()
        app.add_api_route("/page/{id}", page)
    else:
        app = Starlette(routes=[Route("/page/{id}", page)])
    app.add_middleware(SessionMiddleware, secret_key=_SECRET)
    app.add_middleware(CausalTokenMiddleware, signer=TokenSigner(_SECRET.encode()))
    app.add_middleware(HttpCacheMiddleware, settings=HttpSettings(edge="varnish"))
    return app


def _flask_page() -> object:
    from flask import Flask, request

    from readscale import TokenSigner
    from readscale.flask import CausalTokenMiddleware as WsgiToken
    from readscale.flask import HttpCacheMiddleware as WsgiCache
    from readscale.flask import check_not_modified
    from readscale.flask import http_policy as flask_policy

    app = Flask("readscale_bench")
    app.secret_key = _SECRET

    @app.get("/page/<id>")
    @flask_policy(HttpPolicy.public(60, edge_max_age=300, vary=("accept-language",)))
    def page(id: str) -> str:
        check_not_modified(etag_from=1)
        return _page_text(id, request.headers.get("Accept-Language"))

    app.wsgi_app = WsgiCache(  # type: ignore[method-assign]
        WsgiToken(app.wsgi_app, signer=TokenSigner(_SECRET.encode())), settings=HttpSettings(edge="varnish")
    )
    return app


def _django_page() -> object:
    import sys
    import types

    import django
    from django.conf import settings
    from django.http import HttpRequest, HttpResponse
    from django.urls import path

    from readscale.django import check_not_modified
    from readscale.django import http_policy as django_policy

    @django_policy(HttpPolicy.public(60, edge_max_age=300, vary=("accept-language",)))
    def page(request: HttpRequest, id: str) -> HttpResponse:
        if (early := check_not_modified(request, etag_from=1)) is not None:
            return early
        return HttpResponse(_page_text(id, request.headers.get("accept-language")), content_type="text/plain")

    urls = types.ModuleType("readscale_bench_django_urls")
    urls.urlpatterns = [path("page/<str:id>", page)]  # type: ignore[attr-defined]
    sys.modules[urls.__name__] = urls
    if not settings.configured:
        settings.configure(
            DEBUG=False,
            ALLOWED_HOSTS=["*"],
            SECRET_KEY=_SECRET,
            ROOT_URLCONF=urls.__name__,
            INSTALLED_APPS=[],
            DATABASES={},
            USE_TZ=True,
            SESSION_ENGINE="django.contrib.sessions.backends.signed_cookies",
            MIDDLEWARE=[
                "readscale.django.HttpCacheMiddleware",
                "django.contrib.sessions.middleware.SessionMiddleware",
                "django.middleware.common.CommonMiddleware",
                "django.middleware.csrf.CsrfViewMiddleware",
                "readscale.django.CausalTokenMiddleware",
            ],
            READSCALE_HTTP=HttpSettings(edge="varnish", framework_reads={"user-agent"}),
            READSCALE_TOKEN_SECRET=_SECRET,
        )
        django.setup()
    from django.core.asgi import get_asgi_application

    return get_asgi_application()


_BUILDERS = {
    "fastapi_page": lambda: _starlette_page(fastapi=True),
    "starlette_page": lambda: _starlette_page(fastapi=False),
    "flask_page": _flask_page,
    "django_page": _django_page,
}
_BUILT: dict[str, object] = {}


def __getattr__(name: str) -> object:
    if name in _BUILDERS:
        if name not in _BUILT:
            _BUILT[name] = _BUILDERS[name]()
        return _BUILT[name]
    raise AttributeError(name)
