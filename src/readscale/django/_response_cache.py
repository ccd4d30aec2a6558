"""The response cache for Django: list it before ``HttpCacheMiddleware`` (outside it), so
it stores the response with the fields the edge gets::

    # settings.py
    MIDDLEWARE = [
        "readscale.django.ResponseCacheMiddleware",   # outermost
        "readscale.django.HttpCacheMiddleware",
        ...
    ]
    READSCALE_RESPONSE_CACHE = "myproject.caches:responses"   # a Cache or a ResponseCache

A view is cached when its declared policy (``@http_policy``) is ``public`` with a shared
freshness (``edge_max_age``, else ``max_age``); the rules are in
``readscale._core.http.stored``. The view is found before it runs with Django's own
``resolve(request.path_info)``.
"""

from __future__ import annotations

import copy
import importlib
import threading
from collections.abc import Callable
from typing import Any

from django.conf import settings as django_settings
from django.http import HttpRequest, HttpResponse
from django.http.response import HttpResponseBase
from django.urls import Resolver404, resolve

from readscale._core.http import HttpPolicy, HttpSettings, carried_identity, parse_conditionals
from readscale._sync.cache.cache import Cache
from readscale._sync.http.response_cache import Rendered, ResponseCache, ResponseRequest
from readscale.errors import ConfigurationError
from readscale.flask._response_cache import environ_field
from readscale.http._context import HttpContext, policy_of

_CONDITIONAL_META = ("HTTP_IF_NONE_MATCH", "HTTP_IF_MATCH", "HTTP_IF_MODIFIED_SINCE", "HTTP_IF_UNMODIFIED_SINCE")


def _configured() -> ResponseCache:
    target: Any = getattr(django_settings, "READSCALE_RESPONSE_CACHE", None)
    if isinstance(target, str):
        module, _, attr = target.partition(":")
        if not attr:
            raise ConfigurationError(f"settings.READSCALE_RESPONSE_CACHE: {target!r} is not 'module:attribute'")
        target = getattr(importlib.import_module(module), attr)
    if isinstance(target, ResponseCache):
        return target
    if isinstance(target, Cache):
        return ResponseCache(target)
    raise ConfigurationError(
        "settings.READSCALE_RESPONSE_CACHE must be a readscale Cache, a ResponseCache or 'module:attribute' naming one"
    )


def _view_policy(request: HttpRequest) -> HttpPolicy | None:
    try:
        match = resolve(request.path_info)
    except Resolver404:
        return None
    return policy_of(match.func) or policy_of(getattr(match.func, "view_class", None))


class ResponseCacheMiddleware:
    """Serve stored public responses; store the ones a shared cache may keep."""

    sync_capable = True
    async_capable = False

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response
        self.responses = _configured()
        configured = getattr(django_settings, "READSCALE_HTTP", None)
        self.settings: HttpSettings = configured if isinstance(configured, HttpSettings) else HttpSettings()

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        if request.method != "GET":
            return self.get_response(request)
        meta = request.META
        field = environ_field(meta)
        present = frozenset(n for n in self.settings.identity_fields if field(n) is not None)
        identity = carried_identity(self.settings, present, field("cookie"))
        forwarded = "x-forwarded-proto" if field("x-forwarded-proto") else "forwarded" if field("forwarded") else None
        try:
            conditionals = parse_conditionals(field)
            url = f"{request.scheme}://{request.get_host()}{request.get_full_path()}"
        except Exception:
            return self.get_response(request)
        policy = _view_policy(request)
        req = ResponseRequest("GET", url, policy, field, identity, forwarded, conditionals)
        plan = self.responses.plan(req)
        if plan is None:
            return self.get_response(request)
        # The handler runs without the request's preconditions (the cache needs the whole
        # response and answers them itself), on a copy: a stale entry's refresh runs it
        # again after this request has been answered.
        inner_meta = {k: v for k, v in meta.items() if k not in _CONDITIONAL_META}

        # A streaming response is never stored: the first run in this request's thread
        # hands it back as it is (it streams to the client); a background refresh closes it.
        me = threading.get_ident()
        claimed = False
        streamed: list[HttpResponseBase] = []

        def run() -> Rendered:
            nonlocal claimed
            inner = copy.copy(request)
            inner.META = dict(inner_meta)
            if hasattr(inner, "environ"):
                inner.environ = inner.META
            for cached in ("headers", "COOKIES"):
                inner.__dict__.pop(cached, None)
            response = self.get_response(inner)
            if getattr(response, "streaming", False):
                refused = Rendered(response.status_code, (("cache-control", "no-store"),), b"")
                if not claimed and threading.get_ident() == me:
                    claimed = True
                    streamed.append(response)
                else:
                    response.close()
                return refused
            return _render(inner, response)

        served = self.responses.serve(req, plan, run)
        claimed = True
        if streamed:
            return streamed[0]
        response = HttpResponse(served.body, status=served.status)
        for name, value in served.fields:
            if name == "set-cookie":
                # Each cookie of a passed-through response goes back into
                # response.cookies: a header assignment would keep only the last one.
                response.cookies.load(value)
            elif name != "content-length":
                response[name] = value
        if served.drop_body and "content-length" in response:
            del response["content-length"]
        return response


def _render(request: HttpRequest, response: HttpResponseBase) -> Rendered:
    body = bytes(response.content)
    fields = [(k.lower(), v) for k, v in response.items()]
    fields += [("set-cookie", c.output(header="").strip()) for c in response.cookies.values()]
    ctx = getattr(request, "readscale_http", None)
    tags: tuple[str, ...] = ()
    if isinstance(ctx, HttpContext):
        tags = (ctx.policy.tags if ctx.policy is not None else ()) + ctx.tags
    response.close()
    return Rendered(response.status_code, tuple(fields), body, tags)


__all__ = ["ResponseCacheMiddleware"]
