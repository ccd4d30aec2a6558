"""ASGI middleware that carries the causal token from one request of a session to the next.

Works with any ASGI framework (Starlette, FastAPI, Quart...) and needs no extra package:

    app = CausalTokenMiddleware(app, signer=TokenSigner(SECRET))

Each request runs inside its own :func:`~readscale.replicas.causal_context`, restored
from the signed cookie (browsers) or the ``Readscale-Token`` header (other services,
API clients); when both come, they merge. A request that wrote stores the token: a
``Set-Cookie`` (HttpOnly, SameSite=Lax, Secure when the request came over https) and
the ``Readscale-Token`` response header, so an API client needs nothing to start with.
A token that fails verification (forged, tampered, expired, malformed) is ignored: the
request is a new session and its bad cookie is cleared. It never turns into an error
response.

``persist`` says when a request that only read stores the token it moved (a replica
read merges the replica's position): ``"session"`` (default) for a session that already
has a token, so anonymous readers get no cookie and their public pages stay shareable;
``"advance"`` always; ``"write"`` never. ``secure="auto"`` (default) marks the cookie
Secure over https only: a Secure cookie set over http is dropped by every client.
The token is stored when the response starts, so a streaming body's later reads cannot
move it. Put :class:`~readscale.starlette.HttpCacheMiddleware` outside this one: it
sees the Set-Cookie and never lets a shared cache keep that response.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Literal

from readscale._core.replicas.causal import TokenSigner
from readscale._shared.replicas.causal_context import TOKEN_HEADER, causal_context, settle_context_async
from readscale.errors import ConfigurationError
from readscale.replicas._carry import (
    DEFAULT_COOKIE,
    Persist,
    Secure,
    TokenUpdate,
    check_options,
    restore,
    secure_for,
    stores_token,
    update,
)

__all__ = ["CausalTokenMiddleware"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_COOKIE_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-.^_`|~")


def _cookie(raw_headers: list[tuple[bytes, bytes]], name: str) -> str | None:
    """The value of cookie ``name``, parsed leniently (a malformed Cookie header is no cookie)."""
    for key, value in raw_headers:
        if key.lower() != b"cookie":
            continue
        for part in value.decode("latin-1").split(";"):
            cookie_name, sep, cookie_value = part.strip().partition("=")
            if sep and cookie_name == name:
                return cookie_value.strip().strip('"')
    return None


def _header(raw_headers: list[tuple[bytes, bytes]], name: bytes) -> str | None:
    for key, value in raw_headers:
        if key.lower() == name:
            return value.decode("latin-1").strip()
    return None


class CausalTokenMiddleware:
    """Restore the causal token per request; store it again when the request moved it."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        signer: TokenSigner,
        cookie_name: str = DEFAULT_COOKIE,
        header_name: str = TOKEN_HEADER,
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
        self.header_name = header_name.lower().encode("latin-1")
        self._response_header = header_name.encode("latin-1")
        attributes = [f"Path={cookie_path}", "HttpOnly", f"SameSite={samesite.capitalize()}"]
        if cookie_domain:
            attributes.append(f"Domain={cookie_domain}")
        self._attributes = "; ".join(attributes)
        self.secure = secure
        self.persist = persist

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        raw_headers: list[tuple[bytes, bytes]] = list(scope.get("headers") or [])
        restored = restore(
            self.signer, _cookie(raw_headers, self.cookie_name), _header(raw_headers, self.header_name), now=time.time()
        )

        async def send_with_token(message: Message) -> None:
            if message["type"] == "http.response.start":
                if stores_token(restored, persist=self.persist):
                    await settle_context_async(restored.context)  # what the request's reads saw
                change = update(restored, self.signer, persist=self.persist, now=time.time())
                if change.cookie is not None or change.clear_cookie or change.header is not None:
                    https = scope.get("scheme") == "https"
                    secure = secure_for(self.secure, https, "CausalTokenMiddleware")
                    message["headers"] = [*(message.get("headers") or []), *self._token_headers(change, secure)]
            await send(message)

        with causal_context(restored.context):
            await self.app(scope, receive, send_with_token)

    def _token_headers(self, change: TokenUpdate, secure: bool) -> list[tuple[bytes, bytes]]:
        out: list[tuple[bytes, bytes]] = []
        attributes = f"{self._attributes}; Secure" if secure else self._attributes
        if change.cookie is not None:
            cookie = f"{self.cookie_name}={change.cookie}; Max-Age={int(self.signer.max_age)}; {attributes}"
            out.append((b"set-cookie", cookie.encode("latin-1")))
        elif change.clear_cookie:
            out.append((b"set-cookie", f"{self.cookie_name}=; Max-Age=0; {attributes}".encode("latin-1")))
        if change.header is not None:
            out.append((self._response_header, change.header.encode("latin-1")))
        return out
