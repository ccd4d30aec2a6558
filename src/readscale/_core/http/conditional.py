"""Conditional requests (RFC 9110 §13) evaluated in the RFC's order, and the 304 header set.

Invariants:
- Order (§13.2.2): If-Match, then If-Unmodified-Since only when If-Match is absent, then
  If-None-Match, then If-Modified-Since only when If-None-Match is absent and the method
  is GET or HEAD. If-Range is not evaluated: readscale does not serve ranges, and a
  server that ignores Range answers 200 with the whole representation, which is allowed.
- Preconditions are evaluated only when the response would otherwise be 2xx (or 412);
  the caller checks the status first (§13.2.1).
- If-None-Match uses weak comparison, If-Match strong comparison (§13.1.1, §13.1.2);
  ``*`` matches any current representation.
- A malformed If-Match / If-None-Match raises :class:`HeaderError` (a 400 at the
  integration). A malformed If-Modified-Since / If-Unmodified-Since is *ignored*, as
  §13.1.3 and §13.1.4 require ("MUST ignore ... not a valid HTTP-date"): a 400 there
  would break clients the RFC protects. The parser itself still raises; this module
  catches it and records the date as absent.
- The 304 keeps exactly the fields §15.4.5 asks for plus those that guide caches, and
  drops representation metadata and content fields (P7).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final

from readscale._core.http.dates import parse_http_date
from readscale._core.http.etag import ANY, EntityTag, TagList, parse_tag_list
from readscale.errors import HeaderError

SAFE_FOR_304: Final = frozenset({"GET", "HEAD"})

# Fields a 304 must keep (RFC 9110 §15.4.5) and fields that only guide caches, kept too.
_KEEP_ON_304: Final = frozenset(
    {
        "cache-control",
        "content-location",
        "date",
        "etag",
        "expires",
        "vary",
        "last-modified",
        "cdn-cache-control",
        "surrogate-control",
        "xkey",
        "surrogate-key",
        "cache-tag",
        "cache-status",
        "age",
        "set-cookie",
        "server",
    }
)
# Representation metadata and content framing that a 304 must not carry.
_DROP_ON_304: Final = frozenset(
    {
        "content-type",
        "content-length",
        "content-encoding",
        "content-language",
        "content-range",
        "content-md5",
        "content-disposition",
        "transfer-encoding",
        "trailer",
    }
)


@dataclass(frozen=True, slots=True)
class Conditionals:
    """The precondition fields of one request, parsed. ``None`` means absent (or ignored)."""

    if_match: TagList | None = None
    if_none_match: TagList | None = None
    if_modified_since: int | None = None
    if_unmodified_since: int | None = None

    @property
    def any(self) -> bool:
        return (
            self.if_match is not None
            or self.if_none_match is not None
            or self.if_modified_since is not None
            or self.if_unmodified_since is not None
        )


NO_CONDITIONALS: Final = Conditionals()


def _date_or_none(header: str, value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return parse_http_date(value.strip(" \t"), header=header)
    except HeaderError:
        return None  # RFC 9110 §13.1.3/§13.1.4: an invalid date is ignored, not refused


def parse_conditionals(get: Callable[[str], str | None]) -> Conditionals:
    """Parse the precondition fields; ``get(name)`` returns a field's combined value.

    Raises :class:`HeaderError` for a malformed If-Match or If-None-Match.
    """
    im = get("if-match")
    inm = get("if-none-match")
    ims = get("if-modified-since")
    ius = get("if-unmodified-since")
    if im is None and inm is None and ims is None and ius is None:
        return NO_CONDITIONALS
    return Conditionals(
        if_match=None if im is None else parse_tag_list(im, header="If-Match"),
        if_none_match=None if inm is None else parse_tag_list(inm, header="If-None-Match"),
        if_modified_since=_date_or_none("If-Modified-Since", ims),
        if_unmodified_since=_date_or_none("If-Unmodified-Since", ius),
    )


@dataclass(frozen=True, slots=True)
class Validators:
    """The selected representation's validators (what the response would carry)."""

    etag: EntityTag | None = None
    last_modified: int | None = None


@dataclass(frozen=True, slots=True)
class Proceed:
    """No precondition stops the request: send the representation."""


@dataclass(frozen=True, slots=True)
class NotModified:
    """Answer 304 with the §15.4.5 header set (GET/HEAD only)."""


@dataclass(frozen=True, slots=True)
class PreconditionFailed:
    """Answer 412."""


Outcome = Proceed | NotModified | PreconditionFailed
PROCEED: Final = Proceed()
NOT_MODIFIED: Final = NotModified()
PRECONDITION_FAILED: Final = PreconditionFailed()


def _matches(tags: TagList, current: EntityTag | None, *, strong: bool) -> bool:
    if tags is ANY:
        return True  # the resource has a current representation: we are answering for it
    if current is None:
        return False
    assert isinstance(tags, tuple)
    if strong:
        return any(current.strong_match(t) for t in tags)
    return any(current.weak_match(t) for t in tags)


def evaluate(method: str, cond: Conditionals, validators: Validators) -> Outcome:
    """Evaluate preconditions in RFC 9110 §13.2.2 order for a would-be 2xx response."""
    if cond is NO_CONDITIONALS:
        return PROCEED
    safe = method in SAFE_FOR_304
    # Step 1 / 2
    if cond.if_match is not None:
        if not _matches(cond.if_match, validators.etag, strong=True):
            return PRECONDITION_FAILED
    elif (
        cond.if_unmodified_since is not None
        and validators.last_modified is not None
        and validators.last_modified > cond.if_unmodified_since
    ):
        return PRECONDITION_FAILED
    # Step 3 / 4
    if cond.if_none_match is not None:
        if _matches(cond.if_none_match, validators.etag, strong=False):
            return NOT_MODIFIED if safe else PRECONDITION_FAILED
    elif (
        safe
        and cond.if_modified_since is not None
        and validators.last_modified is not None
        and validators.last_modified <= cond.if_modified_since
    ):
        return NOT_MODIFIED
    return PROCEED


def not_modified_headers(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """The fields of a 304 built from the 200's fields (lower-case names expected).

    Keeps the §15.4.5 set and cache guidance; drops representation metadata. Fields
    that are neither (for example ``X-Request-Id``) are kept: they describe the
    exchange, not the representation.
    """
    return [(name, value) for name, value in headers if name not in _DROP_ON_304]


_DROP_ON_304_BYTES: Final = frozenset(n.encode("ascii") for n in _DROP_ON_304)


def is_dropped_on_304(name: bytes) -> bool:
    """True for fields a 304 must not carry (``name`` lower-case, as bytes)."""
    return name in _DROP_ON_304_BYTES


def is_kept_on_304(name: str) -> bool:
    """True for the fields RFC 9110 §15.4.5 requires a 304 to carry (and cache guidance)."""
    return name in _KEEP_ON_304


def held_variant(base: EntityTag, if_none_match: TagList | None) -> EntityTag:
    """The content-coded variant of ``base`` that the client holds, if it sent one.

    A version ETag is derived before the body exists, so before its content coding is
    known; the client may hold ``"<base>-gzip"``. Answering its If-None-Match with that
    exact tag keeps the 304's ETag equal to the one the client stored (§15.4.5).
    """
    if isinstance(if_none_match, tuple):
        prefix = base.opaque + "-"
        for tag in if_none_match:
            if tag.opaque == base.opaque or tag.opaque.startswith(prefix):
                return EntityTag(tag.opaque, base.weak)
    return base
