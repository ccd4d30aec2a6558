"""The causal context: where a request, web session or job keeps its causal token.

A :class:`CausalContext` holds the token of one causal scope and only moves it forward
(see ``readscale._core.replicas.causal``). The active context lives in a contextvar, so each
asyncio task and each thread has its own; :func:`causal_context` opens one for a block
(a request, a job, a test session) and restores the previous one afterwards. The
context object itself is shared by reference inside the block, so a write made in a
child task still advances the request's token. Its own lock makes merges from several
threads safe.

Carrying it further is a matter of strings: :meth:`CausalContext.dumps` signs the token
for a cookie, a header or a job message, and :func:`causal_context` accepts what
:meth:`TokenSigner.loads` returns on the other side. A context opened from ``None``
(no token, or one that failed verification) is simply a new session.

``use_mode`` sets a default read mode for the block, for integrations (Django's
database router, SQLAlchemy sessions) whose queries carry no routing arguments.

**Unsettled reads.** A read whose statements ran where the router could not read the
node's position right after them (an ORM's own connection, a ``read()`` block still
open) leaves a mark on its node (``note_read``, ``open_read``). The token does not
cover what such a read saw until the node's position is read and merged: the router
does that before the session's next read (``readscale._core.replicas.routing.plan_unsettled``),
and :func:`settle_context` / :func:`settle_context_async` do it before a token leaves
(the web middlewares, :func:`dump_token`). A mark is cleared only by a position read
that started after the mark was made, so reads running at the same time in one context
can never lose one.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Protocol

from readscale._core.replicas.causal import CarriedToken, CausalToken, ClusterIdentity, TokenSigner, advance, reconcile
from readscale._core.replicas.settings import ReadMode

__all__ = [
    "TOKEN_HEADER",
    "CausalContext",
    "causal_context",
    "current_context",
    "current_mode",
    "dump_token",
    "load_token",
    "own_write_floor",
    "settle_context",
    "settle_context_async",
    "use_mode",
]

log = logging.getLogger("readscale")

# The header that carries a signed causal token between services (and API clients).
TOKEN_HEADER = "Readscale-Token"  # noqa: S105 - a header name, not a secret


class CausalContext:
    """The causal token of one scope (request, web session, job) and when it last wrote."""

    __slots__ = ("_holds", "_lock", "_marks", "_seq", "_token", "_written_at", "changed", "resets")

    def __init__(self, token: CausalToken | None = None, *, written_at: float | None = None) -> None:
        self._lock = threading.Lock()
        self._token = token
        self._written_at = written_at
        self.changed = False  # the token moved since the context was opened (store it again)
        self.resets = 0  # tokens dropped for belonging to another cluster history
        # Unsettled reads, per router (the owner): node -> the mark of its latest finished
        # statement, and node -> how many blocks are reading on it right now.
        self._marks: dict[Settler, dict[str, int]] = {}
        self._holds: dict[Settler, dict[str, int]] = {}
        self._seq = 0

    def __repr__(self) -> str:
        return f"CausalContext(token={self._token!r}, written_at={self._written_at!r})"

    @property
    def token(self) -> CausalToken | None:
        return self._token

    @property
    def written_at(self) -> float | None:
        """Wall-clock seconds of the last write in this scope (for the time-window rule)."""
        return self._written_at

    def observe(self, position: CausalToken) -> None:
        """Merge a position seen on the live cluster (a replica read, a primary read)."""
        with self._lock:
            merged = advance(self._token, position)
            if merged != self._token:
                self._token = merged
                self.changed = True

    def record_write(self, position: CausalToken, at: float) -> None:
        """Merge the primary's position after a commit made in this scope."""
        with self._lock:
            self._token = advance(self._token, position)
            self._written_at = at if self._written_at is None else max(self._written_at, at)
            self.changed = True

    def reconcile(self, identity: ClusterIdentity | None) -> CausalToken | None:
        """The token, dropped first if it belongs to another cluster or timeline."""
        with self._lock:
            kept = reconcile(self._token, identity)
            if kept is None and self._token is not None:
                self._token = None
                self._written_at = None
                self.resets += 1
                self.changed = True
            return kept

    # -- unsettled reads (see the module docstring) -----------------------------------------

    def note_read(self, owner: Settler, node: str) -> None:
        """A statement on ``node`` of ``owner``'s cluster just finished: what it saw may be
        past the token until ``node``'s position is read and merged."""
        with self._lock:
            self._seq += 1
            self._marks.setdefault(owner, {})[node] = self._seq

    def open_read(self, owner: Settler, node: str) -> None:
        """A block starts reading on ``node``: it is unsettled until :meth:`close_read`."""
        with self._lock:
            holds = self._holds.setdefault(owner, {})
            holds[node] = holds.get(node, 0) + 1

    def close_read(self, owner: Settler, node: str, *, settled: bool) -> None:
        """The block on ``node`` ended; ``settled``: its node's position was read after its
        last statement and merged (otherwise the node stays marked)."""
        with self._lock:
            holds = self._holds.get(owner, {})
            left = holds.get(node, 0) - 1
            if left > 0:
                holds[node] = left
            else:
                holds.pop(node, None)
                if not holds:
                    self._holds.pop(owner, None)
            if not settled:
                self._seq += 1
                self._marks.setdefault(owner, {})[node] = self._seq

    def unsettled(self, owner: Settler) -> dict[str, int]:
        """``owner``'s unsettled nodes, each with its mark (0: only open blocks), to hand
        back to :meth:`settled` once their positions are merged."""
        with self._lock:
            out = dict.fromkeys(self._holds.get(owner, ()), 0)
            out.update(self._marks.get(owner, {}))
            return out

    def settled(self, owner: Settler, seen: Mapping[str, int]) -> None:
        """Positions read after :meth:`unsettled` returned ``seen`` were merged: clear those
        marks, unless a statement finished since (a newer mark) or a block is still open."""
        with self._lock:
            marks = self._marks.get(owner)
            if not marks:
                return
            for node, mark in seen.items():
                if marks.get(node) == mark:
                    del marks[node]
            if not marks:
                del self._marks[owner]

    def unsettled_owners(self) -> list[Settler]:
        """The routers with unsettled reads in this context."""
        with self._lock:
            return list(dict.fromkeys([*self._marks, *self._holds]))

    def dumps(self, signer: TokenSigner, *, now: float | None = None) -> str | None:
        """The signed token to carry to the next request or job; None if there is none yet."""
        token = self._token
        if token is None:
            return None
        return signer.dumps(token, now=time.time() if now is None else now, written_at=self._written_at)

    @classmethod
    def restore(cls, carried: CarriedToken | None) -> CausalContext:
        """A context continuing a carried token (None: a new session)."""
        if carried is None:
            return cls()
        return cls(carried.token, written_at=carried.written_at)


