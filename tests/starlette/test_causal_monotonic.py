"""Monotonic reads across the requests of a browser session (issue 12, defect 1): the
ASGI middleware's cookie must carry what the request's reads saw, not what their guards
checked. The scenario is tests/replica_helpers.py's: a request reads late on one node,
the next request (0.3 s later) must not be routed to r2 if r2 is behind that read."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from readscale import AsyncReplicaRouter, TokenSigner
from readscale.replicas._carry import Persist
from readscale.sqlalchemy import async_routing_sessionmaker
from readscale.stack import Stack
from readscale.starlette import CausalTokenMiddleware
from tests.replica_helpers import (
    GAP,
    LATE,
    MONOTONIC_TABLE,
    READ_SQL,
    MonotonicHistory,
    prepare_monotonic,
    r2_delayed,
    router_settings,
    steady_writes,
)

pytestmark = [pytest.mark.stack, pytest.mark.chaos]
SIGNER = TokenSigner(b"test secret for the asgi middleware")
SESSIONS = 12
PAIRS = 4


def url(dsn: str) -> str:
    return dsn.replace("postgresql://", "postgresql+psycopg://", 1)


def build_app(
    router: AsyncReplicaRouter, primary: AsyncEngine, replicas: dict[str, AsyncEngine], persist: Persist
) -> Any:
    make_session = async_routing_sessionmaker(router, primary=primary, replicas=replicas)

    async def late_block(request: Request) -> JSONResponse:
        async with router.read() as conn:
            await asyncio.sleep(LATE)
            row = await (await conn.execute(READ_SQL)).fetchone()
        assert row is not None
        return JSONResponse({"n": row[0], "port": row[1]})

    async def late_orm(request: Request) -> JSONResponse:
        async with make_session() as session:
            await session.execute(text(READ_SQL))
            await asyncio.sleep(LATE)
            n, port = (await session.execute(text(READ_SQL))).one()
        return JSONResponse({"n": n, "port": port})

    async def read(request: Request) -> JSONResponse:
        row = await router.fetch_one(READ_SQL)
        assert row is not None
        return JSONResponse({"n": row[0], "port": row[1]})

    async def sign_in(request: Request) -> JSONResponse:
        async with router.write() as conn:  # any write starts a session that keeps a token
            await conn.execute(f"UPDATE {MONOTONIC_TABLE} SET n = n WHERE id = -1")
        return JSONResponse({})

    app = Starlette(
        routes=[
            Route("/late/block", late_block),
            Route("/late/orm", late_orm),
            Route("/read", read),
            Route("/sign-in", sign_in, methods=["POST"]),
        ]
    )
    return CausalTokenMiddleware(app, signer=SIGNER, secure=False, persist=persist)


@pytest.fixture
async def engines(pg_stack: Stack) -> AsyncIterator[tuple[AsyncEngine, dict[str, AsyncEngine]]]:
    primary = create_async_engine(url(pg_stack.primary.dsn), pool_size=SESSIONS + 2)
    replicas = {r.name: create_async_engine(url(r.dsn), pool_size=SESSIONS + 2) for r in pg_stack.replicas}
    yield primary, replicas
    await primary.dispose()
    for engine in replicas.values():
        await engine.dispose()


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("first", "persist"),
    [
        ("block", "session"),  # the default: a session that wrote keeps its token
        ("orm", "session"),
        ("orm", "advance"),  # every reader keeps a token, no write needed
    ],
)
async def test_the_next_request_never_reads_older_data_than_the_last_one_saw(
    pg_stack: Stack, engines: tuple[AsyncEngine, dict[str, AsyncEngine]], first: str, persist: Persist
) -> None:
    prepare_monotonic(pg_stack)
    history = MonotonicHistory.of(pg_stack)
    settings = router_settings(pg_stack, wait_budget=1.0, max_pool_size=SESSIONS + 5, poll_interval=0.05)
    async with AsyncReplicaRouter(settings) as router:
        app = build_app(router, *engines, persist)

        async def browser(i: int) -> None:
            control = await psycopg.AsyncConnection.connect(pg_stack.replica("r2").dsn, autocommit=True)
            transport = httpx.ASGITransport(app=app)
            try:
                async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
                    if persist == "session":
                        assert (await client.post("/sign-in")).status_code == 200
                    for pair in range(PAIRS):
                        seen = (await client.get(f"/late/{first}")).json()
                        history.record(i, 2 * pair, seen["n"], seen["port"])
                        await asyncio.sleep(GAP)
                        r2 = await (await control.execute(READ_SQL)).fetchone()
                        assert r2 is not None
                        history.control(seen["n"], r2[0])
                        seen = (await client.get("/read")).json()
                        history.record(i, 2 * pair + 1, seen["n"], seen["port"])
            finally:
                await control.close()

        with r2_delayed(pg_stack), steady_writes(pg_stack):
            await asyncio.gather(*(browser(i) for i in range(SESSIONS)))
    assert history.would_go_back() > 0, history.summary()
    assert history.go_backs() == [], history.summary()
