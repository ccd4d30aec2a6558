"""FastAPI dependencies that hand a route what :func:`~readscale.fastapi.lifespan`
opened: the cache, the replica router, the write-behind producer.

    @app.get("/items/{item_id}")
    async def item(item_id: int, cache: CacheDep, router: RouterDep) -> dict[str, int]: ...

They read the lifespan state (``request.state.readscale``), so a route needs no global
and a test can run two apps side by side. Each is an ``async def``: FastAPI runs a plain
``def`` dependency in its thread pool, a hop per request for a lookup. A route whose app
was not started by the lifespan gets a :class:`~readscale.errors.ConfigurationError`
naming the fix, not an ``AttributeError`` from deep inside Starlette.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from fastapi import Depends
from starlette.requests import HTTPConnection

from readscale.errors import ConfigurationError
from readscale.fastapi._lifespan import STATE_KEY, Resources

if TYPE_CHECKING:
    from readscale._async.cache.cache import AsyncCache
    from readscale._async.replicas.router import AsyncReplicaRouter
    from readscale._async.writebehind.producer import AsyncWriteBehind

__all__ = ["CacheDep", "RouterDep", "WriteBehindDep", "get_cache", "get_router", "get_write_behind"]


def _resources(connection: HTTPConnection) -> Resources:
    resources = getattr(connection.state, STATE_KEY, None)
    if not isinstance(resources, Resources):
        raise ConfigurationError(
            "readscale's dependencies need the app's lifespan: FastAPI(lifespan=readscale.fastapi.lifespan(...)) "
            "(and a client that runs it: `with TestClient(app)`, uvicorn with --lifespan on or auto)"
        )
    return resources


def _missing(what: str) -> ConfigurationError:
    return ConfigurationError(f"the app's lifespan was given no {what}: readscale.fastapi.lifespan({what}=...)")


async def get_cache(connection: HTTPConnection) -> AsyncCache:
    """The cache the lifespan opened."""
    cache = _resources(connection).cache
    if cache is None:
        raise _missing("cache")
    return cache


async def get_router(connection: HTTPConnection) -> AsyncReplicaRouter:
    """The replica router the lifespan opened (its reads follow the request's causal
    context: put :class:`~readscale.starlette.CausalTokenMiddleware` on the app)."""
    router = _resources(connection).router
    if router is None:
        raise _missing("router")
    return router


async def get_write_behind(connection: HTTPConnection) -> AsyncWriteBehind:
    """The write-behind producer the lifespan checked."""
    write_behind = _resources(connection).write_behind
    if write_behind is None:
        raise _missing("write_behind")
    return write_behind


CacheDep = Annotated["AsyncCache", Depends(get_cache)]
RouterDep = Annotated["AsyncReplicaRouter", Depends(get_router)]
WriteBehindDep = Annotated["AsyncWriteBehind", Depends(get_write_behind)]
