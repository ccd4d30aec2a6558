"""Safe by default: a public route whose handler reads who is asking is never shared.

Through each framework's recommended stack (tests/http/stacks, sessions on, as users run
them): a handler of a route declared public that reads Cookie or Authorization
(``request.cookies``, a FastAPI ``Cookie()`` parameter, ``"authorization" in
request.headers``) or the session gets ``private`` when the request carried it, and
``Vary`` naming it when not; the framework's own cookie reads on every request (FastAPI's
dependency solver, Starlette's and Flask's session loading, Django's session and CSRF
middleware) are recognised as plumbing, so pages that read nothing of the user stay
public for anonymous readers with cookies, and for signed-in ones.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from tests.http.test_stacks import BROWSER, FRAMEWORKS, asgi_app


@pytest.fixture(params=FRAMEWORKS)
async def client(request: pytest.FixtureRequest) -> AsyncIterator[httpx.AsyncClient]:
    app = asgi_app(str(request.param))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://shop.test") as c:
        yield c


def _vary(r: httpx.Response) -> set[str]:
    return {v.strip().lower() for v in r.headers.get("vary", "").split(",") if v.strip()}


def _private(r: httpx.Response) -> bool:
    cc = r.headers["cache-control"]
    return cc.startswith("private") and "cdn-cache-control" not in r.headers


@pytest.mark.anyio
async def test_a_public_page_that_reads_a_cookie_is_private_to_a_reader_with_cookies(client: httpx.AsyncClient) -> None:
    r = await client.get("/theme", headers=BROWSER)
    assert r.text == "theme dark"
    assert _private(r), r.headers
    assert "cookie" in _vary(r)
    cookieless = await client.get("/theme")
    assert cookieless.text == "theme light"
    assert cookieless.headers["cache-control"] == "public, max-age=60", "no cookie carried: one page for all"
    assert "cookie" in _vary(cookieless), "a cache must not give this page to a reader with cookies"


@pytest.mark.anyio
async def test_a_fastapi_cookie_parameter_is_a_read_of_the_cookie() -> None:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=asgi_app("fastapi")), base_url="http://s") as c:
        r = await c.get("/theme-param", headers=BROWSER)
        assert r.text == "theme dark" and _private(r) and "cookie" in _vary(r), r.headers
        r = await c.get("/theme-param")
        assert r.headers["cache-control"] == "public, max-age=60" and "cookie" in _vary(r), r.headers


@pytest.mark.anyio
async def test_a_public_page_that_reads_the_session_is_private_to_the_signed_in(client: httpx.AsyncClient) -> None:
    anonymous = await client.get("/hello")
    assert anonymous.text == "hello nobody"
    assert anonymous.headers["cache-control"] == "public, max-age=60" and "cookie" in _vary(anonymous)
    assert (await client.post("/login", params={"user": "alice"})).status_code == 200
    alice = await client.get("/hello")
    assert alice.text == "hello alice"
    assert _private(alice), alice.headers
    assert "cookie" in _vary(alice)


@pytest.mark.anyio
async def test_pages_that_read_nothing_of_the_user_stay_public_for_the_signed_in(client: httpx.AsyncClient) -> None:
    assert (await client.post("/login", params={"user": "alice"})).status_code == 200
    for headers in ({}, {"cookie": "_ga=GA1.1.42; theme=dark"}):
        r = await client.get("/catalog", headers=headers)
        assert r.headers["cache-control"] == "public, max-age=60", r.headers
        assert "cookie" not in _vary(r) and "set-cookie" not in r.headers


@pytest.mark.anyio
async def test_a_membership_test_on_the_headers_is_a_read(client: httpx.AsyncClient) -> None:
    r = await client.get("/signed")
    assert r.text == "anonymous" and r.headers["cache-control"] == "public, max-age=60"
    assert "authorization" in _vary(r), "'authorization' in request.headers read Authorization"
    r = await client.get("/signed", headers={"authorization": "Bearer alice"})
    assert r.text == "signed" and _private(r)
    r = await client.get("/has-cookie", headers=BROWSER)
    assert r.text == "cookie" and _private(r) and "cookie" in _vary(r), r.headers
    r = await client.get("/has-cookie")
    assert r.text == "none" and r.headers["cache-control"] == "public, max-age=60" and "cookie" in _vary(r)


def test_flask_behind_the_plain_wsgi_middleware_tracks_its_cookies_too() -> None:
    """Only the WSGI middleware imported (not Flask's view helpers): a fresh interpreter,
    since this one has the Flask integration loaded already."""
    import subprocess
    import sys

    script = """
from flask import Flask, request
from readscale.flask import HttpCacheMiddleware
app = Flask(__name__)
app.secret_key = "s"
@app.get("/t")
def t():
    return request.cookies.get("theme", "light"), {"Cache-Control": "public, max-age=60"}
app.wsgi_app = HttpCacheMiddleware(app.wsgi_app)
client = app.test_client()
client.set_cookie("theme", "dark")
r = client.get("/t")
print(r.get_data(as_text=True), "|", r.headers["Cache-Control"], "|", r.headers.get("Vary"))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "dark | private, no-cache | Authorization, Cookie", out
