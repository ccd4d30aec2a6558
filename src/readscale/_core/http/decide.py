"""The safe-default decision of the HTTP layer: which caching fields a response gets
(RFC 9111, RFC 9213), from its route's policy (``readscale._core.http.policy``) and what
the driver observed.

Theory of operation: a route declares an :class:`HttpPolicy` (or none). After the
handler ran, the driver describes what happened in an :class:`Exchange` (status, which
identity fields the request carried, whether the response sets a cookie or a session
token, what Cache-Control and Vary the handler and its framework set, which request
fields were seen being read) and :func:`decide` returns a :class:`HeaderPlan`: the
exact fields to send. The driver only writes them.

**Declared variance, detected reads.** What a response varies on is *declared*: the
policy's ``vary`` fields, the Vary the handler or its framework sets (Django and Flask
add ``Vary: Cookie`` when a view touched the session), the identity fields of a private
response, and X-Forwarded-Proto / Forwarded when the request carried them (a server may
have taken the scheme from them before any middleware ran). Reads of request fields
are *detected* by a tracker, but a tracker cannot tell a handler's read from its
framework's plumbing (FastAPI's dependency solver reads Cookie on every request;
Werkzeug walks every field to parse cookies; session middleware reads Cookie), so by
default (``unlisted_reads="warn"``) an undeclared read changes nothing and is reported
in :attr:`HeaderPlan.undeclared` for the driver to warn about once and count. The one
exception, safe by default: an identity field the *handler* read (the driver tells its
framework's plumbing apart, see ``readscale.http._tracker``) is varied on, so the
response is private when the request carried it (``Exchange.identity_reads``). The
strict modes restore the old rules: ``"vary"`` adds every read to Vary (and an identity
field read and carried makes the response private), ``"private"`` refuses to share a
response whose handler read anything undeclared.

Invariants (each one a rule the tests check):
- No policy and no handler Cache-Control → ``private, no-cache`` (P11: a shared cache
  never applies heuristic freshness to a readscale response).
- ``public`` is refused (downgraded to ``private, no-cache``, with a reason the driver
  logs and counts) when the response sets a cookie or carries a session's causal token,
  when the request carried Authorization, or when the response varies on an identity
  field the request carried; only ``shared_auth=True`` lifts the identity rules, never
  the cookie rule (P4).
- A private response varies on the identity fields (Authorization, Cookie and the
  configured API-key fields): a browser reuses it without asking only for the same
  user, and its validator folds the identity in (see ``etag.variant_etag``).
- ``Vary: *`` is never emitted (P5); a handler's ``*`` makes the response private.
- A private or no-store response never carries CDN-Cache-Control, Surrogate-Control,
  s-maxage or surrogate keys (P9).
- Edge freshness and stale windows go in CDN-Cache-Control by default (P10: s-maxage
  implies proxy-revalidate, which contradicts serving stale); ``s-maxage`` is the
  compatibility mode for shared caches that do not read RFC 9213.
- Error responses (4xx, 5xx) are ``no-store`` (P2, cache-poisoned DoS).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Final

from readscale._core.http._grammar import is_token
from readscale._core.http.cache_control import parse_cache_control
from readscale._core.http.policy import (
    UNVARIED_FIELDS,
    EdgeTtlHeader,
    HttpPolicy,
    HttpSettings,
)
from readscale._core.http.surrogate import OverBudget, render_tags
from readscale.errors import HeaderError

_SHAREABLE_STATUS: Final = frozenset({200, 203, 204, 300, 301, 308})


@dataclass(frozen=True, slots=True)
class Exchange:
    """What the driver observed of one request and its response.

    - ``reads``: request fields (lower-case) seen looked up by name, present or not;
      ``walked``: fields seen only while something walked every field (Werkzeug's
      cookie parsing does). Both are detections, see the module's doc.
    - ``identity_present``: identity fields the request carried (a Cookie holding only
      ``ignored_cookies`` is not identity).
    - ``sets_cookie`` / ``sets_token``: the response sets a cookie / carries a
      session's causal token (``Readscale-Token``).
    - ``forwarded``: the forwarding field the request carried that a server may have
      taken the scheme from (``x-forwarded-proto`` or ``forwarded``), or None.
    - ``identity_reads``: identity fields the handler itself read (its framework's
      plumbing told apart by the driver): the response varies on them, in every mode.
    """

    status: int
    reads: frozenset[str] = frozenset()
    identity_present: frozenset[str] = frozenset()
    request_authorization: bool = False
    sets_cookie: bool = False
    handler_cache_control: str | None = None
    handler_vary: str | None = None
    extra_tags: tuple[str, ...] = ()
    walked: frozenset[str] = frozenset()
    sets_token: bool = False
    forwarded: str | None = None
    identity_reads: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class HeaderPlan:
    """The caching fields to send. ``None`` values are not sent (and removed if present).

    ``vary_names``: the lower-case names in ``vary``, sorted (what a validator folds in);
    ``undeclared``: detected reads the route did not declare (the driver warns);
    ``refusal``: the short code of ``downgrade`` (``cookie``, ``authorization``...), for metrics.
    """

    cache_control: str
    cdn_cache_control: str | None = None
    vary: str | None = None
    tag_lines: tuple[tuple[str, str], ...] = ()
    shared: bool = False
    etag: bool = False
    downgrade: str | None = None
    refusal: str | None = None
    vary_names: tuple[str, ...] = ()
    undeclared: frozenset[str] = frozenset()


_NO_STORE_PLAN: Final = HeaderPlan("no-store")
_PRIVATE_NO_CACHE: Final = "private, no-cache"


def _field_title(name: str) -> str:
    return "-".join(part[:1].upper() + part[1:] for part in name.split("-"))


def _render_vary(names: frozenset[str] | tuple[str, ...]) -> str | None:
    return ", ".join(_field_title(n) for n in sorted(names)) if names else None


# Identity fields a private response varies on: Proxy-Authorization is consumed by the
# proxy it names and never identifies the user to the origin.
_HOP_IDENTITY: Final = frozenset({"proxy-authorization"})


def private_vary(settings: HttpSettings) -> frozenset[str]:
    """The identity fields every private response varies on."""
    return settings.identity_fields - _HOP_IDENTITY


@lru_cache(maxsize=1024)
def expected_vary(policy: HttpPolicy | None, settings: HttpSettings, forwarded: str | None) -> tuple[str, ...]:
    """What a response of ``policy`` varies on before its handler runs (sorted names):
    the policy's declared fields, identity when private, the forwarding field carried.
    A cheap validator (``check_not_modified``) folds in exactly these; :func:`decide`
    renders at least these."""
    chosen = policy if policy is not None else settings.default_policy
    names = set(chosen.vary)
    if chosen.visibility == "private":
        names |= private_vary(settings)
    if forwarded is not None and chosen.visibility != "no-store":
        names.add(forwarded)
    return tuple(sorted(names))


@lru_cache(maxsize=512)
def _render(policy: HttpPolicy, mode: EdgeTtlHeader) -> tuple[str, str | None]:
    """(Cache-Control, CDN-Cache-Control) of a policy as declared, before downgrades."""
    if policy.visibility == "no-store":
        return "no-store", None
    stale = []
    if policy.stale_while_revalidate is not None:
        stale.append(f"stale-while-revalidate={policy.stale_while_revalidate}")
    if policy.stale_if_error is not None:
        stale.append(f"stale-if-error={policy.stale_if_error}")
    cc: list[str] = [policy.visibility]
    if policy.no_cache or (policy.visibility == "private" and policy.max_age is None):
        cc.append("no-cache")
    if policy.max_age is not None and not (policy.no_cache and policy.max_age == 0):
        cc.append(f"max-age={policy.max_age}")
    elif policy.visibility == "public" and not policy.no_cache:
        cc.append("max-age=0")
    cdn = None
    if policy.visibility == "public" and policy.edge_max_age is not None:
        if mode == "s-maxage":
            cc.append(f"s-maxage={policy.edge_max_age}")
        else:
            cdn = ", ".join([f"max-age={policy.edge_max_age}", *stale])
    if policy.must_revalidate:
        cc.append("must-revalidate")
    if policy.immutable:
        cc.append("immutable")
    cc.extend(stale)
    return ", ".join(cc), cdn


def _handler_plan(value: str) -> tuple[str, bool]:
    """A handler's own Cache-Control: (value to send, shareable?). Malformed → no-store."""
    try:
        parsed = parse_cache_control(value)
    except HeaderError:
        return "no-store", False
    shareable = parsed.shareable and (parsed.public or parsed.s_maxage is not None)
    return parsed.render(), shareable


