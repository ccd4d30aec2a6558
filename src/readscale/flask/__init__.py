"""readscale for Flask (and any WSGI app): the one import path for every WSGI integration.

    from readscale.flask import CausalTokenMiddleware, HttpCacheMiddleware, add_tags, http_policy

    app.wsgi_app = HttpCacheMiddleware(CausalTokenMiddleware(app.wsgi_app, signer=signer))

    @app.get("/products/<int:pid>")
    @http_policy(HttpPolicy.public(60, edge_max_age=600))
    def product(pid): ...

The middlewares are plain WSGI (``readscale.flask._wsgi``, ``readscale.flask._causal``)
and need no Flask; the view decorator and the helpers a view calls
(``readscale.flask._views``) need Flask. Each module is imported the first time one of
its names is asked for (``readscale._shared.lazy``). The policies themselves
(``HttpPolicy``, ``HttpSettings``) are in :mod:`readscale.http`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from readscale._shared.lazy import lazy_exports

if TYPE_CHECKING:
    from readscale.flask._causal import CausalTokenMiddleware
    from readscale.flask._response_cache import ResponseCacheMiddleware
    from readscale.flask._views import add_tags, check_not_modified, http_policy, use_policy
    from readscale.flask._wsgi import HttpCacheMiddleware

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "CausalTokenMiddleware": "readscale.flask._causal",
        "HttpCacheMiddleware": "readscale.flask._wsgi",
        "ResponseCacheMiddleware": "readscale.flask._response_cache",
        "add_tags": "readscale.flask._views",
        "check_not_modified": "readscale.flask._views",
        "http_policy": "readscale.flask._views",
        "use_policy": "readscale.flask._views",
    },
)

__all__ = [
    "CausalTokenMiddleware",
    "HttpCacheMiddleware",
    "ResponseCacheMiddleware",
    "add_tags",
    "check_not_modified",
    "http_policy",
    "use_policy",
]
