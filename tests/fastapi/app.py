"""The FastAPI app of tests/fastapi: the cache, the router and the causal token wired the
way docs/guides/fastapi.md teaches, through readscale.fastapi's lifespan and dependencies.

``build_app`` is called in-process by the tests; ``app`` (module level) is the one uvicorn
serves, configured from the environment (``RS_REDIS_URL``, ``RS_PRIMARY``, ``RS_REPLICAS``
as JSON, ``RS_CLIENT_NAME``: the Redis client name and PostgreSQL application_name that
the test counts connections by).
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from readscale import (
    AsyncCache,
    AsyncInvalidationBus,
    AsyncReplicaRouter,
    MemoryStore,
    RedisSettings,
    ReplicaSettings,
    TokenSigner,
)
from readscale.backends import AsyncRedisBackend
from readscale.fastapi import CacheDep, RouterDep, lifespan
from readscale.starlette import CausalTokenMiddleware

SIGNER = TokenSigner(b"test secret for the fastapi app")


def named(dsn: str, name: str) -> str:
    return f"{dsn}{'&' if '?' in dsn else '?'}application_name={name}"


def build_app(redis_url: str, primary: str, replicas: dict[str, str], name: str) -> FastAPI:
    redis = RedisSettings(url=redis_url, client_name=name)
    cache = AsyncCache(AsyncRedisBackend(redis), l1=MemoryStore(1000), bus=AsyncInvalidationBus(redis), prefix=name)
    router = AsyncReplicaRouter(
        ReplicaSettings(
            primary=named(primary, name),
            replicas={k: named(v, name) for k, v in replicas.items()},
            wait_budget=0.05,
            seed=1,
            max_pool_size=4,
        )
    )

    @asynccontextmanager
    async def mine(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        yield {"started_by": "inner"}
        print("readscale-test: shutdown", flush=True)  # the uvicorn test reads it in the log

    app = FastAPI(lifespan=lifespan(cache=cache, router=router, inner=mine))

    @app.post("/items/{item_id}")
    async def set_price(item_id: int, price: int, cache: CacheDep, router: RouterDep) -> dict[str, int]:
        async with router.write() as conn:
            await conn.execute("UPDATE fastapi_items SET price = %s WHERE id = %s", (price, item_id))
        token = router.context.token
        await cache.invalidate(f"item:{item_id}", lsn=None if token is None else token.lsn)
        return {"id": item_id, "price": price}

    @app.get("/items/{item_id}")
    async def item(item_id: int, cache: CacheDep, router: RouterDep) -> dict[str, Any]:
        async def load() -> int:
            row = await router.fetch_one("SELECT price FROM fastapi_items WHERE id = %s", (item_id,))
            assert row is not None
            return int(row[0])

        return {"id": item_id, "price": await cache.get_or_load(f"item:{item_id}", load)}

    @app.get("/bus")
    async def bus(cache: CacheDep) -> dict[str, bool]:
        return {"started": cache.coherence.bus is not None and cache.coherence.bus.started}

    app.add_middleware(CausalTokenMiddleware, signer=SIGNER, secure=False)
    return app


def from_env() -> FastAPI | None:
    if "RS_REDIS_URL" not in os.environ:
        return None
    return build_app(
        os.environ["RS_REDIS_URL"],
        os.environ["RS_PRIMARY"],
        json.loads(os.environ["RS_REPLICAS"]),
        os.environ["RS_CLIENT_NAME"],
    )


app = from_env()
