"""Regression tests for the defects of issue 13, each in the configuration that found it.

Real apps in process (httpx's ASGI and WSGI transports, Django's test client), hishel as
a real client cache, uvicorn's own proxy-headers middleware. Every test failed on the
code before the fix (counts in the commit message).
"""

from __future__ import annotations

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from readscale import TokenSigner
from readscale._core.replicas.causal import CausalToken
from readscale.demo.browser import MemoryStorage
from readscale.http import HttpPolicy, HttpSettings
from readscale.replicas import DEFAULT_COOKIE, current_context
from readscale.starlette import CausalTokenMiddleware, HttpCacheMiddleware, check_not_modified, http_policy

SIGNER = TokenSigner(b"issue 13 regression secret, long enough")
GREETING = {"fr": "bonjour", "de": "hallo", "en": "hello"}
LANG = HttpPolicy.public(0, edge_max_age=60, vary=("accept-language",))


def _lang(request: Request) -> str:
    wanted = request.headers.get("accept-language", "en")[:2]
    return wanted if wanted in GREETING else "en"


@http_policy(LANG)
async def greeting(request: Request) -> Response:
    check_not_modified(request, etag_from=1)  # the same version for every language
    return PlainTextResponse(GREETING[_lang(request)], headers={"content-language": _lang(request)})


@http_policy(HttpPolicy.private(60))
async def account(request: Request) -> Response:
    check_not_modified(request, etag_from=7)
    return PlainTextResponse(f"account of {request.cookies.get('session', 'nobody')}")


@http_policy(HttpPolicy.public(60))
async def replica_page(request: Request) -> Response:
    """A public page whose miss read a replica: the read merges the replica's position."""
    context = current_context()
    if context is not None:
        context.observe(CausalToken(1, 1, 100 + len(request.query_params.get("n", ""))))
    return PlainTextResponse("catalog")


async def write(request: Request) -> Response:
    context = current_context()
    assert context is not None
    context.record_write(CausalToken(1, 1, 5000), at=1.0)
    return PlainTextResponse("written")


async def whoami(request: Request) -> Response:
    context = current_context()
    token = None if context is None else context.token
    return PlainTextResponse(str(None if token is None else token.lsn))


@http_policy(HttpPolicy.public(60))
async def link(request: Request) -> Response:
    return PlainTextResponse(f"{request.url.scheme}://example.test/next")


async def put(request: Request) -> Response:
    return PlainTextResponse("stored")


ROUTES = [
    Route("/greeting", greeting),
    Route("/account", account),
    Route("/page", replica_page),
    Route("/write", write, methods=["POST"]),
    Route("/whoami", whoami),
    Route("/link", link),
    Route("/put", put, methods=["PUT"]),
]


def starlette_stack(**token_options: object) -> HttpCacheMiddleware:
    """The composition the docs recommend: the HTTP layer outermost, the token inside."""
    inner = CausalTokenMiddleware(Starlette(routes=ROUTES), signer=SIGNER, **token_options)  # type: ignore[arg-type]
    return HttpCacheMiddleware(inner, settings=HttpSettings(edge="varnish"))


def client(app: object, base_url: str = "http://t") -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base_url)  # type: ignore[arg-type]


# -- defect 1: one validator per representation -------------------------------------------


@pytest.mark.anyio
async def test_a_language_variant_validator_never_answers_for_another_language() -> None:
    async with client(starlette_stack()) as c:
        fr = await c.get("/greeting", headers={"accept-language": "fr"})
        de = await c.get("/greeting", headers={"accept-language": "de", "if-none-match": fr.headers["etag"]})
    assert fr.text == "bonjour"
    assert de.status_code == 200 and de.text == "hallo", "the French ETag must not validate the German page"
    assert de.headers["etag"] != fr.headers["etag"]
    assert "Accept-Language" in de.headers["vary"]


