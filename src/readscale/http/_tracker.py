"""Detect which request fields a handler reads: the safety net of declared variance (P1).

Web cache poisoning works through request fields the origin reflects but the cache does
not key on. A route declares what its response varies on (``HttpPolicy.vary``); this
module watches what is actually read, so that a read the route did not declare is
reported (``unlisted_reads="warn"``, the default) or, in the strict modes, varied on or
refused. A tracker cannot tell a handler's read from its framework's (FastAPI reads
Cookie on every request, Werkzeug walks every field to parse cookies), which is why
detection warns and declaration decides.

- ASGI: the scope's header names are replaced by :class:`TrackedName`, a ``bytes``
  subclass that is equal and hashes equal to the plain name, and whose ``__eq__``
  records the name it is compared with. Starlette (and every ASGI framework) finds a
  field by comparing names, so a lookup of ``x-lang`` records ``x-lang`` whether or not
  the request carries it (a *read*); enumerating the fields (``dict(request.headers)``)
  decodes every name, recorded apart as *walked*. The recording goes to a context
  variable set by the middleware for the request's task (copied into threads and child
  tasks).
- WSGI: :class:`TrackingEnviron` is a ``dict`` whose ``HTTP_*`` lookups are reads, and
  whose enumeration walks every field.

**Identity reads are told from plumbing.** A read of an identity field (Cookie,
Authorization, configured API-key fields) by the handler is not a warning but a
dependence: the response varies on it (private when the request carried it). The
framework's own reads on every request are recognised, not listed: in ASGI apps a read
counts once the router has matched an endpoint (``scope["endpoint"]``: session
middleware ran before); parsing the Cookie field into a dictionary (Starlette's
``request.cookies``, which FastAPI's dependency solver builds for every request) is not a
read, a lookup in the dictionary is (:func:`tracking_cookies`), except of the cookies the
framework owns (``plumbing``: Django's session and CSRF cookies, the causal token's).
Flask's cookies are wrapped once its session is open; sessions themselves tell whether a
view touched them (``session.accessed``), and the frameworks add ``Vary: Cookie``.

Limits (said in the docs): code that walks ``scope["headers"]`` comparing names with
``startswith`` or by position is not seen; reads before the middleware runs (outer
middleware) are not seen.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextvars import ContextVar
from typing import Any

_NAMES: dict[bytes, TrackedName] = {}
_NAMES_MAX = 1024
_NOTHING: frozenset[str] = frozenset()


class Reads:
    """What one request's handler was seen reading (the base of ``HttpContext``).

    ``reads`` / ``walked``: fields looked up by name / seen while something walked every
    field. ``identity_reads``: identity fields read by the handler (phase-aware, see the
    module doc); ``identity_anywhere``: the same without the phase, used when no router
    ever matched an endpoint (a bare ASGI app: nothing tells plumbing from handler).
    ``paused``: > 0 while readscale or a framework's parser reads on its own behalf.
    """

    scope: Mapping[str, Any] | None = None  # ASGI: the handler phase starts at scope["endpoint"]
    paused = 0
    plumbing_cookies: frozenset[str] = frozenset()
    # The four sets start as the shared empty frozenset and become sets on the first
    # name recorded (``add_read`` and friends): most requests record nothing, and four
    # new sets per request cost more than the rest of the context.
    reads: set[str] | frozenset[str] = _NOTHING
    walked: set[str] | frozenset[str] = _NOTHING
    identity_reads: set[str] | frozenset[str] = _NOTHING
    identity_anywhere: set[str] | frozenset[str] = _NOTHING

    # True once anything was recorded (or, in HttpContext, declared by the handler): a
    # response whose context is untouched takes the middleware's shortest path.
    touched = False

    def __init__(self, identity_fields: frozenset[str]) -> None:
        self.identity_fields = identity_fields

    # A set is made with ``__dict__.setdefault`` (one atomic step): two threads recording
    # the first name on one context (a Django or Flask view's threads) both keep theirs.
    def add_read(self, name: str) -> None:
        self.touched = True
        reads = self.reads
        if not isinstance(reads, set):
            reads = self.__dict__.setdefault("reads", set())
        reads.add(name)

    def add_walked(self, names: Iterable[str]) -> None:
        self.touched = True
        walked = self.walked
        if not isinstance(walked, set):
            walked = self.__dict__.setdefault("walked", set())
        walked.update(names)

    def _add_identity(self, name: str, *, in_handler: bool) -> None:
        self.touched = True
        anywhere = self.identity_anywhere
        if not isinstance(anywhere, set):
            anywhere = self.__dict__.setdefault("identity_anywhere", set())
        anywhere.add(name)
        if in_handler:
            reads = self.identity_reads
            if not isinstance(reads, set):
                reads = self.__dict__.setdefault("identity_reads", set())
            reads.add(name)

    def in_handler(self) -> bool:
        scope = self.scope
        return scope is None or "endpoint" in scope

    def note(self, name: str) -> None:
        """A lookup of request field ``name`` (lower-case)."""
        if self.paused:
            return
        self.add_read(name)
        if name in self.identity_fields:
            self.note_identity(name)

    def note_identity(self, name: str) -> None:
        self._add_identity(name, in_handler=self.in_handler())

    def note_dependence(self, name: str) -> None:
        """The response depends on identity field ``name`` whoever read it (a session
        touched by the handler or by a middleware that decides for it)."""
        self._add_identity(name, in_handler=True)

    def note_cookie(self, cookie: object) -> None:
        """A lookup of one cookie by name (or of all of them: ``cookie`` is None)."""
        if self.paused or (cookie is not None and cookie in self.plumbing_cookies):
            return
        self._add_identity("cookie", in_handler=self.in_handler())

    def identity_seen(self) -> frozenset[str]:
        """The identity fields the handler read (all reads when no endpoint ever matched)."""
        scope = self.scope
        if scope is not None and "endpoint" not in scope:
            return frozenset(self.identity_anywhere)
        return frozenset(self.identity_reads)


_READS: ContextVar[Reads | None] = ContextVar("readscale_http_reads", default=None)


def current() -> Reads | None:
    return _READS.get()


class TrackedName(bytes):
    """A header name that records the names it is compared with (see module doc)."""

    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        if isinstance(other, bytes):
            rec = _READS.get()
            if rec is not None and not rec.paused:  # Reads.note, inlined: on every lookup
                name = bytes(other).decode("latin-1").lower()
                rec.add_read(name)
                if name in rec.identity_fields:
                    rec.note_identity(name)
            return bytes.__eq__(self, other)
        return NotImplemented

    def __ne__(self, other: object) -> bool:
        result = self.__eq__(other)
        return result if result is NotImplemented else not result

    __hash__ = bytes.__hash__

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        text = bytes.decode(self, encoding, errors)
        rec = _READS.get()
        if rec is not None and not rec.paused:
            rec.add_walked((text.lower(),))
        return text


def tracked(name: bytes) -> bytes:
    """The shared TrackedName for ``name`` (a bounded cache: no per-request allocation)."""
    found = _NAMES.get(name)
    if found is None:
        if len(_NAMES) >= _NAMES_MAX:
            return TrackedName(name)
        found = _NAMES[name] = TrackedName(name)
    return found


def track_reads(rec: Reads) -> Any:
    """Start recording into ``rec`` for the current context; returns a reset token."""
    return _READS.set(rec)


def stop_tracking(token: Any) -> None:
    _READS.reset(token)


class _CookieLookups:
    """Mixin of :func:`tracking_cookies`: every lookup is a read of the Cookie field."""

    _readscale_rec: Reads

    def __getitem__(self, key: Any) -> Any:
        self._readscale_rec.note_cookie(key)
        return super().__getitem__(key)  # type: ignore[misc]

    def get(self, key: Any, *args: Any, **kwargs: Any) -> Any:
        self._readscale_rec.note_cookie(key)
        return super().get(key, *args, **kwargs)  # type: ignore[misc]

    def __contains__(self, key: object) -> bool:
        self._readscale_rec.note_cookie(key)
        return bool(super().__contains__(key))  # type: ignore[misc]

    def getlist(self, key: Any, *args: Any, **kwargs: Any) -> Any:
        self._readscale_rec.note_cookie(key)
        return super().getlist(key, *args, **kwargs)  # type: ignore[misc]

    def _all(self, method: str, *args: Any, **kwargs: Any) -> Any:
        self._readscale_rec.note_cookie(None)
        return getattr(super(), method)(*args, **kwargs)

    def __iter__(self) -> Iterator[Any]:
        self._readscale_rec.note_cookie(None)
        return super().__iter__()  # type: ignore[misc, no-any-return]

    def keys(self) -> Any:
        return self._all("keys")

    def items(self, *args: Any, **kwargs: Any) -> Any:
        return self._all("items", *args, **kwargs)

    def values(self, *args: Any, **kwargs: Any) -> Any:
        return self._all("values", *args, **kwargs)

    def copy(self) -> Any:
        return self._all("copy")

    def to_dict(self, *args: Any, **kwargs: Any) -> Any:
        return self._all("to_dict", *args, **kwargs)

    def lists(self) -> Any:
        return self._all("lists")


_COOKIE_TYPES: dict[type, type] = {}


def tracking_cookies(cookies: Any, rec: Reads) -> Any:
    """``cookies`` (a framework's parsed Cookie field: a dict, Werkzeug's MultiDict) as an
    instance of a subclass of its own type whose lookups are reads of Cookie by ``rec``.
    Anything else is returned unchanged."""
    kind = type(cookies)
    if issubclass(kind, _CookieLookups) or not issubclass(kind, dict):
        return cookies
    sub = _COOKIE_TYPES.get(kind)
    if sub is None:
        sub = _COOKIE_TYPES[kind] = type(f"Tracking{kind.__name__}", (_CookieLookups, kind), {})
    rec.paused += 1
    try:
        wrapped = sub(cookies)
    finally:
        rec.paused -= 1
    wrapped._readscale_rec = rec
    return wrapped


def _field_of(key: object) -> str | None:
    if isinstance(key, str) and key.startswith("HTTP_"):
        return key[5:].lower().replace("_", "-")
    return None


class TrackingEnviron(dict[str, Any]):
    """A WSGI environ that records the ``HTTP_*`` keys read (see :class:`Reads`)."""

    __slots__ = ("_rec",)

    def __init__(self, environ: dict[str, Any], rec: Reads) -> None:
        super().__init__(environ)
        self._rec = rec

    def _note(self, key: object) -> None:
        name = _field_of(key)
        if name is not None:
            self._rec.note(name)

    def _note_all(self) -> None:
        if self._rec.paused:
            return
        names = [name for name in map(_field_of, dict.keys(self)) if name is not None]
        if names:
            self._rec.add_walked(names)

    def __getitem__(self, key: str) -> Any:
        self._note(key)
        return dict.__getitem__(self, key)

    def get(self, key: str, default: Any = None) -> Any:
        self._note(key)
        return dict.get(self, key, default)

    def __contains__(self, key: object) -> bool:
        self._note(key)
        return dict.__contains__(self, key)

    def __iter__(self) -> Iterator[str]:
        self._note_all()
        return dict.__iter__(self)

    def keys(self) -> Any:
        self._note_all()
        return dict.keys(self)

    def items(self) -> Any:
        self._note_all()
        return dict.items(self)

    def values(self) -> Any:
        self._note_all()
        return dict.values(self)

    def copy(self) -> dict[str, Any]:
        self._note_all()
        return dict(dict.items(self))


def fields_present(names: Iterable[str], present: Iterable[str]) -> frozenset[str]:
    wanted = frozenset(names)
    return frozenset(n for n in present if n in wanted)
