"""Cache-Status (RFC 9211): what each cache on the path did with a request.

Invariants:
- The field is an RFC 8941 List; each member is a cache's name (sf-token or
  sf-string) with parameters ``hit``, ``fwd``, ``fwd-status``, ``ttl``, ``stored``,
  ``collapsed``, ``key``, ``detail``. Members are in path order: the origin side first,
  the cache nearest the client last, so a cache appends its member.
- ``fwd`` is one of the RFC's tokens; ``hit`` and ``fwd`` are not both set.
- Parsing is for tests and clients reading what the edge did; it is strict on the
  parameters it knows and keeps unknown ones as text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from readscale._core.http._grammar import read_quoted, split_list
from readscale.errors import ConfigurationError, HeaderError

Forward = Literal["bypass", "method", "uri-miss", "vary-miss", "miss", "request", "stale", "partial"]
FORWARD_REASONS: Final = frozenset({"bypass", "method", "uri-miss", "vary-miss", "miss", "request", "stale", "partial"})


def _sf_key_ok(text: str) -> bool:
    first = text[:1]
    return (
        bool(first)
        and (first.islower() or first == "*")
        and all(ch.islower() or ch.isdigit() or ch in "_-.*" for ch in text)
        and text.isascii()
    )


def _sf_token_ok(text: str) -> bool:
    return (
        bool(text)
        and text.isascii()
        and (text[0].isalpha() or text[0] == "*")
        and all(ch.isalnum() or ch in "!#$%&'*+-.^_`|~:/" for ch in text)
    )


@dataclass(frozen=True, slots=True)
class CacheStatus:
    """One member of a Cache-Status field."""

    cache: str
    hit: bool = False
    fwd: Forward | None = None
    fwd_status: int | None = None
    ttl: int | None = None
    stored: bool = False
    collapsed: bool = False
    key: str | None = None
    detail: str | None = None

    def __post_init__(self) -> None:
        if self.hit and self.fwd is not None:
            raise ConfigurationError("Cache-Status: a member is a hit or forwarded, not both")
        if self.fwd is not None and self.fwd not in FORWARD_REASONS:
            raise ConfigurationError(f"Cache-Status: unknown fwd reason {self.fwd!r}")

    def render(self) -> str:
        name = self.cache if _sf_token_ok(self.cache) else _sf_string(self.cache)
        parts = [name]
        if self.hit:
            parts.append("hit")
        if self.fwd is not None:
            parts.append(f"fwd={self.fwd}")
        if self.fwd_status is not None:
            parts.append(f"fwd-status={self.fwd_status}")
        if self.ttl is not None:
            parts.append(f"ttl={self.ttl}")
        if self.stored:
            parts.append("stored")
        if self.collapsed:
            parts.append("collapsed")
        if self.key is not None:
            parts.append(f"key={_sf_string(self.key)}")
        if self.detail is not None:
            parts.append(f"detail={_sf_string(self.detail)}")
        return "; ".join(parts)


def _sf_string(text: str) -> str:
    if not all(0x20 <= ord(ch) < 0x7F for ch in text):
        raise ConfigurationError(f"Cache-Status: {text!r} is not printable ASCII")
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def append_cache_status(existing: str | None, member: CacheStatus) -> str:
    """Add this cache's member at the end of the field (nearest the client last)."""
    return member.render() if not existing else f"{existing}, {member.render()}"


def _bare_or_string(header: str, value: str, text: str) -> str:
    if text.startswith('"'):
        inner, end = read_quoted(header, text, 0)
        if end != len(text):
            raise HeaderError(header, value, "junk after a string")
        return inner
    return text


def parse_cache_status(value: str) -> list[CacheStatus]:
    """Parse a Cache-Status field into its members, in path order."""
    header = "Cache-Status"
    out: list[CacheStatus] = []
    for member in split_list(header, value):
        pieces = [p.strip(" ") for p in _split_params(header, value, member)]
        name = _bare_or_string(header, value, pieces[0])
        if not name or (not pieces[0].startswith('"') and not _sf_token_ok(name)):
            raise HeaderError(header, value, f"cache name {pieces[0]!r} is neither a token nor a string")
        fields: dict[str, object] = {}
        for param in pieces[1:]:
            key, eq, raw = param.partition("=")
            if not _sf_key_ok(key):
                raise HeaderError(header, value, f"parameter name {key!r} is not an sf-key")
            if key in ("hit", "stored", "collapsed"):
                if eq and raw != "?1":
                    raise HeaderError(header, value, f"{key} is a boolean")
                fields[key] = True
            elif key in ("ttl", "fwd-status"):
                text = raw.lstrip("-")
                if not eq or not text.isascii() or not text.isdigit() or len(text) > 15:
                    raise HeaderError(header, value, f"{key} needs an integer")
                fields[key.replace("-", "_")] = int(raw)
            elif key == "fwd":
                if raw not in FORWARD_REASONS:
                    raise HeaderError(header, value, f"unknown fwd reason {raw!r}")
                fields["fwd"] = raw
            elif key in ("key", "detail"):
                fields[key] = _bare_or_string(header, value, raw) if eq else ""
        try:
            out.append(CacheStatus(name, **fields))  # type: ignore[arg-type]
        except ConfigurationError as exc:
            raise HeaderError(header, value, str(exc)) from None
    return out


def _split_params(header: str, value: str, member: str) -> list[str]:
    parts: list[str] = []
    start = 0
    i = 0
    while i < len(member):
        if member[i] == '"':
            _, i = read_quoted(header, member, i)
            continue
        if member[i] == ";":
            parts.append(member[start:i])
            start = i + 1
        i += 1
    parts.append(member[start:])
    return parts
