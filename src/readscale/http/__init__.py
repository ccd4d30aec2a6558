"""HTTP caching for Python web apps: policies, validators, 304s, Vary, purge, static assets.

This module holds what every framework shares: the policies and settings
(:class:`HttpPolicy`, :class:`HttpSettings`), the middleware's counters
(:class:`HttpMetrics`), validators and header parsers, fingerprinted static assets
(:class:`AssetManifest`) and :func:`render_vcl` (the package's Varnish VCL,
``readscale.vcl``, aimed at your backend). The edge purgers are in
:mod:`readscale.http.purge`.

The middleware, ``http_policy`` and the helpers a handler calls are in the framework
modules, each importing its framework only when used:

- :mod:`readscale.starlette`: Starlette, FastAPI and any ASGI app (and ``StaticAssets``);
- :mod:`readscale.flask`: Flask and any WSGI app;
- :mod:`readscale.django`: Django.

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
from readscale.http._context import HttpMetrics
from readscale.http._static import AssetManifest
from readscale.http.varnish import render_vcl

__all__ = [
    "DEFAULT_POLICY",
    "ONE_YEAR",
    "AssetManifest",
    "CacheControl",
    "CacheStatus",
    "EntityTag",
    "HttpMetrics",
    "HttpPolicy",
    "HttpSettings",
    "append_cache_status",
    "format_http_date",
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
