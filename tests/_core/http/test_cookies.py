"""A sign-out clears the browser's caches for the site (Clear-Site-Data: "cache"): the
rule that tells a removed cookie from a set one, and the four stacks' sign-out responses.

Why: Chromium's back/forward cache restores a signed-out user's private pages on Back
without asking (tests/browser/test_chromium.py shows it on each framework)."""

from __future__ import annotations

import httpx
import pytest

from readscale._core.http import removes_cookie
from tests.http.test_stacks import FRAMEWORKS, asgi_app

NOW = 1_800_000_000
IGNORED = frozenset({"readscale_token"})


@pytest.mark.parametrize(
    "set_cookie",
    [
        "session=null; path=/; expires=Thu, 01 Jan 1970 00:00:00 GMT; Max-Age=0",  # Starlette
        "session=; Expires=Thu, 01 Jan 1970 00:00:00 GMT; Max-Age=0; HttpOnly; Path=/",  # Flask
        'sessionid=""; expires=Thu, 01 Jan 1970 00:00:00 GMT; Max-Age=0; Path=/; SameSite=Lax',  # Django
        "sid=x; Max-Age=-1",
        "sid=x; Expires=Sun, 06 Nov 1994 08:49:37 GMT",
        "sid=x; max-age=0; expires=Wed, 01 Jan 2031 00:00:00 GMT",  # Max-Age wins
    ],
)
def test_a_removed_cookie_is_a_sign_out(set_cookie: str) -> None:
    assert removes_cookie(set_cookie, IGNORED, NOW)


@pytest.mark.parametrize(
    "set_cookie",
    [
        "session=abc; path=/; Max-Age=1209600; httponly; samesite=lax",
        "sid=x; Expires=Wed, 01 Jan 2031 00:00:00 GMT",
        "sid=x; Max-Age=60; Expires=Thu, 01 Jan 1970 00:00:00 GMT",  # Max-Age wins
        "sid=x; Max-Age=soon",  # ignored attribute: a session cookie, kept
        "sid=x; Expires=yesterday",  # ignored attribute
        "sid=x",
        "readscale_token=; Max-Age=0",  # no identity in it
        "=x; Max-Age=0",
        "garbage",
    ],
)
def test_a_set_or_kept_cookie_is_not(set_cookie: str) -> None:
    assert not removes_cookie(set_cookie, IGNORED, NOW)


@pytest.mark.anyio
@pytest.mark.parametrize("framework", FRAMEWORKS)
async def test_each_stacks_sign_out_clears_the_site_cache_and_nothing_else_does(framework: str) -> None:
    transport = httpx.ASGITransport(app=asgi_app(framework))
    async with httpx.AsyncClient(transport=transport, base_url="https://shop.test") as c:
        login = await c.post("/login", params={"user": "alice"})
        account = await c.get("/account")
        write = await c.post("/write/x")
        logout = await c.post("/logout")
    assert logout.headers.get("clear-site-data") == '"cache"'
    for r in (login, account, write):
        assert "clear-site-data" not in r.headers, r.request.url
