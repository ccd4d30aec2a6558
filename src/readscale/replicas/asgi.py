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

from readscale._causal import TOKEN_HEADER, CausalContext, causal_context
from readscale._core.causal import CarriedToken, TokenSigner, merge
from readscale.errors import ConfigurationError

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
        persist: Literal["advance", "write"] = "advance",
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

    def _restore(self, raw_headers: list[tuple[bytes, bytes]], now: float) -> tuple[CarriedToken | None, bool, bool]:
        """The carried token, whether the header carried one, whether a bad cookie came."""
        header_text = _header(raw_headers, self.header_name)
        cookie_text = _cookie(raw_headers, self.cookie_name)
        from_header = self.signer.loads(header_text, now=now)
        from_cookie = self.signer.loads(cookie_text, now=now)
        carried = from_cookie
        if from_header is not None:
            token = merge(None if from_cookie is None else from_cookie.token, from_header.token)
            assert token is not None
            written = max((c.written_at for c in (from_header, from_cookie) if c and c.written_at), default=None)
            carried = CarriedToken(token, written, from_header.issued_at)
        return carried, header_text is not None, cookie_text is not None and from_cookie is None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        raw_headers: list[tuple[bytes, bytes]] = list(scope.get("headers") or [])
        carried, via_header, bad_cookie = self._restore(raw_headers, time.time())
        context = CausalContext.restore(carried)
        written_before = context.written_at

        async def send_with_token(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers") or [])
                headers += self._token_headers(context, written_before, via_header, bad_cookie)
                message["headers"] = headers
            await send(message)

        with causal_context(context):
            await self.app(scope, receive, send_with_token)

    def _token_headers(
        self, context: CausalContext, written_before: float | None, via_header: bool, bad_cookie: bool
    ) -> list[tuple[bytes, bytes]]:
        wrote = context.written_at != written_before
        store = context.changed and (wrote or self.persist == "advance")
        out: list[tuple[bytes, bytes]] = []
        signed = context.dumps(self.signer) if store else None
        if signed is not None:
            max_age = int(self.signer.max_age)
            cookie = f"{self.cookie_name}={signed}; Max-Age={max_age}; {self._attributes}"
            out.append((b"set-cookie", cookie.encode("latin-1")))
        elif bad_cookie:
            out.append((b"set-cookie", f"{self.cookie_name}=; Max-Age=0; {self._attributes}".encode("latin-1")))
        if via_header and context.token is not None:
            current = signed or context.dumps(self.signer)
            if current is not None:
                out.append((self._response_header, current.encode("latin-1")))
        return out
