"""Apply the core's decisions to one response: the step every integration shares.

``finish`` takes the handler's status, its fields as ``(lower-case name, value)`` byte
pairs (the ASGI form; WSGI and Django convert) and, when the body is complete and small
enough, its bytes; it returns the status and fields to send and whether to drop the
body (304, 412). Every decision comes from the core: :func:`decide` for the caching
fields, :func:`strong_etag` for the validator, :func:`evaluate` for preconditions.

This runs on every response, so it is written for speed: one pass over the fields,
values decoded only when the core needs them, and each plan's fields encoded once.
"""

from __future__ import annotations

import contextlib
import time
from typing import Final

from readscale._core.http import (
    CLEAR_SITE_CACHE,
    NO_CONDITIONALS,
    EntityTag,
    Exchange,
    HeaderPlan,
    HttpPolicy,
    HttpSettings,
    NotModified,
    PreconditionFailed,
    Validators,
    decide,
    evaluate,
    parse_entity_tag,
    parse_http_date,
    removes_cookie,
    strong_etag_field,
)
from readscale._core.http.conditional import is_dropped_on_304
from readscale.errors import HeaderError
from readscale.http._context import HttpContext, HttpMetrics, log

RawHeaders = list[tuple[bytes, bytes]]

# Fields the plan owns: whatever the handler set is replaced by the plan's value.
_OWNED: Final = frozenset(
    {
        b"cache-control",
        b"cdn-cache-control",
        b"surrogate-control",
        b"vary",
        b"xkey",
        b"surrogate-key",
        b"cache-tag",
        b"edge-cache-tag",
    }
)
_PLAN_FIELDS: dict[int, tuple[HeaderPlan, RawHeaders]] = {}
_EMPTY: Final[frozenset[str]] = frozenset()
# A memo of decide() keyed by a plain tuple: building the frozen Exchange costs more than
# the whole lookup, so it is built only on a miss.
_DECISIONS: dict[tuple[object, ...], HeaderPlan] = {}