def _vary_names(value: str | None) -> tuple[frozenset[str], bool]:
    """Names in a handler's Vary, and whether it held '*'. What is not a field name
    (a token) is dropped: it could not be a request field, and sent back it could
    break the response's framing."""
    if not value:
        return frozenset(), False
    names = frozenset(n.strip(" \t").lower() for n in value.split(",") if n.strip(" \t"))
    return frozenset(n for n in names if n != "*" and is_token(n)), "*" in names


@lru_cache(maxsize=4096)
def decide(policy: HttpPolicy | None, exchange: Exchange, settings: HttpSettings) -> HeaderPlan:
    """The caching fields for one response (see the module's invariants)."""
    if exchange.status >= 400 or exchange.status < 200:
        return _NO_STORE_PLAN
    chosen = policy
    if chosen is None and exchange.handler_cache_control is None:
        chosen = settings.default_policy
    if chosen is not None and chosen.visibility == "no-store":
        return _NO_STORE_PLAN

    mode = settings.unlisted_reads
    handler_vary, star = _vary_names(exchange.handler_vary)
    declared = frozenset(chosen.vary) if chosen is not None else frozenset()
    # '*' is a token but no field name: in Vary it would mean "never reusable".
    identity_read = exchange.identity_reads & settings.identity_fields
    if mode == "warn":  # the framework's identity reads are plumbing; the handler's count
        seen = (exchange.reads - settings.identity_fields) | identity_read
    else:
        seen = exchange.reads | exchange.walked
    read = frozenset(n for n in seen - UNVARIED_FIELDS - settings.framework_reads if n != "*" and is_token(n))
    unlisted = read - declared - handler_vary
    vary = declared | handler_vary
    if mode == "vary":
        vary |= read
    if exchange.forwarded is not None:
        vary |= {exchange.forwarded}

    if chosen is not None:
        cache_control, cdn = _render(chosen, settings.edge_ttl_header)
        shared = chosen.visibility == "public"
        shared_auth = chosen.shared_auth
        want_etag = chosen.etag
        tags = chosen.tags + exchange.extra_tags
    else:
        assert exchange.handler_cache_control is not None
        cache_control, shared = _handler_plan(exchange.handler_cache_control)
        cdn, shared_auth, want_etag, tags = None, False, True, exchange.extra_tags
    # Safe by default: what the handler read of who is asking, the response varies on
    # (framework_reads never silences it; only shared_auth says the page is the same
    # for everybody).
    if not shared_auth:
        vary |= identity_read
    # Identity the response depends on: declared, read by the handler (or, in "vary"
    # mode, read by anyone).
    identity_used = vary & exchange.identity_present & settings.identity_fields

    reason = None
    refusal = None  # the reason's short code: a bounded metric label
    if shared:
        if exchange.sets_cookie:
            reason = "the response sets a cookie"
            refusal = "cookie"
        elif exchange.sets_token:
            reason = "the response carries a session's causal token"
            refusal = "causal_token"
        elif identity_used & identity_read and not shared_auth:
            used = ", ".join(sorted(identity_used & identity_read))
            reason = f"the handler read {used}, which the request carried"
            refusal = "identity_read"
        elif identity_used and not shared_auth:
            reason = "the response varies on " + ", ".join(sorted(identity_used)) + ", which the request carried"
            refusal = "identity_vary"
        elif exchange.request_authorization and not shared_auth:
            reason = "the request carried Authorization"
            refusal = "authorization"
        elif star:
            reason = "the handler set Vary: *"
            refusal = "vary_star"
        elif unlisted and mode == "private":
            reason = "the handler read unlisted fields " + ", ".join(sorted(unlisted))
            refusal = "unlisted_read"
        elif len(vary) > settings.max_vary:
            reason = f"the response varies on {len(vary)} fields, over max_vary={settings.max_vary}"
            refusal = "max_vary"
        elif exchange.status not in _SHAREABLE_STATUS:
            reason = f"status {exchange.status} is not shared"
            refusal = "status"
    tag_lines: tuple[tuple[str, str], ...] = ()
    if shared and reason is None and tags and settings.edge is not None:
        rendered = render_tags(tags, settings.edge)
        if isinstance(rendered, OverBudget):
            reason = rendered.reason
            refusal = "tags_over_budget"
        else:
            tag_lines = rendered.lines
    undeclared: frozenset[str] = frozenset()
    if mode == "warn":  # a private response is expected to read identity: it varies on it
        undeclared = unlisted if shared and reason is None else unlisted - settings.identity_fields
    if reason is not None or (not shared and "no-store" not in cache_control):
        vary |= private_vary(settings)
    names = tuple(sorted(vary))
    if reason is not None:
        return HeaderPlan(
            _PRIVATE_NO_CACHE,
            vary=_render_vary(names),
            etag=want_etag,
            downgrade=reason,
            refusal=refusal,
            vary_names=names,
            undeclared=undeclared,
        )
    if star and not shared:
        cache_control = cache_control if "no-store" in cache_control else _PRIVATE_NO_CACHE
    return HeaderPlan(
        cache_control,
        cdn_cache_control=cdn if shared else None,
        vary=_render_vary(names),
        tag_lines=tag_lines,
        shared=shared,
        etag=want_etag,
        vary_names=names,
        undeclared=undeclared,
    )


def carried_identity(settings: HttpSettings, present: frozenset[str], cookie: str | None) -> frozenset[str]:
    """The identity fields a request carried (``present``: its field names, lower-case;
    ``cookie``: its Cookie value). A Cookie holding only ``ignored_cookies`` (the causal
    token's) is no identity: that reader is anonymous."""
    found = present & settings.identity_fields
    if "cookie" in found and cookie is not None:
        names = {part.strip().partition("=")[0].strip() for part in cookie.split(";") if part.strip()}
        if names <= settings.ignored_cookies:
            found = found - {"cookie"}
    return found
