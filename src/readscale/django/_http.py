"""Django: middleware, view decorator and helpers.

Put the middleware first in ``MIDDLEWARE`` (outermost, outside GZipMiddleware)::

    MIDDLEWARE = ["readscale.django.HttpCacheMiddleware", ...]
    READSCALE_HTTP = HttpSettings(edge="varnish")     # optional

    @http_policy(HttpPolicy.public(60, edge_max_age=600))
    def product(request, pid):
        add_tags(request, f"product:{pid}")
        check_not_modified(request, etag_from=Product.objects.values_list("version", flat=True).get(pk=pid))
        ...

``request.META`` and ``request.headers`` record what the view reads: a read its policy
did not declare is logged once and counted (declared variance decides, see
:mod:`readscale._core.http.policy`). Django's session and CSRF middleware read Cookie
on every request (list it in ``HttpSettings(framework_reads=...)``); when a view
touches the session, Django itself adds ``Vary: Cookie``, and a public response that
varies on a cookie the request carried is sent private. The middleware is synchronous.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from readscale._core.http import HttpPolicy, HttpSettings
from readscale.errors import ConfigurationError, HeaderError
from readscale.flask import _wsgi as wsgi
from readscale.http._context import F, HttpContext, HttpMetrics, policy_marker, policy_of
from readscale.http._engine import bad_request, finish_str
from readscale.http._tracker import tracking_cookies

try:
    from django.conf import settings as django_settings
    from django.http import HttpRequest, HttpResponse, HttpResponseBase
    from django.http.request import HttpHeaders
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("readscale.django needs Django: pip install 'readscale[django]'") from exc

__all__ = ["HttpCacheMiddleware", "add_tags", "check_not_modified", "http_policy", "use_policy"]


class _TrackingHeaders(HttpHeaders):  # type: ignore[misc]
    """``request.headers`` that records lookups (built from the untracked META)."""

    def __init__(self, meta: dict[str, Any], ctx: HttpContext) -> None:
        super().__init__(meta)
        self._ctx = ctx

    def __getitem__(self, key: str) -> str:
        self._ctx.note(key.lower())
        value: str = super().__getitem__(key)
        return value

    def __contains__(self, key: object) -> bool:
        if isinstance(key, str):
            self._ctx.note(key.lower())
        return bool(super().__contains__(key))

    def __iter__(self) -> Iterator[str]:
        if not self._ctx.paused:
            self._ctx.add_walked([k.lower() for k in self._store])
        return iter(list(super().__iter__()))


def _plumbing_cookies(settings: HttpSettings) -> frozenset[str]:
    """The cookies Django's own middleware reads on every request (sessions, CSRF),
    and the causal token's: a lookup of these is plumbing, not the view's read."""
    names = {getattr(django_settings, "SESSION_COOKIE_NAME", "sessionid")}
    if not getattr(django_settings, "CSRF_USE_SESSIONS", False):
        names.add(getattr(django_settings, "CSRF_COOKIE_NAME", "csrftoken"))
    return frozenset(names) | frozenset(settings.ignored_cookies)


class HttpCacheMiddleware:
    """Caching fields, validators and 304s for every Django response."""

    sync_capable = True
    async_capable = False

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response
        configured = getattr(django_settings, "READSCALE_HTTP", None)
        if configured is not None and not isinstance(configured, HttpSettings):
            raise ConfigurationError("settings.READSCALE_HTTP must be a readscale.http.HttpSettings")
        self.settings: HttpSettings = configured or HttpSettings()
        self.metrics = HttpMetrics()
        self._plumbing = _plumbing_cookies(self.settings)

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        try:
            ctx, tracked = wsgi.prepare_environ(request.META, self.settings)
        except HeaderError as exc:
            self.metrics.bump("header_errors")
            status, headers, body = bad_request(exc)
            response = HttpResponse(body, status=status)
            for name, value in headers:
                response[name] = value
            return response
        plain_meta = dict(request.META)
        request.META = tracked
        if hasattr(request, "environ"):
            request.environ = tracked  # WSGIRequest reads COOKIES from environ, not META
        request.headers = _TrackingHeaders(plain_meta, ctx)
        request.readscale_http = ctx
        # Parsing Cookie is not a read; a lookup in request.COOKIES is, except of the
        # cookies Django's own middleware reads (sessions, CSRF; their use shows as
        # session.accessed and Django's Vary: Cookie).
        ctx.plumbing_cookies = self._plumbing
        ctx.paused += 1
        try:
            parsed = request.COOKIES
        finally:
            ctx.paused -= 1
        request.COOKIES = tracking_cookies(parsed, ctx)
        response = self.get_response(request)
        return self._finish(ctx, response)

    def process_view(self, request: HttpRequest, view_func: Callable[..., Any], args: Any, kwargs: Any) -> None:
        ctx = getattr(request, "readscale_http", None)
        if isinstance(ctx, HttpContext):
            if ctx.policy is None:
                ctx.policy = policy_of(view_func)
            ctx.route = f"{ctx.method} {getattr(view_func, '__qualname__', request.path)}"

    def _finish(self, ctx: HttpContext, response: HttpResponseBase) -> HttpResponseBase:
        streaming = getattr(response, "streaming", False)
        body = None if streaming else bytes(response.content)
        headers = [(k.lower(), v) for k, v in response.items()]
        cookies = [("set-cookie", c.output(header="").strip()) for c in response.cookies.values()]
        status, new_headers, drop = finish_str(
            ctx, self.settings, self.metrics, response.status_code, headers + cookies, body
        )
        for name, _ in headers:
            del response[name]
        for name, value in new_headers:
            if name == "set-cookie":
                continue  # Django renders response.cookies itself
            response[name] = value
        response.status_code = status
        if drop:
            if streaming:
                response.streaming_content = []
            else:
                response.content = b""
            if "content-length" in response:
                del response["content-length"]
        return response


def http_policy(policy: HttpPolicy | None = None, /, **kwargs: Any) -> Callable[[F], F]:
    """Declare a view's caching policy: ``@http_policy(HttpPolicy.public(60))`` or
    ``@http_policy(visibility="public", max_age=60)``. The view is returned unchanged;
    the middleware finds the policy on the view Django resolved."""
    return policy_marker(policy, kwargs)


def _ctx(request: HttpRequest) -> HttpContext:
    ctx = getattr(request, "readscale_http", None)
    if not isinstance(ctx, HttpContext):
        raise ConfigurationError("no readscale HTTP context: add readscale.django.HttpCacheMiddleware")
    return ctx


def use_policy(request: HttpRequest, policy: HttpPolicy) -> None:
    """Set this response's policy from inside the view (wins over the decorator)."""
    _ctx(request).policy = policy


def add_tags(request: HttpRequest, *tags: str) -> None:
    """Tag this response for purging at the edge (sent only if it is shared)."""
    _ctx(request).add_tags(tags)


def check_not_modified(
    request: HttpRequest, *, etag_from: object = None, last_modified_from: object = None
) -> HttpResponse | None:
    """An empty 304/412 response to return at once, or ``None`` to go on rendering.

    ``if (r := check_not_modified(request, etag_from=obj.version)): return r``
    """
    _ctx(request)
    outcome = wsgi.evaluate_validators(request.META, etag_from, last_modified_from)
    status = wsgi.outcome_status(outcome)
    return HttpResponse(status=status) if status is not None else None
