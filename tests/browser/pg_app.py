"""Starlette with docs/http.md's recommended stack, over the stack's real PostgreSQL: a
primary and streaming replicas whose replay the test delays, read through readscale's
replica router. A read shows the session's write only if its causal token came back
(the router then waits for a replica that replayed it, or reads the primary).

The DSNs come from the environment (READSCALE_BROWSER_PRIMARY, READSCALE_BROWSER_REPLICAS,
comma-separated); the router opens on the first request (uvicorn runs without lifespan).
"""

from __future__ import annotations

import asyncio
import os

from starlette.applications import Starlette
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from tests.http.stacks._repo import SECRET, signer

from readscale import AsyncReplicaRouter, ReplicaSettings
from readscale.http import HttpSettings
from readscale.starlette import CausalTokenMiddleware, HttpCacheMiddleware

TABLE = "browser_notes"
_opened: dict[str, AsyncReplicaRouter] = {}
_lock = asyncio.Lock()


async def router() -> AsyncReplicaRouter:
    async with _lock:
        if "router" not in _opened:
            replicas = [dsn for dsn in os.environ["READSCALE_BROWSER_REPLICAS"].split(",") if dsn]
            settings = ReplicaSettings(primary=os.environ["READSCALE_BROWSER_PRIMARY"], replicas=replicas)
            _opened["router"] = await AsyncReplicaRouter(settings).__aenter__()
        return _opened["router"]


async def home(request: Request) -> PlainTextResponse:
    return PlainTextResponse("home")


async def write(request: Request) -> PlainTextResponse:
    async with (await router()).write() as conn:
        await conn.execute(f"UPDATE {TABLE} SET v = %s WHERE id = 1", (request.path_params["value"],))
    return PlainTextResponse("written")


async def read(request: Request) -> PlainTextResponse:
    row = await (await router()).fetch_one(f"SELECT v FROM {TABLE} WHERE id = 1")
    return PlainTextResponse(str(row[0]) if row else "missing")


app = Starlette(routes=[Route("/", home), Route("/write/{value}", write, methods=["POST"]), Route("/read", read)])
app.add_middleware(SessionMiddleware, secret_key=SECRET)
app.add_middleware(CausalTokenMiddleware, signer=signer)
app.add_middleware(HttpCacheMiddleware, settings=HttpSettings(edge="varnish", framework_reads={"cookie"}))
