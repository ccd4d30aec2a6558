"""The two apps ``readscale bench http`` loads under uvicorn (not part of the library API).

``managed``: Starlette with readscale's middleware; ``/item/{id}`` declares a public
policy with an edge TTL and a tag, and gets a strong ETag of its body; ``/static/...``
serves fingerprinted assets from ``$READSCALE_BENCH_STATIC``. ``bare``: the same
handler on plain Starlette, with the same Cache-Control written by hand.
"""

from __future__ import annotations

import os

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route

from readscale.http import HttpPolicy, HttpSettings, http_policy
from readscale.http.asgi import HttpCacheMiddleware
from readscale.http.static import AssetManifest, StaticAssets

PAYLOAD = {"id": 0, "name": "item", "price": 1234, "tags": ["a", "b", "c"], "text": "x" * 400}


def _body(item_id: str) -> bytes:
    return orjson.dumps({**PAYLOAD, "id": item_id})


@http_policy(HttpPolicy.public(60, edge_max_age=300, tags=("items",)))
async def managed_item(request: Request) -> Response:
    return Response(_body(request.path_params["id"]), media_type="application/json")


async def bare_item(request: Request) -> Response:
    return Response(
        _body(request.path_params["id"]),
        media_type="application/json",
        headers={"cache-control": "public, max-age=60", "cdn-cache-control": "max-age=300"},
    )


_routes: list[BaseRoute] = [Route("/item/{id}", managed_item)]
if os.environ.get("READSCALE_BENCH_STATIC"):
    _routes.append(Mount("/static", app=StaticAssets(AssetManifest.build(os.environ["READSCALE_BENCH_STATIC"]))))
managed = Starlette(routes=_routes)
managed.add_middleware(HttpCacheMiddleware, settings=HttpSettings(edge="varnish"))
bare = Starlette(routes=[Route("/item/{id}", bare_item)])
