"""readscale for Starlette and FastAPI (any ASGI app): the one import path for every ASGI
integration.

    from readscale.starlette import CausalTokenMiddleware, HttpCacheMiddleware, add_tags, http_policy

    app.add_middleware(CausalTokenMiddleware, signer=signer)
    app.add_middleware(HttpCacheMiddleware, settings=HttpSettings(edge="varnish"))   # last: outermost

HTTP caching (the middleware, ``http_policy`` and the helpers a handler calls: policies,
ETags, 304s, Vary, tags) is in ``readscale.starlette._http``; the causal token that
gives a session read-your-writes across requests in ``readscale.starlette._causal``;
:class:`StaticAssets`, the ASGI app serving fingerprinted files, in
``readscale.http._static``. Each is imported the first time one of its names is asked
for (``readscale._shared.lazy``); none needs psycopg. The policies and
``AssetManifest`` are in :mod:`readscale.http`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from readscale._shared.lazy import lazy_exports

if TYPE_CHECKING:
    from readscale.http._static import StaticAssets
    from readscale.starlette._causal import CausalTokenMiddleware
    from readscale.starlette._http import HttpCacheMiddleware, add_tags, check_not_modified, http_policy, use_policy
    from readscale.starlette._response_cache import ResponseCacheMiddleware

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "CausalTokenMiddleware": "readscale.starlette._causal",
        "HttpCacheMiddleware": "readscale.starlette._http",
        "ResponseCacheMiddleware": "readscale.starlette._response_cache",
        "StaticAssets": "readscale.http._static",
        "add_tags": "readscale.starlette._http",
        "check_not_modified": "readscale.starlette._http",
        "http_policy": "readscale.starlette._http",
        "use_policy": "readscale.starlette._http",
    },
)

__all__ = [
    "CausalTokenMiddleware",
    "HttpCacheMiddleware",
    "ResponseCacheMiddleware",
    "StaticAssets",
    "add_tags",
    "check_not_modified",
    "http_policy",
    "use_policy",
]
