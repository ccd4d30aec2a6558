"""readscale for Django: one import for every integration (add the middleware to
``MIDDLEWARE``; decorate views with ``http_policy``)."""

from readscale.http import HttpPolicy, HttpSettings
from readscale.http.django import HttpCacheMiddleware, add_tags, check_not_modified, http_policy, use_policy

__all__ = [
    "HttpCacheMiddleware",
    "HttpPolicy",
    "HttpSettings",
    "add_tags",
    "check_not_modified",
    "http_policy",
    "use_policy",
]
