"""readscale for Django: the one import path for every Django integration.

    # settings.py
    from readscale.django import replica_settings

    MIDDLEWARE = [
        "readscale.django.ResponseCacheMiddleware",  # optional: stores public responses (docs/response-cache.md)
        "readscale.django.HttpCacheMiddleware",      # outside GZipMiddleware
        "readscale.django.CausalTokenMiddleware",
        ...
    ]
    DATABASE_ROUTERS = ["readscale.django.ReplicaDatabaseRouter"]
    READSCALE_REPLICA_SETTINGS = replica_settings(DATABASES, primary="default", replicas=["r1", "r2"])

    # views.py
    from readscale.django import add_tags, check_not_modified, http_policy

HTTP caching (policies, ETags, 304s, Vary, tags) is in ``readscale.django._http``; the
replica database router and the causal-token middleware in ``readscale.django._replicas``.
Each is imported the first time one of its names is asked for
(``readscale._shared.lazy``), so the HTTP middleware needs Django only, and the router
and the token middleware also psycopg (``pip install 'readscale[django,postgres]'``).
The policies themselves (``HttpPolicy``, ``HttpSettings``) are in :mod:`readscale.http`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from readscale._shared.lazy import lazy_exports

if TYPE_CHECKING:
    from readscale.django._http import HttpCacheMiddleware, add_tags, check_not_modified, http_policy, use_policy
    from readscale.django._replicas import CausalTokenMiddleware, ReplicaDatabaseRouter, replica_settings, shared_router
    from readscale.django._response_cache import ResponseCacheMiddleware

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "HttpCacheMiddleware": "readscale.django._http",
        "add_tags": "readscale.django._http",
        "check_not_modified": "readscale.django._http",
        "http_policy": "readscale.django._http",
        "use_policy": "readscale.django._http",
        "ResponseCacheMiddleware": "readscale.django._response_cache",
        "CausalTokenMiddleware": "readscale.django._replicas",
        "ReplicaDatabaseRouter": "readscale.django._replicas",
        "replica_settings": "readscale.django._replicas",
        "shared_router": "readscale.django._replicas",
    },
)

__all__ = [
    "CausalTokenMiddleware",
    "HttpCacheMiddleware",
    "ReplicaDatabaseRouter",
    "ResponseCacheMiddleware",
    "add_tags",
    "check_not_modified",
    "http_policy",
    "replica_settings",
    "shared_router",
    "use_policy",
]
