"""The response cache's rules (RFC 9111 as a shared cache, RFC 9213, RFC 5861): which
request may be answered from it, which response it may store, under which key, how fresh
a stored response is, and what a replay sends (Age, validators, 304).

Theory of operation: a route declares an :class:`HttpPolicy`; the response cache (the
drivers in ``readscale._async.http``, the faces in ``readscale.starlette``,
``readscale.django``) asks :func:`lookup_plan` *before* the handler runs whether the
request may use the cache at all and for how long an entry lives (the policy's shared
freshness plus its stale-while-revalidate window). After the handler ran behind the HTTP
middleware, the response's final fields (what the edge receives too) go to
:func:`refusal`: a response is stored only if a shared cache may store it. A stored
response is a :class:`StoredResponse`; its key is :func:`response_key` of the method,
the URL and the request's values of the fields the response varies on.

Invariants (each one a rule the tests check):
- Only GET is looked up or stored; a request carrying identity (Authorization, a cookie
  other than ``ignored_cookies``, a configured API-key field) is never answered from
  the cache and its response is never stored: the page another user got is not this
  user's (P4). A route whose declared policy is not ``public`` with a shared freshness
  is never looked up.
- Never stored: a response that sets a cookie or carries a session's causal token, a
  ``private`` or ``no-store`` one, one with ``Vary: *``, one without shared freshness
  (CDN-Cache-Control, then s-maxage, then max-age with ``public``), a status other than
  200, 203, 300, 301, 308 (P2), one larger than the driver's limit.
- Variants never cross: the key folds in the request's values of every field the
  stored response varies on, and a stored response is served only to a request whose
  values of its Vary fields equal the ones it was stored for (:func:`matches`), so an
  entry found under a key computed before the response's Vary was known is checked.
- A replay carries the stored validators (ETag, Last-Modified), ``Age`` (whole seconds
  since it was stored, RFC 9111 §5.1), and is a 304 (with the §15.4.5 field set) when
  the request's preconditions say so (RFC 9110 §13.2.2).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from functools import lru_cache
from typing import Final

from readscale._core.cache.policy import CachePolicy, OnMiss
from readscale._core.http.cache_control import CacheControl, parse_cache_control
from readscale._core.http.cache_status import CacheStatus, append_cache_status
from readscale._core.http.conditional import (
    Conditionals,
    NotModified,
    PreconditionFailed,
    Validators,
    evaluate,
    not_modified_headers,
)
from readscale._core.http.dates import parse_http_date
from readscale._core.http.etag import EntityTag, parse_entity_tag
from readscale._core.http.policy import HttpPolicy
from readscale.errors import HeaderError

Fields = tuple[tuple[str, str], ...]
FieldGetter = Callable[[str], str | None]

STORABLE_STATUS: Final = frozenset({200, 203, 300, 301, 308})
# Fields a stored response never keeps: the exchange's, not the representation's.
_NOT_STORED: Final = frozenset(
    {"age", "date", "connection", "keep-alive", "transfer-encoding", "server", "set-cookie", "readscale-token"}
)
_FORMAT: Final = b"rs-http-1\n"


class Reuse(Enum):
    """What a stored response is worth now."""

    FRESH = "fresh"  # serve it
    STALE = "stale"  # serve it and refresh it once in the background (stale-while-revalidate)
    EXPIRED = "expired"  # do not serve it: run the handler


@dataclass(frozen=True, slots=True)
class StoredResponse:
    """A rendered public response as the response cache keeps it.

    ``fields``: lower-case names, as sent (without Age, Date and hop-by-hop fields);
    ``vary``: the sorted names it varies on, ``values`` the request's values of them
    when it was stored (None: the field was absent); ``fresh_for`` and ``stale_for``:
    seconds of freshness and of stale-while-revalidate from ``stored_at``.
    """

    status: int
    fields: Fields
    body: bytes
    stored_at: float
    fresh_for: float
    stale_for: float = 0.0
    vary: tuple[str, ...] = ()
    values: tuple[str | None, ...] = ()
    tags: tuple[str, ...] = ()

    def encode(self) -> bytes:
        """The stored bytes: one JSON line of metadata, then the body as is."""
        head = json.dumps(
            [
                self.status,
                self.fields,
                self.stored_at,
                self.fresh_for,
                self.stale_for,
                self.vary,
                self.values,
                self.tags,
            ],
            separators=(",", ":"),
        ).encode("utf-8")
        return _FORMAT + head + b"\n" + self.body

    @classmethod
    def decode(cls, raw: bytes) -> StoredResponse | None:
        """The stored response, or None for bytes this format does not recognise."""
        if not raw.startswith(_FORMAT):
            return None
        head, sep, body = raw[len(_FORMAT) :].partition(b"\n")
        if not sep:
            return None
        try:
            status, fields, stored_at, fresh_for, stale_for, vary, values, tags = json.loads(head)
            return cls(
                int(status),
                tuple((str(n), str(v)) for n, v in fields),
                body,
                float(stored_at),
                float(fresh_for),
                float(stale_for),
                tuple(str(v) for v in vary),
                tuple(None if v is None else str(v) for v in values),
                tuple(str(t) for t in tags),
            )
        except (ValueError, TypeError):
            return None

    def field(self, name: str) -> str | None:
        found = [value for key, value in self.fields if key == name]
        return ", ".join(found) if found else None


@dataclass(frozen=True, slots=True)
class LookupPlan:
    """How a request may use the response cache: its key's first guess of the Vary
    fields (the policy's declared ones), and the cache policy of its entries."""

    names: tuple[str, ...]
    storage: CachePolicy


@lru_cache(maxsize=512)
def storage_policy(policy: HttpPolicy, base: CachePolicy) -> CachePolicy | None:
    """The cache policy of a route's stored responses, or None when the route is not
    shared or has no shared freshness.

    The entry lives its freshness plus its stale-while-revalidate window, with no
    jitter, no early refresh and no stale window of the cache's own: the response cache
    decides staleness from the response (:func:`reuse`) and refreshes it itself, so the
    handler runs once per key per freshness under any concurrency.
    """
    if policy.visibility != "public":
        return None
    fresh = policy.edge_max_age if policy.edge_max_age is not None else policy.max_age
    if not fresh:
        return None
    swr = policy.stale_while_revalidate or 0
    return base.with_(
        name=f"http:{base.name}",
        ttl=float(fresh + swr),
        jitter=0.0,
        swr=0.0,
        sie=0.0,
        early_refresh=0.0,
        negative_ttl=None,
        on_miss=OnMiss.WAIT,
        cacheable=True,
        versioned=False,
        read_your_writes=False,
    )


def lookup_plan(
    method: str, policy: HttpPolicy | None, identity: frozenset[str], forwarded: str | None, base: CachePolicy
) -> LookupPlan | None:
    """Whether a request may be answered from (and fill) the response cache: None when
    not (a method other than GET, identity carried, a route not shared)."""
    if method != "GET" or identity or policy is None:
        return None
    storage = storage_policy(policy, base)
    if storage is None:
        return None
    names = set(policy.vary)
    if forwarded is not None:
        names.add(forwarded)
    return LookupPlan(tuple(sorted(names)), storage)


def response_key(method: str, url: str, names: tuple[str, ...], field: FieldGetter) -> str:
    """The cache key of the variant a request selects: the method, the URL (scheme, host,
    path and query) and the request's values of ``names``, hashed (a key stays short and
    printable whatever the request held)."""
    digest = hashlib.blake2b(digest_size=20)
    digest.update(json.dumps([method, url, names, [field(n) for n in names]]).encode("utf-8", "surrogatepass"))
    return "http:" + digest.hexdigest()


def request_values(names: tuple[str, ...], field: FieldGetter) -> tuple[str | None, ...]:
    return tuple(field(n) for n in names)


def matches(stored: StoredResponse, field: FieldGetter) -> bool:
    """True when the request selects this stored variant (its Vary fields' values equal)."""
    return request_values(stored.vary, field) == stored.values


def vary_names(fields: Fields) -> tuple[tuple[str, ...], bool]:
    """The sorted names a response varies on, and whether its Vary held ``*``."""
    names: set[str] = set()
    star = False
    for key, value in fields:
        if key == "vary":
            for part in value.split(","):
                name = part.strip(" \t").lower()
                if name == "*":
                    star = True
                elif name:
                    names.add(name)
    return tuple(sorted(names)), star


def shared_freshness(fields: Fields) -> tuple[int, int] | str:
    """(freshness, stale-while-revalidate) a shared cache gives a response, from
    CDN-Cache-Control (RFC 9213), else s-maxage, else max-age with ``public``; or the
    reason it may not store it."""
    cc_text = ", ".join(v for k, v in fields if k == "cache-control")
    cdn_text = ", ".join(v for k, v in fields if k == "cdn-cache-control")
    try:
        cc = parse_cache_control(cc_text) if cc_text else CacheControl()
        cdn = parse_cache_control(cdn_text) if cdn_text else None
    except HeaderError:
        return "a malformed Cache-Control"
    if not cc.shareable:
        return "the response is private or no-store"
    for named in (cc.no_cache, cdn.no_cache if cdn is not None else False):
        # no-cache="field" (RFC 9111 §5.2.2.4): the named fields may not be reused for
        # another request without revalidation. Dropping them would still replay the rest
        # of a response built for this request, so it is not stored at all.
        if isinstance(named, tuple) and named:
            return "the response is no-cache for the fields " + ", ".join(named)
    if cdn is not None:  # the targeted field wins over Cache-Control for this cache
        if not cdn.shareable or cdn.no_cache is True:
            return "CDN-Cache-Control forbids storing it"
        if cdn.max_age is not None:
            return cdn.max_age, cdn.stale_while_revalidate or 0
    if cc.no_cache is True:
        return "the response is no-cache"
    if cc.s_maxage is not None:
        return cc.s_maxage, cc.stale_while_revalidate or 0
    if cc.public and cc.max_age is not None:
        return cc.max_age, cc.stale_while_revalidate or 0
    return "the response has no shared freshness"


def refusal(status: int, fields: Fields, body_size: int, max_body: int) -> str | None:
    """Why a response, as it leaves the HTTP middleware, may not be stored; None if it may."""
    if status not in STORABLE_STATUS:
        return f"status {status} is not stored"
    names = {k for k, _ in fields}
    if "set-cookie" in names:
        return "the response sets a cookie"
    if "readscale-token" in names:
        return "the response carries a session's causal token"
    if vary_names(fields)[1]:
        return "the response varies on *"
    if body_size > max_body:
        return f"the body ({body_size} bytes) is over the limit of {max_body}"
    fresh = shared_freshness(fields)
    if isinstance(fresh, str):
        return fresh
    if fresh[0] <= 0:
        return "the response has no shared freshness"
    return None


def to_store(
    status: int, fields: Fields, body: bytes, now: float, field: FieldGetter, tags: tuple[str, ...]
) -> StoredResponse:
    """The stored form of a response :func:`refusal` accepted."""
    fresh = shared_freshness(fields)
    assert not isinstance(fresh, str)
    names, _ = vary_names(fields)
    kept = tuple((k, v) for k, v in fields if k not in _NOT_STORED)
    return StoredResponse(
        status, kept, body, now, float(fresh[0]), float(fresh[1]), names, request_values(names, field), tags
    )


def reuse(stored: StoredResponse, now: float) -> Reuse:
    age = now - stored.stored_at
    if age < stored.fresh_for:
        return Reuse.FRESH
    if age < stored.fresh_for + stored.stale_for:
        return Reuse.STALE
    return Reuse.EXPIRED


def age_seconds(stored: StoredResponse, now: float) -> int:
    """The Age field's value: whole seconds since the response was stored (never negative)."""
    return max(0, int(now - stored.stored_at))


def validators(fields: Fields) -> Validators:
    """The validators a response carries (a malformed one is never compared)."""
    etag: EntityTag | None = None
    last_modified: int | None = None
    for key, value in fields:
        try:
            if key == "etag":
                etag = parse_entity_tag(value)
            elif key == "last-modified":
                last_modified = parse_http_date(value, header="Last-Modified")
        except HeaderError:
            continue
    return Validators(etag, last_modified)


CACHE_NAME: Final = "readscale"


def cache_status(source: str, stored: StoredResponse | None, now: float) -> CacheStatus:
    """This cache's Cache-Status member (RFC 9211): ``hit`` (with the remaining
    freshness, negative when stale), or forwarded (``miss``: stored; ``pass``: not)."""
    if stored is not None and source in ("hit", "stale"):
        return CacheStatus(CACHE_NAME, hit=True, ttl=int(stored.stored_at + stored.fresh_for - now))
    return CacheStatus(CACHE_NAME, fwd="miss" if source == "miss" else "bypass", stored=source == "miss")


def answer(
    method: str,
    status: int,
    fields: Fields,
    conditionals: Conditionals,
    age: int | None,
    member: CacheStatus | None = None,
) -> tuple[int, Fields, bool]:
    """(status, fields, drop_body) to send for a response (stored or just rendered):
    ``Age`` when it came from the cache, this cache's Cache-Status ``member``, and a
    304 (or 412) when the request's preconditions say so (evaluated for a would-be 2xx
    only)."""
    out = fields if age is None else (*fields, ("age", str(age)))
    if member is not None:
        existing = ", ".join(v for k, v in out if k == "cache-status") or None
        out = (*(p for p in out if p[0] != "cache-status"), ("cache-status", append_cache_status(existing, member)))
    if 200 <= status < 300:
        outcome = evaluate(method, conditionals, validators(fields))
        if isinstance(outcome, NotModified):
            return 304, tuple(not_modified_headers(out)), True
        if isinstance(outcome, PreconditionFailed):
            return 412, (("cache-control", "no-store"), ("content-length", "0")), True
    return status, out, False