def _plan_fields(plan: HeaderPlan) -> RawHeaders:
    """The plan's fields, encoded once per plan (plans are memoised by ``decide``)."""
    cached = _PLAN_FIELDS.get(id(plan))
    if cached is not None and cached[0] is plan:
        return cached[1]
    fields = [(b"cache-control", plan.cache_control.encode("latin-1"))]
    if plan.cdn_cache_control is not None:
        fields.append((b"cdn-cache-control", plan.cdn_cache_control.encode("latin-1")))
    if plan.vary is not None:
        fields.append((b"vary", plan.vary.encode("latin-1")))
    fields.extend((name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in plan.tag_lines)
    if len(_PLAN_FIELDS) > 8192:
        _PLAN_FIELDS.clear()
    _PLAN_FIELDS[id(plan)] = (plan, fields)
    return fields


_SAFE_METHODS: Final = frozenset({"GET", "HEAD"})
_TOKEN_FIELD: Final = b"readscale-token"
# (route, field) pairs already warned about: once per process each, bounded.
_WARNED: set[tuple[str, str]] = set()
_WARNED_MAX: Final = 4096


def _warn_undeclared(ctx: HttpContext, metrics: HttpMetrics, fields: frozenset[str]) -> None:
    """Tracking is the safety net of declared variance: a read the policy did not
    declare is logged once per route and field, and counted."""
    metrics.bump("undeclared_reads")
    route = ctx.route_name()
    for name in sorted(fields):
        if (route, name) in _WARNED or len(_WARNED) >= _WARNED_MAX:
            continue
        _WARNED.add((route, name))
        log.warning(
            "readscale.http: %s read the request field %s, which its policy does not declare; if the response "
            "depends on it, declare it (HttpPolicy(..., vary=(%r,)) or a private policy); if your framework reads "
            "it for every request, list it in HttpSettings(framework_reads=...)",
            route,
            name,
            name,
            extra={"route": route, "field": name, "event": "undeclared_read"},
        )


# What finish() does with a response field, one dict lookup per field; names not listed
# (content-type, content-length, ...) are kept as they are.
_CC, _VARY, _OWNED_OTHER, _SET_COOKIE, _CLEAR_SITE, _TOKEN, _ETAG, _LAST_MODIFIED, _CODING = range(9)
RESPONSE_FIELD_KINDS: Final[dict[bytes, int]] = {
    **dict.fromkeys(_OWNED, _OWNED_OTHER),
    b"cache-control": _CC,
    b"vary": _VARY,
    b"set-cookie": _SET_COOKIE,
    b"clear-site-data": _CLEAR_SITE,
    _TOKEN_FIELD: _TOKEN,
    b"etag": _ETAG,
    b"last-modified": _LAST_MODIFIED,
    b"content-encoding": _CODING,
}
# The plan of the common exchange (the handler read nothing, the request carried no
# identity, the response sets no cookie nor caching fields, no tags added), cached per
# (settings, policy, status): the policy decision made once per route, its fields
# encoded once. Keyed by ids (ints hash in C); the entry holds the objects themselves,
# so an id reused after a policy was collected is never mistaken for it.
_SIMPLE: dict[tuple[int, int, int], tuple[HttpSettings, HttpPolicy | None, HeaderPlan, RawHeaders]] = {}
_SIMPLE_MAX: Final = 4096


def simple_plan(settings: HttpSettings, policy: HttpPolicy | None, status: int) -> tuple[HeaderPlan, RawHeaders]:
    key = (id(settings), id(policy), status)
    found = _SIMPLE.get(key)
    if found is not None and found[0] is settings and found[1] is policy:
        return found[2], found[3]
    exchange = Exchange(200 if status == 304 else status)
    plan = decide(policy, exchange, settings)
    fields = _plan_fields(plan)
    if len(_SIMPLE) >= _SIMPLE_MAX:
        _SIMPLE.clear()
    _SIMPLE[key] = (settings, policy, plan, fields)
    return plan, fields


# The strong ETag field of a shared body sent recently, by its bytes: a hot public page
# sends the same bytes again and again, and looking them up (Python's hash of the bytes
# and one comparison) costs a tenth of hashing them with blake2b. Equal bytes, equal tag:
# the memo cannot change a validator. Only shared bodies (a private page's bytes are never
# kept), each up to _ETAG_BODY_MAX bytes, at most _ETAGS_MAX of them (oldest out first).
ETAGS: dict[bytes, bytes] = {}
_ETAGS_MAX: Final = 512
_ETAG_BODY_MAX: Final = 8192


def shared_etag(body: bytes) -> bytes:
    """:func:`strong_etag_field` of a shared body, memoised (see ``ETAGS``)."""
    if len(body) > _ETAG_BODY_MAX or type(body) is not bytes:  # a bytearray is no key
        return strong_etag_field(body)
    quoted = ETAGS.get(body)
    if quoted is None:
        quoted = strong_etag_field(body)
        if len(ETAGS) >= _ETAGS_MAX:
            with contextlib.suppress(KeyError, RuntimeError, StopIteration):  # another thread got there first
                del ETAGS[next(iter(ETAGS))]
        ETAGS[body] = quoted
    return quoted


def finish(
    ctx: HttpContext,
    settings: HttpSettings,
    metrics: HttpMetrics,
    status: int,
    headers: RawHeaders,
    body: bytes | None,
) -> tuple[int, RawHeaders, bool]:
    """(status, fields, drop_body) for the response the handler produced.

    Field names are expected lower-case (as ASGI sends them); one that is not is lowered.
    """
    handler_cc: str | None = None
    handler_vary: str | None = None
    sets_cookie = False
    signs_out = False
    clears_site_data = False
    sets_token = False
    etag_raw: bytes | None = None
    last_modified_raw: bytes | None = None
    coding: str | None = None
    kept: RawHeaders = []
    kinds = RESPONSE_FIELD_KINDS
    for field in headers:
        pair = field
        kind = kinds.get(pair[0])
        if kind is None:
            name = pair[0]
            if name.islower() or (lowered := name.lower()) == name:
                kept.append(pair)
                continue
            pair = (lowered, pair[1])
            kind = kinds.get(lowered)
            if kind is None:
                kept.append(pair)
                continue
        if kind <= _OWNED_OTHER:
            if kind == _CC:
                value = pair[1].decode("latin-1")
                handler_cc = value if handler_cc is None else f"{handler_cc}, {value}"
            elif kind == _VARY:
                value = pair[1].decode("latin-1")
                handler_vary = value if handler_vary is None else f"{handler_vary}, {value}"
            continue
        if kind == _SET_COOKIE:
            sets_cookie = True
            if settings.clear_cache_on_sign_out and not signs_out:
                signs_out = removes_cookie(pair[1].decode("latin-1"), settings.ignored_cookies, int(time.time()))
        elif kind == _CLEAR_SITE:
            clears_site_data = True
        elif kind == _TOKEN:
            sets_token = True
        elif kind == _ETAG:
            etag_raw = pair[1]
        elif kind == _LAST_MODIFIED:
            last_modified_raw = pair[1]
        else:
            coding = pair[1].decode("latin-1")
        kept.append(pair)

    app_304 = status == 304
    if (
        not ctx.reads
        and not ctx.walked
        and not ctx.identity_anywhere
        and not ctx.identity_present
        and not ctx.request_authorization
        and not ctx.tags
        and ctx.forwarded is None
        and not sets_cookie
        and not sets_token
        and handler_cc is None
        and handler_vary is None
    ):
        policy = ctx.policy
        found = _SIMPLE.get((id(settings), id(policy), status))
        if found is not None and found[0] is settings and found[1] is policy:
            plan, plan_fields = found[2], found[3]
        else:
            plan, plan_fields = simple_plan(settings, policy, status)
    else:
        plan = _full_plan(ctx, settings, status, sets_cookie, sets_token, handler_cc, handler_vary)
        plan_fields = _plan_fields(plan)
    if plan.shared and plan.downgrade is None:  # HttpMetrics.count, inlined for the common case
        metrics.responses += 1
        metrics.shared += 1
    else:
        metrics.count(plan)
    if plan.downgrade is not None:
        log.warning(
            "readscale.http: public refused for a %s response (%s); sent private",
            status,
            plan.downgrade,
            extra={"event": "http_public_refused", "reason": plan.refusal, "status": status, "detail": plan.downgrade},
        )
    if plan.undeclared:
        _warn_undeclared(ctx, metrics, plan.undeclared)

    # Validators: the handler's own, then the cheap one, then a hash of the final bytes;
    # derived ones only for GET and HEAD (RFC 9110 §9.3.4: not on a PUT's response), each
    # with the request's values of what the response varies on folded in (§8.8.3).
    conditionals = ctx.conditionals
    conditional = conditionals is not NO_CONDITIONALS and conditionals.any
    etag: EntityTag | None = None
    if etag_raw is not None:
        try:
            etag = parse_entity_tag(etag_raw.decode("latin-1"))
        except HeaderError:
            etag = None  # the handler's malformed ETag is sent as is, never compared
    elif ctx.method not in _SAFE_METHODS:
        pass  # no validator sent; an unsafe method's preconditions were checked before it acted
    elif ctx.etag is not None and ctx.etag_base is not None:
        if app_304 or plan.vary_names == ctx.etag_fields:
            etag = ctx.etag if app_304 else ctx.etag.with_coding(coding)
        else:  # the response varies on more than the check foresaw: its own tag
            etag = ctx.variant(ctx.etag_base, plan.vary_names).with_coding(coding)
        kept.append((b"etag", etag.render().encode("latin-1")))
    elif plan.etag and body is not None and 200 <= status < 300 and status != 204:
        quoted = shared_etag(body) if plan.shared else strong_etag_field(body)
        if plan.vary_names:
            etag = ctx.variant(EntityTag(quoted[1:-1].decode("ascii")), plan.vary_names)
            kept.append((b"etag", etag.render().encode("latin-1")))
        else:  # the common public page: no variant to fold in, no object to build
            kept.append((b"etag", quoted))
            if conditional:
                etag = EntityTag(quoted[1:-1].decode("ascii"))
    last_modified = ctx.last_modified
    if last_modified_raw is not None:
        try:
            last_modified = parse_http_date(last_modified_raw.decode("latin-1"), header="Last-Modified")
        except HeaderError:
            last_modified = None

    kept += plan_fields
    if signs_out and not clears_site_data:
        # Back would restore the signed-out user's pages from the back/forward cache.
        kept.append((b"clear-site-data", CLEAR_SITE_CACHE.encode("latin-1")))
    if app_304:
        metrics.bump("not_modified")
        return 304, [pair for pair in kept if not is_dropped_on_304(pair[0])], True
    # Preconditions of an unsafe method are evaluated by check_not_modified before the
    # handler acts; evaluating them here, after the change was made, would mean nothing.
    if conditional and 200 <= status < 300 and ctx.method in _SAFE_METHODS:
        outcome = evaluate(ctx.method, conditionals, Validators(etag, last_modified))
        if isinstance(outcome, NotModified):
            metrics.bump("not_modified")
            return 304, [pair for pair in kept if not is_dropped_on_304(pair[0])], True
        if isinstance(outcome, PreconditionFailed):
            metrics.bump("precondition_failed")
            return 412, [(b"cache-control", b"no-store"), (b"content-length", b"0")], True
    return status, kept, False


def _full_plan(
    ctx: HttpContext,
    settings: HttpSettings,
    status: int,
    sets_cookie: bool,
    sets_token: bool,
    handler_cc: str | None,
    handler_vary: str | None,
) -> HeaderPlan:
    """The plan of any exchange (memoised on everything :func:`decide` reads)."""
    reads = frozenset(ctx.reads) if ctx.reads else _EMPTY
    walked = frozenset(ctx.walked) if ctx.walked else _EMPTY
    identity_reads = ctx.identity_seen() if ctx.identity_anywhere else _EMPTY
    key = (
        settings,  # two apps in one process may differ
        ctx.policy,
        status,
        reads,
        walked,
        ctx.identity_present,
        ctx.request_authorization,
        sets_cookie,
        sets_token,
        handler_cc,
        handler_vary,
        ctx.tags,
        ctx.forwarded,
        identity_reads,
    )
    plan = _DECISIONS.get(key)
    if plan is None:
        exchange = Exchange(
            200 if status == 304 else status,
            reads,
            ctx.identity_present,
            ctx.request_authorization,
            sets_cookie,
            handler_cc,
            handler_vary,
            ctx.tags,
            walked,
            sets_token,
            ctx.forwarded,
            identity_reads,
        )
        plan = decide(ctx.policy, exchange, settings)
        if len(_DECISIONS) >= 4096:
            _DECISIONS.clear()
        _DECISIONS[key] = plan
    return plan


def finish_str(
    ctx: HttpContext,
    settings: HttpSettings,
    metrics: HttpMetrics,
    status: int,
    headers: list[tuple[str, str]],
    body: bytes | None,
) -> tuple[int, list[tuple[str, str]], bool]:
    """:func:`finish` for frameworks with ``str`` fields (WSGI, Django)."""
    raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers]
    status, out, drop = finish(ctx, settings, metrics, status, raw, body)
    return status, [(k.decode("latin-1"), v.decode("latin-1")) for k, v in out], drop


def bad_request(exc: HeaderError) -> tuple[int, list[tuple[str, str]], bytes]:
    """The 400 for a malformed request field: says which field and why; never cached.

    The value is quoted escaped (``repr``, cut at 80 characters) in plain text that a
    browser must not sniff as anything else."""
    body = f"400 Bad Request: {exc}\n".encode("utf-8", "replace")
    return (
        400,
        [
            ("content-type", "text/plain; charset=utf-8"),
            ("content-length", str(len(body))),
            ("cache-control", "no-store"),
            ("x-content-type-options", "nosniff"),
        ],
        body,
    )
