"""Restoring a causal context from a request and storing it in the response, for every
web integration (ASGI, Django): one set of rules, translated by each framework.

- The cookie (browsers) and the ``Readscale-Token`` header (services, API clients)
  are both read; genuine tokens merge, anything else is ignored (a new session).
- After the request, store the token when the request wrote; when it only moved the
  token (a replica read merges the replica's position), store it only for a session
  that already has a token (``persist="session"``, the default: monotonic reads for
  sessions that wrote, and no cookie for anonymous readers, whose public pages a cache
  may then share), always (``"advance"``: every replica read sets a cookie, so no
  response to it can be shared) or never (``"write"``). Clear a cookie that failed
  verification.
- The header answers when the request spoke the header, and on every response that
  stores a token after a write: a client needs no placeholder to start the header path.
- ``secure="auto"``: the cookie is ``Secure`` exactly when the request came over https.
  A ``Secure`` cookie set over plain http is dropped by every client (browsers, httpx,
  requests), and read-your-writes silently with it: :func:`secure_for` says so once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

from readscale._core.replicas.causal import CarriedToken, TokenSigner, merge
from readscale._shared.replicas.causal_context import CausalContext
from readscale.errors import ConfigurationError

__all__ = [
    "DEFAULT_COOKIE",
    "PERSIST_MODES",
    "Persist",
    "Restored",
    "Secure",
    "TokenUpdate",
    "restore",
    "secure_for",
    "stores_token",
    "update",
]

#: The cookie every token middleware (ASGI, WSGI, Django) reads and writes by default.
DEFAULT_COOKIE = "readscale_token"

Persist = Literal["session", "advance", "write"]
PERSIST_MODES = ("session", "advance", "write")
Secure = bool | Literal["auto"]
log = logging.getLogger("readscale.replicas")


def check_options(persist: str, secure: object, samesite: str) -> None:
    """Refuse settings under which the token cannot be carried."""
    if persist not in PERSIST_MODES:
        raise ConfigurationError(f"persist must be one of {', '.join(PERSIST_MODES)}, got {persist!r}")
    if secure not in (True, False, "auto"):
        raise ConfigurationError(f"secure must be True, False or 'auto', got {secure!r}")
    if samesite.lower() == "none" and secure is not True:
        raise ConfigurationError("SameSite=None cookies must be Secure (browsers drop them otherwise): set secure=True")


def cookie_value(header: str | None, name: str) -> str | None:
    """The value of cookie ``name`` in a Cookie field, parsed leniently (a malformed
    field is no cookie). Middleware read it this way, not through their framework's
    request object, so that readscale's read detection never mistakes it for the
    handler's."""
    if not header:
        return None
    for part in header.split(";"):
        cookie_name, sep, value = part.strip().partition("=")
        if sep and cookie_name == name:
            return value.strip().strip('"')
    return None


class _Once:
    warned = False


def secure_for(secure: Secure, https: bool, where: str) -> bool:
    """Whether this response's cookie gets the Secure attribute. ``secure=True`` on a
    plain-http request is warned about once, loudly: the client will drop the cookie."""
    if secure == "auto":
        return https
    if secure and not https and not _Once.warned:
        _Once.warned = True
        log.warning(
            "readscale: the causal-token cookie is Secure but %s served a request over plain http: clients drop "
            "Secure cookies over http, so sessions there lose read-your-writes. Use secure='auto' (the default), "
            "or serve https (behind a proxy: have it set X-Forwarded-Proto and run uvicorn with "
            "--forwarded-allow-ips set to its address)",
            where,
            extra={"event": "secure_cookie_over_http", "backend": where, "reason": "secure=True over plain http"},
        )
    return bool(secure)


@dataclass(frozen=True, slots=True)
class Restored:
    context: CausalContext
    via_header: bool  # the request carried the header: answer in kind
    bad_cookie: bool  # a cookie came and failed verification: clear it
    written_before: float | None
    had_token: bool = False  # a genuine token came: an established session


@dataclass(frozen=True, slots=True)
class TokenUpdate:
    cookie: str | None  # a signed token to set in the cookie
    clear_cookie: bool
    header: str | None  # a signed token to send in the response header


def restore(signer: TokenSigner, cookie: str | None, header: str | None, *, now: float) -> Restored:
    """The request's causal context from its cookie and header (either may be absent)."""
    from_cookie = signer.loads(cookie, now=now)
    from_header = signer.loads(header, now=now)
    carried = from_cookie
    if from_header is not None:
        token = merge(None if from_cookie is None else from_cookie.token, from_header.token)
        assert token is not None
        written = max((c.written_at for c in (from_header, from_cookie) if c and c.written_at), default=None)
        carried = CarriedToken(token, written, from_header.issued_at)
    context = CausalContext.restore(carried)
    return Restored(
        context,
        header is not None,
        cookie is not None and from_cookie is None,
        context.written_at,
        carried is not None,
    )


def stores_token(restored: Restored, *, persist: Persist) -> bool:
    """Whether the response may store the token (so the request's reads must be settled
    into it first, see ``readscale._shared.replicas.causal_context``): after a write, or under ``"advance"``, or
    for an established session under ``"session"``; never for an anonymous reader."""
    wrote = restored.context.written_at != restored.written_before
    return wrote or persist == "advance" or (persist == "session" and restored.had_token)


def update(restored: Restored, signer: TokenSigner, *, persist: Persist, now: float) -> TokenUpdate:
    """What the response should carry once the request is done."""
    context = restored.context
    wrote = context.written_at != restored.written_before
    store = context.changed and (
        wrote or persist == "advance" or (persist == "session" and restored.had_token and context.token is not None)
    )
    signed = context.dumps(signer, now=now) if store else None
    # The header answers only with a token to store: an unchanged token it already has
    # would make the response session state that no shared cache may keep.
    header = signed if restored.via_header or wrote else None
    return TokenUpdate(signed, signed is None and restored.bad_cookie, header)
