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

Limits (said in the docs): code that walks ``scope["headers"]`` comparing names with
``startswith`` or by position is not seen; reads before the middleware runs (outer
middleware) are not seen.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextvars import ContextVar
from typing import Any

_READS: ContextVar[tuple[set[str], set[str]] | None] = ContextVar("readscale_http_reads", default=None)
_NAMES: dict[bytes, TrackedName] = {}
_NAMES_MAX = 1024


class TrackedName(bytes):
    """A header name that records the names it is compared with (see module doc)."""

    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        if isinstance(other, bytes):
            sets = _READS.get()
            if sets is not None:
                sets[0].add(bytes(other).decode("latin-1").lower())
            return bytes.__eq__(self, other)
        return NotImplemented

    def __ne__(self, other: object) -> bool:
        result = self.__eq__(other)
        return result if result is NotImplemented else not result

    __hash__ = bytes.__hash__

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        text = bytes.decode(self, encoding, errors)
        sets = _READS.get()
        if sets is not None:
            sets[1].add(text.lower())
        return text


def tracked(name: bytes) -> bytes:
    """The shared TrackedName for ``name`` (a bounded cache: no per-request allocation)."""
    found = _NAMES.get(name)
    if found is None:
        if len(_NAMES) >= _NAMES_MAX:
            return TrackedName(name)
        found = _NAMES[name] = TrackedName(name)
    return found


def track_reads(reads: set[str], walked: set[str]) -> Any:
    """Start recording into ``reads`` and ``walked`` for the current context; returns a reset token."""
    return _READS.set((reads, walked))


def stop_tracking(token: Any) -> None:
    _READS.reset(token)


def _field_of(key: object) -> str | None:
    if isinstance(key, str) and key.startswith("HTTP_"):
        return key[5:].lower().replace("_", "-")
    return None


class TrackingEnviron(dict[str, Any]):
    """A WSGI environ that records the ``HTTP_*`` keys read into ``reads``."""

    __slots__ = ("_reads", "_walked")

    def __init__(self, environ: dict[str, Any], reads: set[str], walked: set[str]) -> None:
        super().__init__(environ)
        self._reads = reads
        self._walked = walked

    def _note(self, key: object) -> None:
        name = _field_of(key)
        if name is not None:
            self._reads.add(name)

    def _note_all(self) -> None:
        for key in dict.keys(self):
            name = _field_of(key)
            if name is not None:
                self._walked.add(name)

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
