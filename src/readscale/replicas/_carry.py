"""Restoring a causal context from a request and storing it in the response, for every
web integration (ASGI, Django): one set of rules, translated by each framework.

- The cookie (browsers) and the ``Readscale-Token`` header (services, API clients)
  are both read; genuine tokens merge, anything else is ignored (a new session).
- After the request: store when the token moved (``persist="advance"``) or when the
  request wrote (``persist="write"``); clear a cookie that failed verification; answer
  in the header when the request spoke the header.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from readscale._causal import CausalContext
from readscale._core.causal import CarriedToken, TokenSigner, merge

__all__ = ["Persist", "Restored", "TokenUpdate", "restore", "update"]

Persist = Literal["advance", "write"]


@dataclass(frozen=True, slots=True)
class Restored:
    context: CausalContext
    via_header: bool  # the request carried the header: answer in kind
    bad_cookie: bool  # a cookie came and failed verification: clear it
    written_before: float | None


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
    return Restored(context, header is not None, cookie is not None and from_cookie is None, context.written_at)


def update(restored: Restored, signer: TokenSigner, *, persist: Persist, now: float) -> TokenUpdate:
    """What the response should carry once the request is done."""
    context = restored.context
    wrote = context.written_at != restored.written_before
    store = context.changed and (wrote or persist == "advance")
    signed = context.dumps(signer, now=now) if store else None
    header = None
    if restored.via_header and context.token is not None:
        header = signed or context.dumps(signer, now=now)
    return TokenUpdate(signed, signed is None and restored.bad_cookie, header)
