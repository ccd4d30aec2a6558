"""WSGI middleware (Flask, and any WSGI app): the same policy as the ASGI middleware.

Wrap the outermost WSGI callable, outside any compressor::

    app.wsgi_app = HttpCacheMiddleware(app.wsgi_app, settings=HttpSettings(edge="varnish"))

The environ handed to the app records which ``HTTP_*`` fields are read (Vary); the
body is buffered up to ``etag_max_bytes`` to derive a strong ETag; a malformed
If-None-Match is a 400. Per-view policies come from Flask's
decorator (``readscale.flask.http_policy``) or :func:`use_policy` on the environ.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from readscale._core.http import (
    HttpPolicy,
    HttpSettings,
    NotModified,
    Outcome,
    PreconditionFailed,
    carried_identity,
    parse_conditionals,
)
from readscale.errors import ConfigurationError, HeaderError
from readscale.http._context import CONTEXT_KEY, HttpContext, HttpMetrics
from readscale.http._engine import bad_request, finish_str
from readscale.http._tracker import TrackingEnviron

# Where an outer middleware (the response cache) asks for this request's context: a list
# the context is appended to (the app sees a copy of the environ, not the one passed in).
CONTEXT_SLOT = "readscale.http.slot"

StartResponse = Callable[..., Callable[[bytes], object]]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

_CONDITIONAL_KEYS = {
    "HTTP_IF_NONE_MATCH": "if-none-match",
    "HTTP_IF_MATCH": "if-match",
    "HTTP_IF_MODIFIED_SINCE": "if-modified-since",
    "HTTP_IF_UNMODIFIED_SINCE": "if-unmodified-since",
}


def _status_line(status: int) -> str:
    from http import HTTPStatus

    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return str(status)


def prepare_environ(environ: dict[str, Any], settings: HttpSettings) -> tuple[HttpContext, TrackingEnviron]:
    """Parse preconditions (raises HeaderError), drop untrusted forwarding fields, track reads."""
    original = {k: v for k, v in environ.items() if k.startswith("HTTP_") and isinstance(v, str)}

    def field(name: str) -> str | None:
        value = original.get("HTTP_" + name.upper().replace("-", "_"))
        return value if isinstance(value, str) else None

    ctx = HttpContext(environ.get("REQUEST_METHOD", "GET"), settings, field)
    ctx.endpoint = environ.get("PATH_INFO", "/")
    ctx.conditionals = parse_conditionals(lambda name: _get_conditional(environ, name))
    # A WSGI server or an outer middleware (werkzeug's ProxyFix) may have taken the
    # scheme from these before we run: a response then varies on the one carried.
    if "HTTP_X_FORWARDED_PROTO" in original:
        ctx.forwarded = "x-forwarded-proto"
    elif "HTTP_FORWARDED" in original:
        ctx.forwarded = "forwarded"
    if environ.get("REMOTE_ADDR", "") not in settings.trusted_proxies:
        for key in [k for k in environ if k.startswith("HTTP_X_FORWARDED_") or k == "HTTP_FORWARDED"]:
            del environ[key]
    present = frozenset(k[5:].lower().replace("_", "-") for k in original)
    ctx.identity_present = carried_identity(settings, present, original.get("HTTP_COOKIE"))
    ctx.request_authorization = "authorization" in present
    tracked = TrackingEnviron(environ, ctx)
    dict.__setitem__(tracked, CONTEXT_KEY, ctx)
    slot = environ.get(CONTEXT_SLOT)
    if isinstance(slot, list):  # an outer response cache reads the route's tags from it
        slot.append(ctx)
    return ctx, tracked


def _get_conditional(environ: dict[str, Any], name: str) -> str | None:
    value = environ.get("HTTP_" + name.upper().replace("-", "_"))
    return value if isinstance(value, str) else None


class HttpCacheMiddleware:
    """Caching fields, validators and 304s for every response of a WSGI app."""

    def __init__(
        self, app: WSGIApp, *, settings: HttpSettings | None = None, metrics: HttpMetrics | None = None
    ) -> None:
        self.app = app
        self.settings = settings or HttpSettings()
        self.metrics = metrics or HttpMetrics()
        if importlib.util.find_spec("flask") is not None:
            # Flask caches its parsed cookies on the request: readscale.flask._views tracks
            # lookups in them once the session is open, even if only this module is used.
            importlib.import_module("readscale.flask._views")

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        try:
            ctx, tracked = prepare_environ(environ, self.settings)
        except HeaderError as exc:
            self.metrics.bump("header_errors")
            status, headers, body = bad_request(exc)
            start_response(_status_line(status), headers)
            return [body]

        captured: dict[str, Any] = {}
        written: list[bytes] = []

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], object]:
            if exc_info is not None and captured.get("sent"):
                raise exc_info[1].with_traceback(exc_info[2])
            captured["status"] = status
            captured["headers"] = headers
            return written.append  # the legacy write() callable: buffered like the body

        # HEAD's fields are GET's (RFC 9110 §9.3.2), its validator too: Werkzeug empties
        # a HEAD response's body before it reaches us, so the app answers a GET and the
        # body is dropped here, after the ETag was derived from it.
        head = ctx.method == "HEAD"
        if head:
            dict.__setitem__(tracked, "REQUEST_METHOD", "GET")
        result = self.app(tracked, capture)
        head_only = head and str(captured.get("status", "")).startswith("405")
        if head_only:  # a route that answers HEAD and not GET: ask again, as HEAD
            _close(result)
            captured.clear()
            written.clear()
            dict.__setitem__(tracked, "REQUEST_METHOD", "HEAD")
            result = self.app(tracked, capture)
        limit = self.settings.etag_max_bytes
        chunks: list[bytes] = list(written)
        size = sum(len(c) for c in chunks)
        iterator = iter(result)
        complete = True
        try:
            for chunk in iterator:
                chunks.append(chunk)
                size += len(chunk)
                if size > limit:
                    complete = False
                    break
        except BaseException:
            _close(result)
            raise
        if "status" not in captured:
            _close(result)
            raise RuntimeError("the WSGI app returned without calling start_response")
        code = int(captured["status"].split(" ", 1)[0])
        body = b"".join(chunks)
        status, headers, drop = finish_str(
            ctx,
            self.settings,
            self.metrics,
            code,
            [(k.lower(), v) for k, v in captured["headers"]],
            body if complete and not head_only else None,  # no validator from an emptied body
        )
        line = captured["status"] if status == code else _status_line(status)
        captured["sent"] = True
        start_response(line, headers)
        if drop or head:
            _close(result)
            return []
        if complete:
            _close(result)
            return [body]
        return _Rest(body, iterator, result)


class _Rest:
    """The buffered start of a large body, then the rest as the app yields it."""

    def __init__(self, head: bytes, rest: Iterator[bytes], original: Iterable[bytes]) -> None:
        self.head = head
        self.rest = rest
        self.original = original

    def __iter__(self) -> Iterator[bytes]:
        yield self.head
        yield from self.rest

    def close(self) -> None:
        _close(self.original)


def _close(result: Iterable[bytes]) -> None:
    close = getattr(result, "close", None)
    if close is not None:
        close()


# -- helpers on the environ (used by the Flask and Django modules too) -------------------


def context_of(environ: Any) -> HttpContext:
    ctx = dict.get(environ, CONTEXT_KEY) if isinstance(environ, dict) else None
    if not isinstance(ctx, HttpContext):
        raise ConfigurationError("no readscale HTTP context on this request: add readscale's HTTP middleware")
    return ctx


def use_policy(environ: dict[str, Any], policy: HttpPolicy) -> None:
    context_of(environ).policy = policy


def add_tags(environ: dict[str, Any], *tags: str) -> None:
    context_of(environ).add_tags(tags)


def evaluate_validators(environ: dict[str, Any], etag_from: object, last_modified_from: object) -> Outcome:
    """Record cheap validators for this request and evaluate its preconditions."""
    identity = dict.get(environ, "PATH_INFO", "") or "/"
    query = dict.get(environ, "QUERY_STRING", "")
    if query:
        identity += "?" + query
    return context_of(environ).use_validators(identity, etag_from, last_modified_from)


def outcome_status(outcome: Outcome) -> int | None:
    if isinstance(outcome, NotModified):
        return 304
    if isinstance(outcome, PreconditionFailed):
        return 412
    return None