@pytest.mark.anyio
async def test_a_private_validator_never_answers_for_another_user_or_after_sign_out() -> None:
    async with client(starlette_stack()) as c:
        alice = await c.get("/account", headers={"cookie": "session=alice"})
        bob = await c.get("/account", headers={"cookie": "session=bob", "if-none-match": alice.headers["etag"]})
        out = await c.get("/account", headers={"if-none-match": alice.headers["etag"]})
        again = await c.get("/account", headers={"cookie": "session=alice", "if-none-match": alice.headers["etag"]})
    assert bob.status_code == 200 and bob.text == "account of bob"
    assert out.status_code == 200 and out.text == "account of nobody"
    assert again.status_code == 304, "the same user still revalidates cheaply"
    assert "Cookie" in alice.headers["vary"], "a fresh private response is reused only for the same identity"


@pytest.mark.anyio
async def test_hishel_never_shows_a_language_variant_for_another() -> None:
    from hishel import CacheOptions
    from hishel.httpx import AsyncCacheTransport

    transport = AsyncCacheTransport(
        httpx.ASGITransport(app=starlette_stack()), storage=MemoryStorage(), rfc=CacheOptions(shared=False)
    )
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as browser:
        langs = ["fr", "de", "fr", "en", "de"]
        seen = [(await browser.get("/greeting", headers={"accept-language": lang})).text for lang in langs]
    assert seen == ["bonjour", "hallo", "bonjour", "hello", "hallo"]


# -- defect 4: the two recommended middlewares together -----------------------------------


@pytest.mark.anyio
async def test_anonymous_replica_reads_stay_public_with_no_cookie_and_no_vary_cookie() -> None:
    async with client(starlette_stack()) as c:
        plain = await c.get("/page")
        with_cookie = await c.get("/page?n=1", headers={"cookie": "_ga=GA1.1; theme=dark"})
    for r in (plain, with_cookie):
        assert r.headers["cache-control"] == "public, max-age=60", r.headers
        assert "set-cookie" not in r.headers
        assert "Cookie" not in r.headers.get("vary", "")


@pytest.mark.anyio
async def test_a_session_that_wrote_keeps_its_token_and_public_pages_stay_public_for_it() -> None:
    async with client(starlette_stack()) as c:
        written = await c.post("/write")
        assert DEFAULT_COOKIE in written.headers["set-cookie"]
        assert (await c.get("/whoami")).text == "5000", "the next request restored the session's write"


# -- defect 5: plain http in development --------------------------------------------------


@pytest.mark.anyio
async def test_read_your_writes_holds_over_plain_http_with_the_defaults() -> None:
    async with client(starlette_stack(), base_url="http://dev.test") as c:
        await c.post("/write")
        assert (await c.get("/whoami")).text == "5000", "the cookie must come back over http"


@pytest.mark.anyio
async def test_the_token_cookie_is_secure_over_https() -> None:
    async with client(starlette_stack(), base_url="https://prod.test") as c:
        written = await c.post("/write")
        assert "Secure" in written.headers["set-cookie"]
        assert (await c.get("/whoami")).text == "5000"


@pytest.mark.anyio
async def test_the_header_path_needs_no_placeholder() -> None:
    async with client(starlette_stack()) as c:
        written = await c.post("/write")
        token = written.headers.get("readscale-token")
        assert token, "a write answers with the token in the header too"
        c.cookies.clear()
        assert (await c.get("/whoami", headers={"readscale-token": token})).text == "5000"


# -- defect 8: validators only on GET/HEAD -------------------------------------------------


@pytest.mark.anyio
async def test_no_etag_on_a_put_response() -> None:
    async with client(starlette_stack()) as c:
        r = await c.put("/put", content=b"x")
    assert r.status_code == 200 and "etag" not in r.headers


# -- defect 9: a scheme taken from X-Forwarded-Proto varies on it -------------------------


