"""The recommended stack of each framework (FastAPI, Starlette, Flask, Django), as composed
in docs/http.md, with sessions on: one set of promises, four frameworks.

Each app is the module the docs' snippet comes from (checked here, word for word), driven
in process through httpx (Flask and Django through asgiref's WSGI adapter, so every
request crosses a real WSGI environ).
"""

from __future__ import annotations

import importlib
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import readscale.starlette as causal_asgi
from readscale.replicas._carry import _Once

ROOT = Path(__file__).resolve().parents[2]
FRAMEWORKS = ["fastapi", "starlette", "flask", "django"]
BROWSER = {
    "user-agent": "Mozilla/5.0 (X11; Linux x86_64) Chrome/120.0",
    "accept": "text/html,application/xhtml+xml",
    "accept-encoding": "gzip, deflate, br",
    "accept-language": "en",
    "cookie": "_ga=GA1.1.42; theme=dark",
}


def asgi_app(framework: str) -> Any:
    if framework == "django":
        from tests.http.stacks.django_app import configure

        configure()
        from asgiref.wsgi import WsgiToAsgi
        from django.core.wsgi import get_wsgi_application

        return WsgiToAsgi(get_wsgi_application())
    module = importlib.import_module(f"tests.http.stacks.{framework}_app")
    if framework == "flask":
        from asgiref.wsgi import WsgiToAsgi

        return WsgiToAsgi(module.app)
    return module.app


@pytest.fixture(params=FRAMEWORKS)
def framework(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def _client(framework: str, base_url: str = "http://shop.test") -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=asgi_app(framework)), base_url=base_url)


@pytest.fixture
async def client(framework: str) -> AsyncIterator[httpx.AsyncClient]:
    async with await _client(framework) as c:
        yield c


@pytest.mark.anyio
async def test_anonymous_readers_get_public_pages_with_or_without_cookies(client: httpx.AsyncClient) -> None:
    for headers in (BROWSER, {}):
        r = await client.get("/catalog", headers=headers)
        assert r.status_code == 200 and r.text == "catalog: initial"
        assert r.headers["cache-control"] == "public, max-age=60", r.headers
        assert "set-cookie" not in r.headers, "an anonymous replica read sets no cookie"
        assert "cookie" not in r.headers.get("vary", "").lower()
        assert "user-agent" not in r.headers.get("vary", "").lower()


@pytest.mark.anyio
async def test_language_variants_never_cross_and_each_revalidates(client: httpx.AsyncClient) -> None:
    fr = await client.get("/greeting", headers={**BROWSER, "accept-language": "fr"})
    assert fr.text == "bonjour" and fr.headers["cache-control"] == "public, max-age=60"
    assert fr.headers["cdn-cache-control"] == "max-age=600" and "Accept-Language" in fr.headers["vary"]
    held = fr.headers["etag"]
    de = await client.get("/greeting", headers={**BROWSER, "accept-language": "de", "if-none-match": held})
    assert de.status_code == 200 and de.text == "hallo"
    again = await client.get("/greeting", headers={**BROWSER, "accept-language": "fr", "if-none-match": held})
    assert again.status_code == 304 and again.headers["etag"] == fr.headers["etag"]


@pytest.mark.anyio
async def test_after_sign_out_the_previous_users_page_never_validates(client: httpx.AsyncClient) -> None:
    assert (await client.post("/login", params={"user": "alice"})).status_code == 200
    alice = await client.get("/account")
    assert alice.text == "account of alice"
    assert alice.headers["cache-control"].startswith("private")
    assert "Cookie" in alice.headers["vary"]
    assert (await client.get("/account", headers={"if-none-match": alice.headers["etag"]})).status_code == 304
    await client.post("/logout")
    out = await client.get("/account", headers={"if-none-match": alice.headers["etag"]})
    assert out.status_code == 200 and out.text == "account of nobody"


@pytest.mark.anyio
@pytest.mark.parametrize("scheme", ["http", "https"])
async def test_a_session_reads_its_own_write_over_http_and_https(framework: str, scheme: str) -> None:
    async with await _client(framework, f"{scheme}://shop.test") as c:
        written = await c.post("/write/mine")
        assert written.status_code == 200
        cookie = written.headers["set-cookie"]
        assert ("Secure" in cookie) is (scheme == "https"), cookie
        assert (await c.get("/read")).text == "mine", "the token came back with the next request"
        page = await c.get("/catalog")
        assert page.text == "catalog: mine"
        assert page.headers["cache-control"] == "public, max-age=60", "the token did not move: nothing to store"
    async with await _client(framework, f"{scheme}://shop.test") as stranger:
        assert (await stranger.get("/read")).text == "initial", "no token: the lagging replica"


