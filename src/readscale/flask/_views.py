"""Flask: a view decorator and helpers, on top of the WSGI middleware
(``readscale.flask.HttpCacheMiddleware``).

::

    app = Flask(__name__)
    app.wsgi_app = HttpCacheMiddleware(app.wsgi_app)

    @app.get("/products/<int:pid>")
    @http_policy(HttpPolicy.public(60, edge_max_age=600))
    def product(pid):
        p = repo.get(pid)
        add_tags(f"product:{pid}")
        check_not_modified(etag_from=p.version)   # a 304 before rendering
        return render_template("product.html", p=p)
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from readscale._core.http import HttpPolicy
from readscale.errors import ConfigurationError
from readscale.flask import _wsgi as wsgi
from readscale.http._context import CONTEXT_KEY, POLICY_ATTR, HttpContext
from readscale.http._tracker import tracking_cookies

try:
    import flask
    from flask.signals import request_started
    from werkzeug.exceptions import HTTPException
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("readscale.flask needs Flask: pip install 'readscale[flask]'") from exc

F = TypeVar("F", bound=Callable[..., Any])


def http_policy(policy: HttpPolicy | None = None, /, **kwargs: Any) -> Callable[[F], F]:
    """Declare a view's caching policy (the middleware applies it to the response)."""
    if policy is not None and kwargs:
        raise ConfigurationError("pass an HttpPolicy or keyword arguments, not both")
    chosen = policy if policy is not None else HttpPolicy(**kwargs)

    def decorate(view: F) -> F:
        @functools.wraps(view)
        def wrapper(*args: Any, **kw: Any) -> Any:
            ctx = wsgi.context_of(flask.request.environ)
            if ctx.policy is None:
                ctx.policy = chosen
            ctx.route = f"{ctx.method} {view.__qualname__}"
            return view(*args, **kw)

        setattr(wrapper, POLICY_ATTR, chosen)
        return wrapper  # type: ignore[return-value]

    return decorate


def use_policy(policy: HttpPolicy) -> None:
    """Set this response's policy from inside the view (wins over the decorator)."""
    wsgi.use_policy(flask.request.environ, policy)


def add_tags(*tags: str) -> None:
    """Tag this response for purging at the edge (sent only if it is shared)."""
    wsgi.add_tags(flask.request.environ, *tags)


class _Conditional(HTTPException):
    """An empty 304 or 412; the middleware completes its fields."""

    def __init__(self, code: int) -> None:
        super().__init__()
        self.code = code

    def get_response(self, environ: Any = None, scope: Any = None) -> Any:
        return flask.Response(status=self.code)


def check_not_modified(*, etag_from: object = None, last_modified_from: object = None) -> None:
    """Answer 304 (or 412) before rendering, from cheap validators (see the ASGI twin)."""
    status = wsgi.outcome_status(wsgi.evaluate_validators(flask.request.environ, etag_from, last_modified_from))
    if status is not None:
        raise _Conditional(status)


def _track_cookies(sender: object, **extra: object) -> None:
    """Once Flask has opened the session (its read of the session cookie is plumbing),
    a lookup in ``request.cookies`` is the app's read of Cookie. Werkzeug caches the
    parsed cookies on the request, so the tracked environ alone would never see it."""
    req = flask.request._get_current_object()  # type: ignore[attr-defined]
    ctx = dict.get(req.environ, CONTEXT_KEY) if isinstance(req.environ, dict) else None
    if isinstance(ctx, HttpContext):
        ctx.paused += 1
        try:
            parsed = req.cookies
        finally:
            ctx.paused -= 1
        req.__dict__["cookies"] = tracking_cookies(parsed, ctx)


request_started.connect(_track_cookies, weak=False)