@pytest.mark.anyio
async def test_a_scheme_from_x_forwarded_proto_is_never_shared_without_vary() -> None:
    from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

    # What uvicorn runs by default (--proxy-headers, trusting 127.0.0.1) before any app middleware.
    app = ProxyHeadersMiddleware(starlette_stack(), trusted_hosts="127.0.0.1")
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 5555))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        r = await c.get("/link", headers={"x-forwarded-proto": "https"})
    assert r.text.startswith("https://")
    if r.headers["cache-control"].startswith("public"):
        assert "X-Forwarded-Proto" in r.headers.get("vary", ""), r.headers


# -- defects 2 and 3: frameworks whose plumbing reads every request's cookies --------------

BROWSER = {
    "user-agent": "Mozilla/5.0 (X11; Linux x86_64) Chrome/120.0",
    "accept": "text/html,application/xhtml+xml",
    "accept-encoding": "gzip, deflate, br",
    "cookie": "_ga=GA1.1.42; theme=dark",
}


@pytest.mark.anyio
async def test_fastapi_public_routes_stay_public_for_anonymous_readers_with_cookies() -> None:
    from fastapi import FastAPI

    app = FastAPI()

    @app.get("/items/{item_id}")
    @http_policy(HttpPolicy.public(60, edge_max_age=300))
    async def item(item_id: int) -> dict[str, int]:
        return {"id": item_id}

    app.add_middleware(HttpCacheMiddleware, settings=HttpSettings(edge="varnish"))
    async with client(app) as c:
        with_cookie = await c.get("/items/1", headers=BROWSER)
        cookieless = await c.get("/items/2")
    assert with_cookie.headers["cache-control"] == "public, max-age=60"
    assert cookieless.headers["cache-control"] == "public, max-age=60"
    assert "Cookie" not in cookieless.headers.get("vary", "")
    assert "Cookie" not in with_cookie.headers.get("vary", "")


def test_flask_with_sessions_keeps_public_pages_public_without_vary_on_every_field() -> None:
    from flask import Flask, session

    import readscale.flask as rs_flask
    from readscale.flask import HttpCacheMiddleware as WsgiMiddleware

    app = Flask("sessions-on")
    app.secret_key = "k" * 32

    @app.get("/catalog")
    @rs_flask.http_policy(HttpPolicy.public(60, edge_max_age=300))
    def catalog() -> str:
        return "catalog"

    @app.get("/me")
    @rs_flask.http_policy(HttpPolicy.private(0))
    def me() -> str:
        return f"me: {session.get('user', 'nobody')}"

    app.wsgi_app = WsgiMiddleware(app.wsgi_app)  # type: ignore[method-assign]
    c = app.test_client()
    r = c.get("/catalog", headers={k.title(): v for k, v in BROWSER.items()})
    assert r.headers["Cache-Control"] == "public, max-age=60"
    assert "User-Agent" not in r.headers.get("Vary", "") and "Accept" not in r.headers.get("Vary", "")
    r = c.get("/catalog")
    assert r.headers["Cache-Control"] == "public, max-age=60" and "Cookie" not in r.headers.get("Vary", "")


def test_the_demo_extra_pins_the_hishel_api_the_demo_uses() -> None:
    """The demo's browsers import hishel 2's API (hishel.httpx, CacheOptions, Entry): an
    extra that admits hishel 0.x or 1.x installs a demo that cannot start."""
    import tomllib
    from pathlib import Path

    from packaging.requirements import Requirement

    pyproject = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    demo = pyproject["project"]["optional-dependencies"]["demo"]
    (hishel,) = [Requirement(r) for r in demo if r.startswith("hishel")]
    assert not hishel.specifier.contains("0.1.1") and not hishel.specifier.contains("1.0.0")
    assert hishel.specifier.contains("2.0.0")
    from importlib.metadata import version

    assert hishel.specifier.contains(version("hishel")), "the installed hishel is the one the extra pins"
