"""A page that reads the session depends on the session cookie, wherever the session
middleware sits and whatever version put the session in the scope.

Starlette >= 1.0 adds ``Vary: Cookie`` itself when a handler touched ``request.session``,
but only on responses that pass through it: with its SessionMiddleware outside
readscale's, readscale decided ``public`` for a signed-in user's page before the Vary
arrived. Sessions that cannot say whether they were touched (a plain ``dict`` in
``scope["session"]``: Starlette < 1.0, other session middleware) are seen touched
through ``request.session``, so a page that never reads it stays public.
"""

from __future__ import annotations

import json
from base64 import b64decode, b64encode
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import HTTPConnection, Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from readscale.http import HttpPolicy, HttpSettings
from readscale.starlette import HttpCacheMiddleware, http_policy


@http_policy(HttpPolicy.public(60))
async def hello(request: Request) -> PlainTextResponse:
    return PlainTextResponse(f"hello {request.session.get('user', 'nobody')}")


@http_policy(HttpPolicy.public(60))
async def catalog(request: Request) -> PlainTextResponse:
    return PlainTextResponse("catalog")


async def login(request: Request) -> PlainTextResponse:
    request.session["user"] = "alice"
    return PlainTextResponse("signed in")


class PlainDictSessions:
    """A session middleware as Starlette's was before 1.0: a plain dict in the scope,
    the cookie set whenever the session is not empty (unsigned: a test double)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        raw = HTTPConnection(scope).cookies.get("plain")
        scope["session"] = json.loads(b64decode(raw)) if raw else {}

        async def send_wrapper(message: Any) -> None:
            if message["type"] == "http.response.start" and scope["session"]:
                data = b64encode(json.dumps(scope["session"]).encode()).decode()
                message["headers"] = [*message.get("headers", []), (b"set-cookie", f"plain={data}; path=/".encode())]
            await send(message)

        await self.app(scope, receive, send_wrapper)


def _app(layout: str) -> Starlette:
    app = Starlette(
        routes=[Route("/hello", hello), Route("/catalog", catalog), Route("/login", login, methods=["POST"])]
    )
    if layout == "sessions outside":
        app.add_middleware(HttpCacheMiddleware, settings=HttpSettings())
        app.add_middleware(SessionMiddleware, secret_key="test")
    else:
        app.add_middleware(PlainDictSessions)
        app.add_middleware(HttpCacheMiddleware, settings=HttpSettings())
    return app


@pytest.mark.anyio
@pytest.mark.parametrize("layout", ["sessions outside", "plain dict sessions"])
async def test_a_page_that_read_the_session_is_never_public_to_the_signed_in(layout: str) -> None:
    transport = httpx.ASGITransport(app=_app(layout))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        await client.post("/login")
        r = await client.get("/hello")
        assert r.text == "hello alice"
        assert r.headers["cache-control"].startswith("private"), r.headers
        assert "cookie" in r.headers.get("vary", "").lower()
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as anonymous:
        r = await anonymous.get("/hello")
        assert r.text == "hello nobody"
        assert "cookie" in r.headers.get("vary", "").lower(), "a cache must not give it to a signed-in reader"
        r = await anonymous.get("/catalog", headers={"cookie": "_ga=1"})
        assert r.headers["cache-control"] == "public, max-age=60", "the session untouched: public"
        assert "cookie" not in r.headers.get("vary", "").lower()
