"""HTTP caching for Python web apps: policies, validators, 304s, Vary, purge, static assets.

Framework integrations live in submodules, each importing its framework only when used:

- :mod:`readscale.http.asgi`: Starlette / FastAPI middleware and handler helpers.
- :mod:`readscale.http.wsgi`: WSGI middleware (Flask and any WSGI app).
- :mod:`readscale.http.flask`: the Flask view decorator and helpers.
- :mod:`readscale.http.django`: Django middleware, decorator and helpers.
- :mod:`readscale.http.static`: fingerprinted static assets (``immutable``).
- :mod:`readscale.http.purge`: edge purgers (Varnish, Fastly, Cloudflare), the purge
  queue that sends after commit, and prewarming.
- :func:`render_vcl` (here): the package's Varnish VCL (``readscale.vcl``, see
  ``readscale.http.varnish``) aimed at your backend.

The policy itself is pure and lives in :mod:`readscale._core.http`; its public names
are re-exported here.
"""

from readscale._core.http import (
    DEFAULT_POLICY,
    ONE_YEAR,
    CacheControl,
    CacheStatus,
    EntityTag,
    HttpPolicy,
    HttpSettings,
    append_cache_status,
    format_http_date,
    parse_cache_control,
    parse_cache_status,
    parse_entity_tag,
    parse_http_date,
    parse_tag_list,
    strong_etag,
    version_etag,
    wire_tag,
)
from readscale.http._context import HttpMetrics, http_policy
from readscale.http.varnish import render_vcl

__all__ = [
    "DEFAULT_POLICY",
    "ONE_YEAR",
    "CacheControl",
    "CacheStatus",
    "EntityTag",
    "HttpMetrics",
    "HttpPolicy",
    "HttpSettings",
    "append_cache_status",
    "format_http_date",
    "http_policy",
    "parse_cache_control",
    "parse_cache_status",
    "parse_entity_tag",
    "parse_http_date",
    "parse_tag_list",
    "render_vcl",
    "strong_etag",
    "version_etag",
    "wire_tag",
]
