"""Cache-Status (RFC 9211): what each cache on the path did with a request.

The field is a Structured Field List (RFC 9651). Parsing and serialising are done by
``http-sf``, the RFC's editor's implementation, rather than by hand: a hand-written
reader here once refused the valid ``hit=?0``, accepted whitespace the grammar forbids
and dropped unknown parameters.

Invariants:
- Each member is a cache's name (sf-token or sf-string) with parameters; the RFC's
  parameters (``hit``, ``fwd``, ``fwd-status``, ``ttl``, ``stored``, ``collapsed``,
  ``key``, ``detail``) are typed fields, any other parameter is kept in ``params`` in
  field order and rendered back.
- Members are in path order: the origin side first, the cache nearest the client last,
  so a cache appends its member.
- ``fwd`` is one of the RFC's tokens; ``hit`` and ``fwd`` are not both set; a boolean
  parameter may be false (``hit=?0``: not a hit).
- Rendering is canonical RFC 9651 (``a;hit;ttl=5``): what http-sf reads back unchanged.
- Parsing is for tests and clients reading what the edge did; anything http-sf refuses,
  or an RFC parameter of the wrong type, is a :class:`HeaderError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final, Literal

import http_sf

from readscale.errors import ConfigurationError, HeaderError

Forward = Literal["bypass", "method", "uri-miss", "vary-miss", "miss", "request", "stale", "partial"]
FORWARD_REASONS: Final = frozenset({"bypass", "method", "uri-miss", "vary-miss", "miss", "request", "stale", "partial"})
_HEADER: Final = "Cache-Status"
_KNOWN: Final = frozenset({"hit", "fwd", "fwd-status", "ttl", "stored", "collapsed", "key", "detail"})
ParamValue = bool | int | Decimal | str | bytes


@dataclass(frozen=True, slots=True)
class CacheStatus:
    """One member of a Cache-Status field. ``params``: other parameters, in order."""

    cache: str
    hit: bool = False
    fwd: Forward | None = None
    fwd_status: int | None = None
    ttl: int | None = None
    stored: bool = False
    collapsed: bool = False
    key: str | None = None
    detail: str | None = None
    params: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        if self.hit and self.fwd is not None:
            raise ConfigurationError("Cache-Status: a member is a hit or forwarded, not both")
        if self.fwd is not None and self.fwd not in FORWARD_REASONS:
            raise ConfigurationError(f"Cache-Status: unknown fwd reason {self.fwd!r}")
        for name, _ in self.params:
            if name in _KNOWN:
                raise ConfigurationError(f"Cache-Status: {name} is a field of CacheStatus, not an extra parameter")

    def parameters(self) -> dict[str, Any]:
        """Every parameter as http-sf values (tokens as ``http_sf.Token``), in render order."""
        out: dict[str, Any] = {}
        if self.hit:
            out["hit"] = True
        if self.fwd is not None:
            out["fwd"] = http_sf.Token(self.fwd)
        if self.fwd_status is not None:
            out["fwd-status"] = self.fwd_status
        if self.ttl is not None:
            out["ttl"] = self.ttl
        if self.stored:
            out["stored"] = True
        if self.collapsed:
            out["collapsed"] = True
        if self.key is not None:
            out["key"] = self.key
        if self.detail is not None:
            out["detail"] = self.detail
        out.update(self.params)
        return out

    def render(self) -> str:
        return _serialise([self])


def _name(cache: str) -> Any:
    try:
        http_sf.ser([(http_sf.Token(cache), {})])
    except Exception:
        return cache  # not a token: an sf-string (http-sf refuses what cannot be one)
    return http_sf.Token(cache)


def _serialise(members: list[CacheStatus]) -> str:
    try:
        return str(http_sf.ser([(_name(m.cache), m.parameters()) for m in members]))
    except Exception as exc:  # http-sf refuses values outside the grammar (non-ASCII strings, ...)
        raise ConfigurationError(f"Cache-Status: cannot serialise {members!r}: {exc}") from None


def append_cache_status(existing: str | None, member: CacheStatus) -> str:
    """Add this cache's member at the end of the field (nearest the client last)."""
    return member.render() if not existing else f"{existing}, {member.render()}"


def _typed(value: str, key: str, raw: object, kind: type | tuple[type, ...]) -> Any:
    if isinstance(raw, bool) and kind is not bool:
        raise HeaderError(_HEADER, value, f"{key} must not be a boolean")
    if not isinstance(raw, kind):
        raise HeaderError(_HEADER, value, f"{key} has the wrong type ({type(raw).__name__})")
    return raw


def parse_cache_status(value: str) -> list[CacheStatus]:
    """Parse a Cache-Status field into its members, in path order."""
    try:
        data = value.encode("latin-1")
    except UnicodeEncodeError:
        raise HeaderError(_HEADER, value, "characters beyond latin-1") from None
    try:
        parsed: Any = http_sf.parse(data, tltype="list")
    except Exception as exc:
        raise HeaderError(_HEADER, value, f"not a structured-field list: {exc}") from None
    out: list[CacheStatus] = []
    for item, raw_params in parsed:
        if isinstance(item, list) or not isinstance(item, http_sf.Token | str):
            raise HeaderError(_HEADER, value, f"a cache name is a token or a string, not {item!r}")
        fields: dict[str, Any] = {}
        extra: list[tuple[str, Any]] = []
        params: dict[str, Any] = raw_params
        for key, raw in params.items():
            if key in ("hit", "stored", "collapsed"):
                fields[key] = _typed(value, key, raw, bool)
            elif key in ("ttl", "fwd-status"):
                fields[key.replace("-", "_")] = _typed(value, key, raw, int)
            elif key == "fwd":
                if not isinstance(raw, http_sf.Token) or str(raw) not in FORWARD_REASONS:
                    raise HeaderError(_HEADER, value, f"unknown fwd reason {raw!r}")
                fields["fwd"] = str(raw)
            elif key in ("key", "detail"):
                fields[key] = str(_typed(value, key, raw, (http_sf.Token, str)))
            else:
                extra.append((key, raw))
        try:
            out.append(CacheStatus(str(item), params=tuple(extra), **fields))
        except ConfigurationError as exc:
            raise HeaderError(_HEADER, value, str(exc)) from None
    return out
