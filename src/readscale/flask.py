"""readscale for Flask (and any WSGI app): one import for every integration.

app.wsgi_app = HttpCacheMiddleware(CausalTokenMiddleware(app.wsgi_app, signer=signer))
"""

from readscale.http import HttpMetrics, HttpPolicy, HttpSettings
from readscale.http.flask import add_tags, check_not_modified, http_policy, use_policy
from readscale.http.wsgi import HttpCacheMiddleware
from readscale.replicas.wsgi import CausalTokenMiddleware

__all__ = [
    "CausalTokenMiddleware",
    "HttpCacheMiddleware",
    "HttpMetrics",
    "HttpPolicy",
    "HttpSettings",
    "add_tags",
    "check_not_modified",
    "http_policy",
    "use_policy",
]
