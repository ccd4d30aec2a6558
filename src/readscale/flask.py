"""readscale for Flask (and any WSGI app): one import for every integration."""

from readscale.http import HttpPolicy, HttpSettings
from readscale.http.flask import add_tags, check_not_modified, http_policy, use_policy
from readscale.http.wsgi import HttpCacheMiddleware

__all__ = [
    "HttpCacheMiddleware",
    "HttpPolicy",
    "HttpSettings",
    "add_tags",
    "check_not_modified",
    "http_policy",
    "use_policy",
]
