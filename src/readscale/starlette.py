"""readscale for Starlette and FastAPI: one import for every integration.

    from readscale.starlette import HttpCacheMiddleware, http_policy

HTTP caching (policies, ETags, 304s, Vary, tags) comes from :mod:`readscale.http.asgi`;
static assets from :mod:`readscale.http.static`; the causal token that gives a session
read-your-writes across requests from :mod:`readscale.replicas.asgi`.
"""

from readscale.http import HttpMetrics, HttpPolicy, HttpSettings, http_policy
from readscale.http.asgi import HttpCacheMiddleware, add_tags, check_not_modified, use_policy
from readscale.http.static import AssetManifest, StaticAssets
from readscale.replicas.asgi import CausalTokenMiddleware

__all__ = [
    "AssetManifest",
    "CausalTokenMiddleware",
    "HttpCacheMiddleware",
    "HttpMetrics",
    "HttpPolicy",
    "HttpSettings",
    "StaticAssets",
    "add_tags",
    "check_not_modified",
    "http_policy",
    "use_policy",
]
