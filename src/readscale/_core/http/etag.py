"""Entity tags (RFC 9110 §8.8.3): parse, compare, and derive them deterministically.

Invariants:
- A strong ETag is ``blake2b(digest_size=16)`` over the final bytes of the
  representation, base64url without padding: identical in every process, whatever
  ``PYTHONHASHSEED`` says, because Python's ``hash()`` is never involved.
- A version ETag (a cheap validator) hashes the resource's identity (its path and
  query) together with a canonical encoding of the version, so two resources at the
  same version never share a tag (no cross-resource validator confusion, P8). Only
  types with one obvious canonical bytes form are accepted as versions.
- When a representation is content-coded, the coding is part of the tag
  (``"<hash>-gzip"``), so a gzip body and an identity body never share a strong tag.
- A tag identifies one representation (RFC 9110 §8.8.3): :func:`variant_etag` folds
  in the request's values of every field the response varies on (``"<hash>.<variant>"``),
  so the French and the German page of one version, or two users' private pages, never
  share a tag; the causal-token cookie is left out of Cookie's value (it carries no
  identity) and Accept-Encoding is covered by the coding suffix.
- Comparison follows §8.8.3.2: strong comparison needs both tags strong and equal
  opaque values; weak comparison ignores the ``W/`` prefix.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Callable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Final

from readscale._core.http._grammar import check_field_value
from readscale.errors import ConfigurationError, HeaderError

_ETAGC_RE = re.compile("[\x21\x23-\x7e\x80-\xff]*")
_ETAGC = frozenset(chr(0x21) + "".join(chr(c) for c in range(0x23, 0x7F)) + "".join(chr(c) for c in range(0x80, 0x100)))


@dataclass(frozen=True, slots=True)
class EntityTag:
    """An entity-tag: the opaque value (without quotes) and whether it is weak."""

    opaque: str
    weak: bool = False

    def __post_init__(self) -> None:
        if _ETAGC_RE.fullmatch(self.opaque) is None:
            raise ConfigurationError(f"entity-tag {self.opaque!r} holds a character outside etagc")

    def render(self) -> str:
        return f'W/"{self.opaque}"' if self.weak else f'"{self.opaque}"'

    def strong_match(self, other: EntityTag) -> bool:
        return not self.weak and not other.weak and self.opaque == other.opaque

    def weak_match(self, other: EntityTag) -> bool:
        return self.opaque == other.opaque

    def with_coding(self, coding: str | None) -> EntityTag:
        """The tag of the same content once content-coded with ``coding``."""
        if not coding or coding == "identity":
            return self
        return EntityTag(f"{self.opaque}-{coding.strip().lower().replace(',', '.').replace(' ', '')}", self.weak)


class _AnyTag:
    """``*`` in If-Match / If-None-Match: any current representation."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "ANY"


ANY: Final = _AnyTag()
TagList = _AnyTag | tuple[EntityTag, ...]


def _parse_one(header: str, value: str, item: str) -> EntityTag:
    weak = item.startswith("W/")
    body = item[2:] if weak else item
    if len(body) < 2 or body[0] != '"' or body[-1] != '"':
        raise HeaderError(header, value, f"entity-tag {item!r} must be a quoted string, optionally prefixed with W/")
    opaque = body[1:-1]
    if not all(ch in _ETAGC for ch in opaque):
        raise HeaderError(header, value, f"entity-tag {item!r} holds a character outside etagc")
    return EntityTag(opaque, weak)


def parse_entity_tag(value: str, *, header: str = "ETag") -> EntityTag:
    """One entity-tag (the ETag response field)."""
    check_field_value(header, value)
    return _parse_one(header, value, value.strip(" \t"))


def _split_tags(header: str, value: str) -> list[str]:
    """Split on commas outside quotes; entity-tags have no escapes (etagc excludes DQUOTE)."""
    check_field_value(header, value)
    items: list[str] = []
    start = 0
    in_quotes = False
    for i, ch in enumerate(value):
        if ch == '"':
            in_quotes = not in_quotes
        elif ch == "," and not in_quotes:
            items.append(value[start:i])
            start = i + 1
    if in_quotes:
        raise HeaderError(header, value, "unterminated entity-tag")
    items.append(value[start:])
    return [item.strip(" \t") for item in items if item.strip(" \t")]


def parse_tag_list(value: str, *, header: str = "If-None-Match") -> TagList:
    """``"*" / #entity-tag`` (If-Match, If-None-Match). ``*`` mixed with tags is refused.

    A comma is a legal etagc character (%x2C), so the list is split with quote awareness.
    """
    items = _split_tags(header, value)
    if not items:
        raise HeaderError(header, value, "empty list")
    if items == ["*"]:
        return ANY
    if "*" in items:
        raise HeaderError(header, value, "'*' cannot be combined with entity-tags")
    return tuple(_parse_one(header, value, item) for item in items)


