"""Cache-Control (RFC 9111 §5.2) and CDN-Cache-Control (RFC 9213): parse and render.

Invariants:
- ``cache-directive = token [ "=" ( token / quoted-string ) ]``; names are
  case-insensitive and kept lower-case. Arguments are accepted in both forms for every
  directive (§5.2: recipients ought to), and rendered in the form the RFC prefers
  (delta-seconds as a token, field-name lists quoted).
- delta-seconds is ``1*DIGIT``; a value past 2^31 is read as 2^31 (RFC 9111 §1.2.2).
- A directive repeated with different arguments is refused: RFC 9111 §4.2.1 lets a
  cache pick the first or treat the response as stale, and an origin that emits both
  has a bug worth surfacing. Repeats with the same argument are harmless and merged.
- Unknown directives are kept, in order, as extensions (§5.2.3): they must be ignored,
  not dropped, by a proxy that re-renders the field.
- Rendering is canonical (a fixed order), so equal values render to equal strings.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from readscale._core.http._grammar import is_token, quote, read_quoted, split_list
from readscale.errors import HeaderError

DELTA_SECONDS_MAX = 2**31

# directive -> kind: "flag" (no argument), "delta" (delta-seconds), "optional-delta"
# (max-stale), "fields" (optional quoted field-name list: no-cache, private).
_KNOWN: dict[str, str] = {
    "max-age": "delta",
    "s-maxage": "delta",
    "max-stale": "optional-delta",
    "min-fresh": "delta",
    "stale-while-revalidate": "delta",
    "stale-if-error": "delta",
    "no-cache": "fields",
    "private": "fields",
    "no-store": "flag",
    "no-transform": "flag",
    "only-if-cached": "flag",
    "must-revalidate": "flag",
    "proxy-revalidate": "flag",
    "must-understand": "flag",
    "public": "flag",
    "immutable": "flag",
}


@dataclass(frozen=True, slots=True)
class CacheControl:
    """A parsed Cache-Control (or CDN-Cache-Control) field.

    ``None`` means the directive is absent. ``no_cache``/``private`` are ``True`` for the
    bare directive or a tuple of field names for the qualified form.
    """

    max_age: int | None = None
    s_maxage: int | None = None
    stale_while_revalidate: int | None = None
    stale_if_error: int | None = None
    max_stale: int | bool | None = None
    min_fresh: int | None = None
    no_cache: bool | tuple[str, ...] = False
    private: bool | tuple[str, ...] = False
    public: bool = False
    no_store: bool = False
    no_transform: bool = False
    only_if_cached: bool = False
    must_revalidate: bool = False
    proxy_revalidate: bool = False
    must_understand: bool = False
    immutable: bool = False
    extensions: tuple[tuple[str, str | None], ...] = field(default=())

    @property
    def shareable(self) -> bool:
        """True when nothing in the field forbids a shared cache to store the response."""
        return not (self.private or self.no_store)

    def render(self) -> str:
        parts: list[str] = []
        if self.public:
            parts.append("public")
        if self.private is True:
            parts.append("private")
        elif self.private:
            parts.append('private="' + ", ".join(self.private) + '"')
        if self.no_store:
            parts.append("no-store")
        if self.no_cache is True:
            parts.append("no-cache")
        elif self.no_cache:
            parts.append('no-cache="' + ", ".join(self.no_cache) + '"')
        for name, value in (
            ("max-age", self.max_age),
            ("s-maxage", self.s_maxage),
            ("min-fresh", self.min_fresh),
        ):
            if value is not None:
                parts.append(f"{name}={value}")
        if self.max_stale is True:
            parts.append("max-stale")
        elif self.max_stale is not None and self.max_stale is not False:
            parts.append(f"max-stale={self.max_stale}")
        for flag, name in (
            (self.must_revalidate, "must-revalidate"),
            (self.proxy_revalidate, "proxy-revalidate"),
            (self.must_understand, "must-understand"),
            (self.no_transform, "no-transform"),
            (self.only_if_cached, "only-if-cached"),
            (self.immutable, "immutable"),
        ):
            if flag:
                parts.append(name)
        if self.stale_while_revalidate is not None:
            parts.append(f"stale-while-revalidate={self.stale_while_revalidate}")
        if self.stale_if_error is not None:
            parts.append(f"stale-if-error={self.stale_if_error}")
        for name, arg in self.extensions:
            parts.append(name if arg is None else f"{name}={quote(arg)}")
        return ", ".join(parts)


def _delta(header: str, value: str, name: str, arg: str) -> int:
    if not arg or not arg.isascii() or not arg.isdigit():
        raise HeaderError(header, value, f"{name} needs delta-seconds (digits), got {arg!r}")
    return min(int(arg), DELTA_SECONDS_MAX)


def _field_names(header: str, value: str, name: str, arg: str) -> tuple[str, ...]:
    names = tuple(part.strip(" \t").lower() for part in arg.split(","))
    names = tuple(n for n in names if n)
    if not names or not all(is_token(n) for n in names):
        raise HeaderError(header, value, f"{name} takes a list of field names, got {arg!r}")
    return names


def parse_directives(header: str, value: str) -> list[tuple[str, str | None]]:
    """Split a field into ``(lower-case name, argument or None)`` pairs, strictly."""
    out: list[tuple[str, str | None]] = []
    for item in split_list(header, value):
        name, eq, rest = item.partition("=")
        name = name.rstrip(" \t")
        if not is_token(name):
            raise HeaderError(header, value, f"directive name {name!r} is not a token")
        if not eq:
            out.append((name.lower(), None))
            continue
        rest = rest.lstrip(" \t")
        if rest.startswith('"'):
            arg, end = read_quoted(header, rest, 0)
            if rest[end:].strip(" \t"):
                raise HeaderError(header, value, f"junk after the quoted argument of {name}")
        else:
            arg = rest.rstrip(" \t")
            if not is_token(arg):
                raise HeaderError(header, value, f"argument of {name} is neither a token nor a quoted string")
        out.append((name.lower(), arg))
    return out


def parse_cache_control(value: str, *, header: str = "Cache-Control") -> CacheControl:
    """Parse a Cache-Control (or, with ``header=``, CDN-Cache-Control) field value.

    Raises :class:`HeaderError` on anything outside the grammar, on a known directive
    with a malformed argument, and on a directive repeated with a different argument.
    """
    seen: dict[str, str | None] = {}
    values: dict[str, object] = {}
    extensions: list[tuple[str, str | None]] = []
    for name, arg in parse_directives(header, value):
        if name in seen:
            if seen[name] != arg:
                raise HeaderError(header, value, f"{name} appears twice with different arguments")
            continue
        seen[name] = arg
        kind = _KNOWN.get(name)
        attr = name.replace("-", "_")
        if kind is None:
            extensions.append((name, arg))
        elif kind == "flag":
            if arg is not None:
                raise HeaderError(header, value, f"{name} takes no argument")
            values[attr] = True
        elif kind == "delta":
            if arg is None:
                raise HeaderError(header, value, f"{name} needs an argument")
            values[attr] = _delta(header, value, name, arg)
        elif kind == "optional-delta":
            values[attr] = True if arg is None else _delta(header, value, name, arg)
        else:  # fields
            values[attr] = True if arg is None else _field_names(header, value, name, arg)
    return CacheControl(**values, extensions=tuple(extensions))  # type: ignore[arg-type]
