"""The ASGI middleware carries the causal token across requests; a bad token is a new session."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from readscale import AsyncReplicaRouter, TokenSigner
from readscale._core.replicas.causal import CausalToken
from readscale.replicas import DEFAULT_COOKIE, current_context
from readscale.stack import Stack
from readscale.starlette import CausalTokenMiddleware
from tests.replica_helpers import restore_replicas, router_settings

SIGNER = TokenSigner(b"test secret for the asgi middleware")
HEADER = "readscale-token"


def build_app(router: AsyncReplicaRouter | None, **options: Any) -> CausalTokenMiddleware:
    async def write(request: Request) -> JSONResponse:
        assert router is not None
        value = request.path_params["value"]
        async with router.write() as conn:
            await conn.execute("UPDATE asgi_probe SET v = %s WHERE id = 1", (value,))
        return JSONResponse({"wrote": value})

    async def read(request: Request) -> JSONResponse:
        assert router is not None
        row = await router.fetch_one("SELECT v FROM asgi_probe WHERE id = 1")
        return JSONResponse({"v": row[0] if row else None})

    async def whoami(request: Request) -> JSONResponse:
        context = current_context()
        assert context is not None, "every request runs in its own causal context"
        token = context.token
        return JSONResponse({"lsn": None if token is None else token.lsn})

    app = Starlette(
        routes=[
            Route("/write/{value}", write, methods=["POST"]),
            Route("/read", read),
            Route("/whoami", whoami),
        ]
    )
    return CausalTokenMiddleware(app, signer=SIGNER, secure=False, **options)


def client(app: CausalTokenMiddleware) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")


@pytest.fixture
def paused_stack(pg_stack: Stack) -> Iterator[Stack]:
    restore_replicas(pg_stack)
    try:
        yield pg_stack
    finally:
        restore_replicas(pg_stack)


@pytest.fixture
async def router(paused_stack: Stack) -> AsyncIterator[AsyncReplicaRouter]:
    async with AsyncReplicaRouter(router_settings(paused_stack, wait_budget=0.05)) as router:
        async with router.write() as conn:
            await conn.execute("CREATE TABLE IF NOT EXISTS asgi_probe (id int PRIMARY KEY, v text)")
            await conn.execute(
                "INSERT INTO asgi_probe VALUES (1, 'initial') ON CONFLICT (id) DO UPDATE SET v = 'initial'"
            )
        restore_replicas(paused_stack)  # both replicas have the table before a test pauses them
        yield router


@pytest.mark.stack
@pytest.mark.anyio
async def test_a_browser_session_reads_its_own_write_on_the_next_request(
    paused_stack: Stack, router: AsyncReplicaRouter
) -> None:
    paused_stack.pause_replay("r1")
    paused_stack.pause_replay("r2")
    async with client(build_app(router)) as browser:
        response = await browser.post("/write/mine")
        assert response.status_code == 200
        cookie = response.cookies.get(DEFAULT_COOKIE)
        assert cookie is not None
        assert "HttpOnly" in response.headers["set-cookie"]
        assert "SameSite=Lax" in response.headers["set-cookie"]
        assert (await browser.get("/read")).json() == {"v": "mine"}, "the cookie brought the token back"
    async with client(build_app(router)) as stranger:
        assert (await stranger.get("/read")).json() == {"v": "initial"}, "no token: any replica, even paused"


@pytest.mark.stack
@pytest.mark.anyio
async def test_another_service_carries_the_token_in_a_header(paused_stack: Stack, router: AsyncReplicaRouter) -> None:
    paused_stack.pause_replay("r1")
    paused_stack.pause_replay("r2")
    async with client(build_app(router)) as service:
        written = await service.post("/write/from-upstream")  # no placeholder needed
        token = written.headers.get(HEADER)
        assert token is not None, "a write answers with the token in the header"
        service.cookies.clear()
        assert (await service.get("/read", headers={HEADER: token})).json() == {"v": "from-upstream"}


@pytest.mark.stack
@pytest.mark.anyio
async def test_a_genuine_token_of_another_cluster_or_timeline_is_a_new_session(
    paused_stack: Stack, router: AsyncReplicaRouter
) -> None:
    """Signed with our key but naming another history: never compared with this
    cluster's positions (no wait, no fallback to the primary), replaced by a live token."""
    paused_stack.pause_replay("r1")
    paused_stack.pause_replay("r2")
    live = int(paused_stack.primary.sql("SELECT system_identifier FROM pg_control_system()")) % (1 << 64)
    now = time.time()
    foreign = {
        "other cluster": SIGNER.dumps(CausalToken(42, 1, 0xFFFFFFFF), now=now),
        "other timeline": SIGNER.dumps(CausalToken(live, 9, 0xFFFFFFFF), now=now),
    }
    for why, token in foreign.items():
        before = router.stats()
        async with client(build_app(router)) as browser:
            browser.cookies.set(DEFAULT_COOKIE, token)
            by_cookie = await browser.get("/read")
            browser.cookies.clear()
            by_header = await browser.get("/read", headers={HEADER: token})
        after = router.stats()
        assert [by_cookie.status_code, by_header.status_code] == [200, 200], why
        assert by_cookie.json() == by_header.json() == {"v": "initial"}, why
        assert after.tokens_reset - before.tokens_reset == 2, why
        assert after.primary_reads == before.primary_reads, f"{why}: no fallback for a position it never had"
        assert after.replica_reads - before.replica_reads == 2, why
        for stored in (by_cookie.cookies.get(DEFAULT_COOKIE), by_header.headers.get(HEADER)):
            carried = SIGNER.loads(stored, now=time.time())
            assert carried is not None, why
            assert (carried.token.system_identifier, carried.token.timeline) == (live, 1), why