@pytest.mark.anyio
async def test_the_header_path_starts_with_nothing(framework: str) -> None:
    async with await _client(framework) as service:
        written = await service.post("/write/via-header")
        token = written.headers["readscale-token"]
        service.cookies.clear()
        r = await service.get("/read", headers={"readscale-token": token})
        assert r.text == "via-header"
        assert "readscale-token" not in r.headers, "an unchanged token is not sent back"
        assert r.headers["cache-control"] == "private, no-cache"  # /read declares nothing


@pytest.mark.anyio
async def test_a_secure_cookie_over_plain_http_is_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    from tests.http.stacks._repo import repo, signer

    async def write(request: Any) -> PlainTextResponse:
        repo.write("x")
        return PlainTextResponse("ok")

    inner = Starlette(routes=[Route("/w", write, methods=["POST"])])
    app = causal_asgi.CausalTokenMiddleware(inner, signer=signer, secure=True)
    _Once.warned = False
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://dev.test") as c:
        await c.post("/w")
        await c.post("/w")
    warned = [r for r in caplog.records if getattr(r, "event", None) == "secure_cookie_over_http"]
    assert len(warned) == 1 and "plain http" in warned[0].getMessage()


SNIPPET = re.compile(r"# --- snippet: (?P<name>[\w-]+) ---\n(?P<body>.*?)# --- end snippet ---\n", re.S)


def test_the_docs_show_exactly_the_apps_these_tests_run() -> None:
    docs = (ROOT / "docs" / "http.md").read_text()
    fenced = re.finditer(r"```python\n# (?P<name>[\w-]+)\n(?P<body>.*?)```", docs, re.S)
    blocks = {m.group("name"): m.group("body") for m in fenced}
    found = {}
    for path in sorted((ROOT / "tests" / "http" / "stacks").glob("*.py")):
        for m in SNIPPET.finditer(path.read_text()):
            found[m.group("name")] = m.group("body")
    assert set(found) == {"fastapi", "starlette", "flask", "django-settings", "django-views"}
    for name, body in found.items():
        assert blocks.get(name) == body, f"docs/http.md's {name} snippet differs from tests/http/stacks"


@pytest.mark.anyio
@pytest.mark.parametrize("framework", ["starlette", "flask", "django"])  # FastAPI answers HEAD with 405
async def test_head_carries_the_validator_of_get_and_revalidates_alike(framework: str) -> None:
    """RFC 9110 §9.3.2: HEAD's fields are GET's. Werkzeug empties a HEAD response's body
    before readscale sees it, which gave HEAD the ETag of an empty body."""
    async with await _client(framework) as c:
        for path in ("/catalog", "/greeting"):
            get = await c.get(path)
            head = await c.head(path)
            assert head.status_code == 200 and head.content == b""
            assert head.headers["etag"] == get.headers["etag"], path
            assert head.headers["cache-control"] == get.headers["cache-control"]
            validator = {"if-none-match": get.headers["etag"]}
            assert (await c.head(path, headers=validator)).status_code == 304, path
            assert (await c.get(path, headers={"if-none-match": head.headers["etag"]})).status_code == 304


@pytest.mark.anyio
async def test_a_head_only_wsgi_route_still_answers_head() -> None:
    """The WSGI middleware asks the app for GET on a HEAD (for GET's validator); a route
    that answers HEAD alone must not turn into a 405."""
    from asgiref.wsgi import WsgiToAsgi
    from flask import Flask

    from readscale.flask import HttpCacheMiddleware

    app = Flask(__name__)

    @app.route("/ping", methods=["HEAD"])
    def ping() -> str:
        return "pong"

    app.wsgi_app = HttpCacheMiddleware(app.wsgi_app)  # type: ignore[method-assign]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=WsgiToAsgi(app)), base_url="http://t") as c:
        r = await c.head("/ping")
        assert r.status_code == 200 and "etag" not in r.headers, "no validator from an emptied body"
        assert (await c.get("/ping")).status_code == 405
