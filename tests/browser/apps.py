"""The four example apps of tests/http/stacks (docs/http.md's recommended stacks, sessions
on), as uvicorn serves them to the browser tests, plus two routes: ``/news``, public for
one second, so a test sees a client revalidate a page after its max-age without waiting
a minute, and ``/orders``, a private page with a version validator
(``check_not_modified(etag_from=...)``, as a user's data version would give), whose
ETag, unlike one taken from the body, is the same for every user unless readscale folds
the identity in. Nothing else is changed: the snippets' routes and middleware are the apps'.

Targets: ``tests.browser.apps:fastapi``, ``:starlette``, ``:flask`` (``--interface
wsgi``), ``:django`` (Django's ASGI handler).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request  # FastAPI resolves a handler's annotations from this module
from tests.http.stacks._repo import repo

NEWS_MAX_AGE = 1


def news_text() -> str:
    return f"news v{repo.version}"


def orders_text(user: str | None) -> str:
    return f"orders of {user or 'nobody'}"


def _fastapi() -> Any:
    from fastapi.responses import PlainTextResponse
    from tests.http.stacks.fastapi_app import app

    from readscale.http import HttpPolicy
    from readscale.starlette import check_not_modified, http_policy

    @app.get("/news", response_class=PlainTextResponse)
    @http_policy(HttpPolicy.public(NEWS_MAX_AGE))
    async def news(request: Request) -> str:
        check_not_modified(request, etag_from=repo.version)
        return news_text()

    @app.get("/orders", response_class=PlainTextResponse)
    @http_policy(HttpPolicy.private(0))
    async def orders(request: Request) -> str:
        check_not_modified(request, etag_from=repo.version)
        return orders_text(request.session.get("user"))

    return app


def _starlette() -> Any:
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route
    from tests.http.stacks.starlette_app import app

    from readscale.http import HttpPolicy
    from readscale.starlette import check_not_modified, http_policy

    @http_policy(HttpPolicy.public(NEWS_MAX_AGE))
    async def news(request: Request) -> PlainTextResponse:
        check_not_modified(request, etag_from=repo.version)
        return PlainTextResponse(news_text())

    @http_policy(HttpPolicy.private(0))
    async def orders(request: Request) -> PlainTextResponse:
        check_not_modified(request, etag_from=repo.version)
        return PlainTextResponse(orders_text(request.session.get("user")))

    app.router.routes.extend([Route("/news", news), Route("/orders", orders)])
    return app


def _flask() -> Any:
    from flask import session
    from tests.http.stacks.flask_app import app

    from readscale.flask import check_not_modified, http_policy
    from readscale.http import HttpPolicy

    @app.get("/news")
    @http_policy(HttpPolicy.public(NEWS_MAX_AGE))
    def news() -> str:
        check_not_modified(etag_from=repo.version)
        return news_text()

    @app.get("/orders")
    @http_policy(HttpPolicy.private(0))
    def orders() -> str:
        check_not_modified(etag_from=repo.version)
        return orders_text(session.get("user"))

    return app


def _django() -> Any:
    from tests.http.stacks.django_app import application_factory, configure

    configure()
    from django.http import HttpRequest, HttpResponse
    from django.urls import path
    from tests.http.stacks import django_urls

    from readscale.django import check_not_modified, http_policy
    from readscale.http import HttpPolicy

    @http_policy(HttpPolicy.public(NEWS_MAX_AGE))
    def news(request: HttpRequest) -> HttpResponse:
        if (not_modified := check_not_modified(request, etag_from=repo.version)) is not None:
            return not_modified
        return HttpResponse(news_text())

    @http_policy(HttpPolicy.private(0))
    def orders(request: HttpRequest) -> HttpResponse:
        if (not_modified := check_not_modified(request, etag_from=repo.version)) is not None:
            return not_modified
        return HttpResponse(orders_text(request.session.get("user")))

    django_urls.urlpatterns.extend([path("news", news), path("orders", orders)])
    return application_factory()


_BUILDERS = {"fastapi": _fastapi, "starlette": _starlette, "flask": _flask, "django": _django}
_built: dict[str, Any] = {}


def __getattr__(name: str) -> Any:
    """Build only the app uvicorn asks for (each imports its framework; Django's settings
    are process-wide)."""
    if name not in _BUILDERS:
        raise AttributeError(name)
    if name not in _built:
        _built[name] = _BUILDERS[name]()
    return _built[name]
