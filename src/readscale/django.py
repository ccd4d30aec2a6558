"""readscale for Django: one import for every integration (add the middleware to
``MIDDLEWARE``; decorate views with ``http_policy``; route reads to replicas with
``ReplicaDatabaseRouter`` in ``DATABASE_ROUTERS``)."""

from readscale.http import HttpPolicy, HttpSettings
from readscale.http.django import HttpCacheMiddleware, add_tags, check_not_modified, http_policy, use_policy
from readscale.replicas.django import CausalTokenMiddleware, ReplicaDatabaseRouter, replica_settings, shared_router

__all__ = [
    "CausalTokenMiddleware",
    "HttpCacheMiddleware",
    "HttpPolicy",
    "HttpSettings",
    "ReplicaDatabaseRouter",
    "add_tags",
    "check_not_modified",
    "http_policy",
    "replica_settings",
    "shared_router",
    "use_policy",
]