def strong_etag_opaque(body: bytes) -> str:
    """The opaque part of :func:`strong_etag` (22 base64url characters)."""
    return base64.urlsafe_b64encode(hashlib.blake2b(body, digest_size=16).digest())[:22].decode("ascii")


_URLSAFE: Final = bytes.maketrans(b"+/", b"-_")
_blake2b = hashlib.blake2b
_b2a_base64 = binascii.b2a_base64


def strong_etag_field(body: bytes) -> bytes:
    """The ETag field value of :func:`strong_etag` (quoted, no coding), as bytes: what a
    middleware sends for every hashed response, built without a str round trip."""
    return b'"' + _b2a_base64(_blake2b(body, digest_size=16).digest(), newline=False)[:22].translate(_URLSAFE) + b'"'


def strong_etag(body: bytes, *, coding: str | None = None) -> EntityTag:
    """The strong ETag of exactly these bytes (already content-coded, if they are)."""
    return EntityTag(strong_etag_opaque(body)).with_coding(coding)


def canonical_version(version: object) -> bytes:
    """The canonical bytes of a version value; refuses types with no stable form."""
    if isinstance(version, bool):
        return b"b:" + (b"1" if version else b"0")
    if isinstance(version, int):
        return b"i:" + str(version).encode()
    if isinstance(version, str):
        return b"s:" + version.encode("utf-8")
    if isinstance(version, bytes):
        return b"y:" + version
    if isinstance(version, datetime):
        if version.tzinfo is None:
            raise ConfigurationError("a datetime version must be timezone-aware (naive times are ambiguous)")
        return b"t:" + version.isoformat().encode()
    if isinstance(version, date):
        return b"d:" + version.isoformat().encode()
    if isinstance(version, Decimal):
        return b"x:" + str(version).encode()
    if isinstance(version, float):
        return b"f:" + version.hex().encode()
    if isinstance(version, tuple):
        parts = [canonical_version(v) for v in version]
        return b"(" + b"".join(len(p).to_bytes(4, "big") + p for p in parts) + b")"
    raise ConfigurationError(
        f"cannot derive a stable ETag from a {type(version).__name__}: use an int, str, bytes, "
        "aware datetime, date, Decimal (str() a UUID) or a tuple of those"
    )


def version_etag(identity: str, version: object) -> EntityTag:
    """A strong ETag for ``version`` of the resource named ``identity`` (path + query)."""
    h = hashlib.blake2b(digest_size=16, person=b"readscale-etag")
    h.update(identity.encode("utf-8", "surrogatepass"))
    h.update(b"\0")
    h.update(canonical_version(version))
    return EntityTag("v" + base64.urlsafe_b64encode(h.digest()).rstrip(b"=").decode("ascii"))


# Accept-Encoding is not folded in: the content coding a response got is, as a suffix
# (``with_coding``), so a gzip body and an identity body never share a tag while two
# requests that both accept gzip share one.
_CODED_BY_SUFFIX: Final = frozenset({"accept-encoding"})


def _without_cookies(value: str, ignored: AbstractSet[str]) -> str:
    """A Cookie value without the ignored cookies (sorted: order carries no identity)."""
    kept = []
    for part in value.split(";"):
        name, _, _ = part.strip().partition("=")
        if part.strip() and name.strip() not in ignored:
            kept.append(part.strip())
    return "; ".join(sorted(kept))


def variant_key(
    fields: tuple[str, ...], value_of: Callable[[str], str | None], ignored_cookies: AbstractSet[str] = frozenset()
) -> bytes | None:
    """The canonical bytes of the request fields a response varies on (``fields``:
    lower-case names; ``value_of``: the request's combined value or None when absent),
    or None when it varies on nothing a validator must fold in. Absent and empty differ;
    surrounding whitespace does not."""
    parts: list[bytes] = []
    for name in fields:
        if name in _CODED_BY_SUFFIX:
            continue
        value = value_of(name)
        if value is not None:
            value = value.strip(" \t")
            if name == "cookie" and ignored_cookies:
                value = _without_cookies(value, ignored_cookies)
        tail = b"\0" if value is None else b"=" + value.encode("utf-8", "surrogatepass")
        encoded = name.encode("latin-1", "replace") + tail
        parts.append(len(encoded).to_bytes(4, "big") + encoded)
    return b"".join(parts) if parts else None


def variant_etag(base: EntityTag, key: bytes | None) -> EntityTag:
    """The tag of the variant of ``base`` selected by the request fields in ``key`` (from
    :func:`variant_key`): a validator identifies one representation (RFC 9110 §8.8.3),
    so each language, each user of a private page, each scheme gets its own tag."""
    if key is None:
        return base
    digest = hashlib.blake2b(key, digest_size=9, person=b"readscale-vary").digest()
    return EntityTag(f"{base.opaque}.{base64.urlsafe_b64encode(digest).decode('ascii')}", base.weak)
