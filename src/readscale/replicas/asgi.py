"""ASGI middleware that carries the causal token from one request of a session to the next.

Works with any ASGI framework (Starlette, FastAPI, Quart...) and needs no extra package:

    app = CausalTokenMiddleware(app, signer=TokenSigner(SECRET))

Each request runs inside its own :func:`~readscale.replicas.causal_context`, restored
from the signed cookie (browsers) or the ``Readscale-Token`` header (other services,
API clients); when both come, they merge. When the request moved the token forward,
the response stores it again: a ``Set-Cookie`` (HttpOnly, SameSite, Secure by default)
and, for a request that came with the header, the header too. A token that fails
verification (forged, tampered, expired, malformed) is ignored: the request is a new
session and its bad cookie is cleared. It never turns into an error response.

``persist="write"`` stores the cookie only after requests that wrote, not after reads
that merely advanced it (fewer ``Set-Cookie`` responses, at the price of monotonic
reads across requests that only read). The token is stored when the response starts,
so a streaming body's later reads cannot move it.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Literal

from readscale._causal import TOKEN_HEADER, causal_context
from readscale._core.causal import TokenSigner
from readscale.errors import ConfigurationError
from readscale.replicas._carry import Persist, TokenUpdate, restore, update

__all__ = ["DEFAULT_COOKIE", "CausalTokenMiddleware"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

DEFAULT_COOKIE = "readscale_token"
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
        secure: bool = True,
        samesite: Literal["lax", "strict", "none"] = "lax",
        persist: Persist = "advance",
    ) -> None:
        if not cookie_name or not set(cookie_name) <= _COOKIE_NAME_CHARS:
            raise ConfigurationError(f"invalid cookie name {cookie_name!r}")
        if samesite == "none" and not secure:
            raise ConfigurationError("SameSite=None cookies must be Secure (browsers drop them otherwise)")
        if persist not in ("advance", "write"):
            raise ConfigurationError(f"persist must be 'advance' or 'write', got {persist!r}")
        self.app = app
        self.signer = signer
        self.cookie_name = cookie_name
        self.header_name = header_name.lower().encode("latin-1")
        self._response_header = header_name.encode("latin-1")
        attributes = [f"Path={cookie_path}", "HttpOnly", f"SameSite={samesite.capitalize()}"]
        if cookie_domain:
            attributes.append(f"Domain={cookie_domain}")
        if secure:
            attributes.append("Secure")
        self._attributes = "; ".join(attributes)
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
                headers = list(message.get("headers") or [])
                headers += self._token_headers(update(restored, self.signer, persist=self.persist, now=time.time()))
                message["headers"] = headers
            await send(message)

        with causal_context(restored.context):
            await self.app(scope, receive, send_with_token)

    def _token_headers(self, change: TokenUpdate) -> list[tuple[bytes, bytes]]:
        out: list[tuple[bytes, bytes]] = []
        if change.cookie is not None:
            cookie = f"{self.cookie_name}={change.cookie}; Max-Age={int(self.signer.max_age)}; {self._attributes}"
            out.append((b"set-cookie", cookie.encode("latin-1")))
        elif change.clear_cookie:
            out.append((b"set-cookie", f"{self.cookie_name}=; Max-Age=0; {self._attributes}".encode("latin-1")))
        if change.header is not None:
            out.append((self._response_header, change.header.encode("latin-1")))
        return out
