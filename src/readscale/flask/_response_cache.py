"""The response cache for WSGI apps (Flask): wrap it around :class:`HttpCacheMiddleware`
(outside it), so it stores the response with the fields the edge gets::

    app.wsgi_app = HttpCacheMiddleware(app.wsgi_app, settings=settings)
    app.wsgi_app = ResponseCacheMiddleware(app.wsgi_app, cache=cache, app=app, settings=settings)

A view is cached when its declared policy (``readscale.flask.http_policy``) is
``public`` with a shared freshness; the rules are in ``readscale._core.http.stored``.
The view is found before it runs with Flask's own URL map (``app=``); any other WSGI
app passes ``resolve=`` (the environ to the route's :class:`HttpPolicy`, or None).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from readscale._core.cache.policy import CachePolicy
from readscale._core.http import HttpPolicy, HttpSettings, carried_identity, parse_conditionals
from readscale._sync.cache.cache import Cache
from readscale._sync.http.response_cache import DEFAULT_STORAGE, Rendered, ResponseCache, ResponseRequest
from readscale.errors import ConfigurationError, HeaderError
from readscale.flask._wsgi import CONTEXT_SLOT, StartResponse, WSGIApp, _status_line
from readscale.http._context import HttpContext, policy_of

_CONDITIONAL = frozenset({"HTTP_IF_NONE_MATCH", "HTTP_IF_MATCH", "HTTP_IF_MODIFIED_SINCE", "HTTP_IF_UNMODIFIED_SINCE"})


def environ_field(environ: dict[str, Any]) -> Callable[[str], str | None]:
    """``field(name)``: a request field's value from a WSGI environ (or Django's META)."""

    def field(name: str) -> str | None:
        key = name.upper().replace("-", "_")
        value = environ.get(key if key in ("CONTENT_TYPE", "CONTENT_LENGTH") else "HTTP_" + key)
        return None if value is None else str(value)

    return field


def request_url(environ: dict[str, Any], field: Callable[[str], str | None]) -> str:
    path = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
    query = environ.get("QUERY_STRING", "")
    url = f"{environ.get('wsgi.url_scheme', 'http')}://{field('host') or environ.get('SERVER_NAME', '')}{path}"
    return f"{url}?{query}" if query else url


def _flask_resolver(app: Any) -> Callable[[dict[str, Any]], HttpPolicy | None]:
    from werkzeug.exceptions import HTTPException

    def resolve(environ: dict[str, Any]) -> HttpPolicy | None:
        try:
            endpoint, _ = app.url_map.bind_to_environ(environ).match()
        except HTTPException:
            return None
        return policy_of(app.view_functions.get(endpoint))

    return resolve


class ResponseCacheMiddleware:
    """Serve stored public responses; store the ones a shared cache may keep."""

    def __init__(
        self,
        wsgi_app: WSGIApp,
        *,
        cache: Cache | None = None,
        response_cache: ResponseCache | None = None,
        settings: HttpSettings | None = None,
        app: Any = None,
        resolve: Callable[[dict[str, Any]], HttpPolicy | None] | None = None,
        storage: CachePolicy = DEFAULT_STORAGE,
    ) -> None:
        if response_cache is None:
            if cache is None:
                raise ConfigurationError("ResponseCacheMiddleware needs cache= (a Cache) or response_cache=")
            response_cache = ResponseCache(cache, storage=storage)
        if resolve is None:
            if app is None:
                raise ConfigurationError("ResponseCacheMiddleware needs app= (the Flask app) or resolve=")
            resolve = _flask_resolver(app)
        self.wsgi_app = wsgi_app
        self.responses = response_cache
        self.settings = settings or HttpSettings()
        self.resolve = resolve

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Any:
        if environ.get("REQUEST_METHOD") != "GET":
            return self.wsgi_app(environ, start_response)
        field = environ_field(environ)
        present = frozenset(n for n in self.settings.identity_fields if field(n) is not None)
        identity = carried_identity(self.settings, present, field("cookie"))
        forwarded = next((n for n in ("x-forwarded-proto", "forwarded") if field(n) is not None), None)
        try:
            conditionals = parse_conditionals(field)
        except HeaderError:
            return self.wsgi_app(environ, start_response)  # the HTTP middleware answers 400
        request = ResponseRequest(
            "GET", request_url(environ, field), self.resolve(environ), field, identity, forwarded, conditionals
        )
        plan = self.responses.plan(request)
        if plan is None:
            return self.wsgi_app(environ, start_response)
        # The app runs without the request's preconditions (the cache needs the whole
        # response and answers them itself), on a copy of the environ.
        inner = {k: v for k, v in environ.items() if k not in _CONDITIONAL}

        def run() -> Rendered:
            return _render(self.wsgi_app, dict(inner))

        served = self.responses.serve(request, plan, run)
        fields = [(k, v) for k, v in served.fields if k != "content-length"]
        if not (served.drop_body and served.status == 304):
            fields.append(("content-length", str(len(served.body))))
        start_response(_status_line(served.status), fields)
        return [served.body]


def _render(app: WSGIApp, environ: dict[str, Any]) -> Rendered:
    captured: dict[str, Any] = {}
    written: list[bytes] = []
    slot: list[HttpContext] = []
    environ[CONTEXT_SLOT] = slot

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], object]:
        captured["status"] = status
        captured["headers"] = headers
        return written.append

    result = app(environ, start_response)
    try:
        chunks = [*written, *result]
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    fields = tuple((k.lower(), v) for k, v in captured.get("headers", ()))
    tags: tuple[str, ...] = ()
    if slot:
        ctx = slot[-1]
        tags = (ctx.policy.tags if ctx.policy is not None else ()) + ctx.tags
    status = int(str(captured.get("status", "500")).split(" ", 1)[0])
    return Rendered(status, fields, b"".join(chunks), tags)


__all__ = ["ResponseCacheMiddleware", "environ_field"]