class Settler(Protocol):
    """A replica router, as a causal context sees it: it can settle its unsettled reads
    (``settle`` is a coroutine function for the async router, a plain one for the sync)."""

    def settle(self, context: CausalContext | None = None) -> Any: ...


_warned_async: set[type] = set()


def settle_context(context: CausalContext | None = None) -> None:
    """Merge every unsettled read of the (active) context into its token, before the token
    leaves (a response's cookie, a job's message). Sync routers read the positions here;
    an async router's reads cannot be settled from sync code: a warning says to
    ``await router.settle()`` first."""
    context = context or current_context()
    if context is None:
        return
    for owner in context.unsettled_owners():
        if inspect.iscoroutinefunction(owner.settle):
            if type(owner) not in _warned_async:
                _warned_async.add(type(owner))
                log.warning(
                    "readscale: a causal token left sync code with reads of an async router not merged "
                    "(the next request may read older data): call `await router.settle()` before it leaves",
                    extra={"event": "causal_token_unsettled", "reason": "async reads not merged"},
                )
            continue
        owner.settle(context)


async def settle_context_async(context: CausalContext | None = None) -> None:
    """:func:`settle_context` for async code: async routers are awaited, sync routers
    read their positions in a worker thread."""
    context = context or current_context()
    if context is None:
        return
    for owner in context.unsettled_owners():
        if inspect.iscoroutinefunction(owner.settle):
            await owner.settle(context)
        else:
            await asyncio.to_thread(owner.settle, context)


_current: ContextVar[CausalContext | None] = ContextVar("readscale_causal_context", default=None)
_mode: ContextVar[ReadMode | None] = ContextVar("readscale_read_mode", default=None)


def current_context() -> CausalContext | None:
    """The causal context active here, if any."""
    return _current.get()


def own_write_floor() -> int | None:
    """The WAL position the active session has written up to (at least), or None when
    it has not written: what a read-your-writes cache entry must have been read at."""
    context = _current.get()
    if context is None or context.written_at is None:
        return None
    token = context.token
    return token.lsn if token is not None else None


@contextmanager
def causal_context(
    start: CausalContext | CarriedToken | CausalToken | None = None,
) -> Iterator[CausalContext]:
    """Open a causal scope for a block: a request, a job, a session in a test.

    ``start``: nothing (a new session), a token restored with ``TokenSigner.loads``, a
    bare token, or an existing context to re-enter. Yields the active context.
    """
    if isinstance(start, CausalContext):
        context = start
    elif isinstance(start, CausalToken):
        context = CausalContext(start)
    else:
        context = CausalContext.restore(start)
    reset = _current.set(context)
    try:
        yield context
    finally:
        _current.reset(reset)


def current_mode() -> ReadMode | None:
    """The read mode set by :func:`use_mode` here, if any."""
    return _mode.get()


@contextmanager
def use_mode(mode: ReadMode) -> Iterator[None]:
    """Route the block's reads with ``mode`` unless a read names its own."""
    reset = _mode.set(mode)
    try:
        yield
    finally:
        _mode.reset(reset)


def dump_token(signer: TokenSigner, context: CausalContext | None = None) -> str | None:
    """The active (or given) context's token, signed, for a job message or an outgoing
    request's ``Readscale-Token`` header; None if the context has no token yet.

    Unsettled reads of sync routers (ORM reads) are merged first (one position read per
    node); in async code, ``await router.settle()`` before calling this."""
    context = context or current_context()
    if context is None:
        return None
    settle_context(context)
    return context.dumps(signer)


def load_token(signer: TokenSigner, text: str | None) -> CarriedToken | None:
    """Verify a signed token from a message or a header; None (a new session) if it is
    missing, malformed, forged, tampered or expired. Never raises. Open it with
    ``with causal_context(load_token(signer, text)):``."""
    return signer.loads(text, now=time.time())