@pytest.mark.anyio
async def test_forged_tampered_expired_and_foreign_tokens_make_a_new_session() -> None:
    genuine = SIGNER.dumps(CausalToken(1, 1, 5000), now=2_000_000_000)
    other_key = TokenSigner(b"someone else's secret key here").dumps(CausalToken(1, 1, 5000), now=2_000_000_000)
    expired = SIGNER.dumps(CausalToken(1, 1, 5000), now=1_000_000_000)
    tampered = genuine.replace(".1388.", ".1389.") if ".1388." in genuine else genuine[:-2] + "AA"
    async with client(build_app(None)) as browser:
        for bad in [tampered, other_key, expired, "rs1.garbage", "x" * 5000, '"quoted', "a=b; c"]:
            browser.cookies.clear()
            browser.cookies.set(DEFAULT_COOKIE, bad)
            response = await browser.get("/whoami")
            assert response.status_code == 200, bad
            assert response.json() == {"lsn": None}, bad
            assert response.headers.get("set-cookie", "").startswith(f"{DEFAULT_COOKIE}=; Max-Age=0"), bad
            response = await browser.get("/whoami", headers={HEADER: bad})
            assert response.status_code == 200
            assert response.json() == {"lsn": None}


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(st.text(max_size=400), st.binary(max_size=200))
@pytest.mark.anyio
async def test_any_cookie_or_header_is_a_200_never_a_500(cookie: str, header: bytes) -> None:
    app = build_app(None)
    sent: list[dict[str, Any]] = []
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/whoami",
        "raw_path": b"/whoami",
        "query_string": b"",
        "headers": [
            (b"cookie", f"{DEFAULT_COOKIE}={cookie}".encode("utf-8", "surrogateescape")),
            (b"readscale-token", header),
        ],
        "scheme": "http",
        "server": ("testserver", 80),
        "client": ("127.0.0.1", 1),
        "root_path": "",
        "http_version": "1.1",
        "asgi": {"version": "3.0"},
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    assert sent[0]["status"] == 200


@pytest.mark.anyio
async def test_a_genuine_token_is_restored_and_persist_write_skips_read_only_requests() -> None:
    genuine = SIGNER.dumps(CausalToken(1, 1, 5000), now=time.time())
    async with client(build_app(None, persist="write")) as browser:
        browser.cookies.set(DEFAULT_COOKIE, genuine)
        response = await browser.get("/whoami")
        assert response.json() == {"lsn": 5000}
        assert "set-cookie" not in response.headers, "nothing moved, nothing to store"


def test_middleware_refuses_unsafe_cookie_settings() -> None:
    from readscale.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="Secure"):
        CausalTokenMiddleware(build_app(None), signer=SIGNER, samesite="none", secure=False)
    with pytest.raises(ConfigurationError, match="cookie name"):
        CausalTokenMiddleware(build_app(None), signer=SIGNER, cookie_name="bad name")
