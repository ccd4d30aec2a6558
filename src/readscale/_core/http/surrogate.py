"""Surrogate keys (tags) for edge caches: a portable grammar, hashing, per-vendor budgets.

Invariants:
- A tag is what the application calls it (``product:42``); the wire form is
  :func:`wire_tag`, used both when the response is tagged and when the tag is purged,
  so the two always agree. Tags within the portable grammar (visible ASCII except
  ``"``, ``,``, ``;``, ``\\`` and space) and the vendor's length limit go out as they
  are; any other tag goes out as ``h-`` plus a blake2b digest of it.
- Each vendor has a budget (bytes per tag, tags per response, bytes per header line,
  bytes in total). A response over budget is not tagged at all and must not be stored
  at the edge (the Drupal pattern): a partly tagged page would survive the purge of a
  tag it lost, which is the worst outcome. :func:`render_tags` says so with
  ``OverBudget``.
- Varnish's xkey accepts several header lines; lines are split below Varnish's
  ``http_resp_hdr_len`` (8 KiB by default) so no single line is refused.
- Tags are never rendered on private responses: :mod:`policy` checks that first (P9).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, Literal

Vendor = Literal["varnish", "fastly", "cloudflare", "akamai"]

_PORTABLE: Final = frozenset(chr(c) for c in range(0x21, 0x7F)) - frozenset('",;\\')


@dataclass(frozen=True, slots=True)
class TagBudget:
    header: str
    separator: str
    max_tag_bytes: int
    max_tags: int
    max_line_bytes: int
    max_total_bytes: int


BUDGETS: Final[dict[Vendor, TagBudget]] = {
    # xkey: several lines allowed; keep each line well under http_resp_hdr_len (8 KiB).
    "varnish": TagBudget("xkey", " ", 256, 2000, 6000, 30000),
    # Fastly: Surrogate-Key up to 16 KiB, each key up to 1024 bytes.
    "fastly": TagBudget("Surrogate-Key", " ", 1024, 4000, 16384, 16384),
    # Cloudflare: Cache-Tag values total 16 KiB, each tag up to 1024 characters.
    "cloudflare": TagBudget("Cache-Tag", ",", 1024, 4000, 16384, 16384),
    # Akamai: Edge-Cache-Tag, at most 128 tags of 128 characters.
    "akamai": TagBudget("Edge-Cache-Tag", ",", 128, 128, 16384, 16384),
}


def wire_tag(tag: str, vendor: Vendor = "varnish") -> str:
    """The form of ``tag`` on the wire for ``vendor`` (the same when tagging and purging)."""
    budget = BUDGETS[vendor]
    if tag and len(tag) <= budget.max_tag_bytes and all(ch in _PORTABLE for ch in tag):
        return tag
    digest = hashlib.blake2b(tag.encode("utf-8", "surrogatepass"), digest_size=12).digest()
    return "h-" + base64.urlsafe_b64encode(digest).decode("ascii")


@dataclass(frozen=True, slots=True)
class TagHeaders:
    """Header lines to add (name, value)."""

    lines: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class OverBudget:
    """Too many or too long tags for the vendor: do not tag, do not store at the edge."""

    reason: str


def render_tags(tags: Iterable[str], vendor: Vendor = "varnish") -> TagHeaders | OverBudget:
    budget = BUDGETS[vendor]
    wire = list(dict.fromkeys(wire_tag(t, vendor) for t in tags))
    if not wire:
        return TagHeaders(())
    if len(wire) > budget.max_tags:
        return OverBudget(f"{len(wire)} tags, over {vendor}'s limit of {budget.max_tags}")
    total = sum(len(t) for t in wire) + len(budget.separator) * (len(wire) - 1)
    if total > budget.max_total_bytes:
        return OverBudget(f"{total} bytes of tags, over {vendor}'s limit of {budget.max_total_bytes}")
    lines: list[tuple[str, str]] = []
    current: list[str] = []
    size = 0
    for tag in wire:
        extra = len(tag) + (len(budget.separator) if current else 0)
        if current and size + extra > budget.max_line_bytes:
            lines.append((budget.header, budget.separator.join(current)))
            current, size = [], 0
            extra = len(tag)
        current.append(tag)
        size += extra
    lines.append((budget.header, budget.separator.join(current)))
    if len(lines) > 1 and vendor != "varnish":
        return OverBudget(f"tags need {len(lines)} header lines; {vendor} reads one")
    return TagHeaders(tuple(lines))
