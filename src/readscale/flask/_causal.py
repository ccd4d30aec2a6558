"""WSGI middleware (Flask, and any WSGI app) that carries the causal token from one
request of a session to the next: the twin of the ASGI one
(:class:`readscale.starlette.CausalTokenMiddleware`).

    app.wsgi_app = HttpCacheMiddleware(CausalTokenMiddleware(app.wsgi_app, signer=TokenSigner(SECRET)))

Each request runs inside its own :func:`~readscale.replicas.causal_context`, restored
from the signed cookie or the ``Readscale-Token`` header; the rules of storing it
(``persist``, ``secure="auto"``, the header after a write, a bad token is a new
session) are those of the ASGI middleware, in :mod:`readscale.replicas._carry`. The
token is stored when the app calls ``start_response``, so reads made while a streamed
body is iterated cannot move it. Put readscale's HTTP middleware outside this one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any, Literal

from readscale._core.replicas.causal import TokenSigner
from readscale._shared.replicas.causal_context import CausalContext, settle_context
from readscale.errors import ConfigurationError
from readscale.replicas._carry import (
    DEFAULT_COOKIE,
    Persist,
    Secure,
    check_options,
    cookie_value,
    restore,
    secure_for,
    stores_token,
    update,
)

__all__ = ["CausalTokenMiddleware"]

_COOKIE_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-.^_`|~")
StartResponse = Callable[..., Callable[[bytes], object]]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class CausalTokenMiddleware:
    """Restore the causal token per request; store it again when the request wrote (or,
    per ``persist``, moved it)."""

    def __init__(
        self,
        app: WSGIApp,
        *,
        signer: TokenSigner,
        cookie_name: str = DEFAULT_COOKIE,
        header_name: str = "Readscale-Token",
        cookie_path: str = "/",
        cookie_domain: str | None = None,
        secure: Secure = "auto",
        samesite: Literal["lax", "strict", "none"] = "lax",
        persist: Persist = "session",
    ) -> None:
        if not cookie_name or not set(cookie_name) <= _COOKIE_NAME_CHARS:
            raise ConfigurationError(f"invalid cookie name {cookie_name!r}")
        check_options(persist, secure, samesite)
        self.app = app
        self.signer = signer
        self.cookie_name = cookie_name
        self.header_name = header_name
        self._environ_key = "HTTP_" + header_name.upper().replace("-", "_")
        attributes = [f"Path={cookie_path}", "HttpOnly", f"SameSite={samesite.capitalize()}"]
        if cookie_domain:
            attributes.append(f"Domain={cookie_domain}")
        self._attributes = "; ".join(attributes)
        self.secure = secure
        self.persist = persist

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        # dict.get: the plain environ, so readscale's read detection never counts this.
        cookie = cookie_value(dict.get(environ, "HTTP_COOKIE"), self.cookie_name)
        restored = restore(self.signer, cookie, dict.get(environ, self._environ_key), now=time.time())
        https = dict.get(environ, "wsgi.url_scheme") == "https"

        def start_with_token(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            if stores_token(restored, persist=self.persist):
                settle_context(restored.context)  # what the request's ORM reads saw, before it leaves
            change = update(restored, self.signer, persist=self.persist, now=time.time())
            extra: list[tuple[str, str]] = []
            if change.cookie is not None or change.clear_cookie:
                secure = secure_for(self.secure, https, "the WSGI CausalTokenMiddleware")
                attributes = f"{self._attributes}; Secure" if secure else self._attributes
                if change.cookie is not None:
                    max_age = int(self.signer.max_age)
                    extra.append(("Set-Cookie", f"{self.cookie_name}={change.cookie}; Max-Age={max_age}; {attributes}"))
                else:
                    extra.append(("Set-Cookie", f"{self.cookie_name}=; Max-Age=0; {attributes}"))
            if change.header is not None:
                extra.append((self.header_name, change.header))
            return start_response(status, [*headers, *extra], exc_info)

        return _in_context(restored.context, self.app, environ, start_with_token)


def _in_context(context: CausalContext, app: WSGIApp, environ: dict[str, Any], start: StartResponse) -> Iterable[bytes]:
    from readscale._shared.replicas.causal_context import causal_context

    with causal_context(context):
        return app(environ, start)
