"""readscale for FastAPI: the lifespan that opens and closes what readscale connects,
and the dependencies that hand it to a route.

    from readscale.fastapi import CacheDep, RouterDep, lifespan
    from readscale.starlette import CausalTokenMiddleware

    app = FastAPI(lifespan=lifespan(cache=cache, router=router, flusher=flusher))
    app.add_middleware(CausalTokenMiddleware, signer=signer)

    @app.get("/items/{item_id}")
    async def item(item_id: int, cache: CacheDep, router: RouterDep) -> dict[str, int]: ...

FastAPI is Starlette underneath: the middleware, ``http_policy`` and the helpers a
handler calls are in :mod:`readscale.starlette`, and work unchanged on a FastAPI app.
This module holds only what needs FastAPI itself (``pip install 'readscale[fastapi]'``):
the lifespan (``readscale.fastapi._lifespan``, which imports no FastAPI and works for a
Starlette app too) and the dependencies (``readscale.fastapi._deps``). Each module is
imported the first time one of its names is asked for (``readscale._shared.lazy``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from readscale._shared.lazy import lazy_exports

if TYPE_CHECKING:
    from readscale.fastapi._deps import (
        CacheDep,
        RouterDep,
        WriteBehindDep,
        get_cache,
        get_router,
        get_write_behind,
    )
    from readscale.fastapi._lifespan import Resources, lifespan

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "CacheDep": "readscale.fastapi._deps",
        "Resources": "readscale.fastapi._lifespan",
        "RouterDep": "readscale.fastapi._deps",
        "WriteBehindDep": "readscale.fastapi._deps",
        "get_cache": "readscale.fastapi._deps",
        "get_router": "readscale.fastapi._deps",
        "get_write_behind": "readscale.fastapi._deps",
        "lifespan": "readscale.fastapi._lifespan",
    },
)

__all__ = [
    "CacheDep",
    "Resources",
    "RouterDep",
    "WriteBehindDep",
    "get_cache",
    "get_router",
    "get_write_behind",
    "lifespan",
]
