"""Apply the core's decisions to one response: the step every integration shares.

``finish`` takes the handler's status, its fields (lower-case names, str values) and,
when the body is complete and small enough, its bytes; it returns the status and fields
to send and whether to drop the body (304, 412). It asks the core for everything:
:func:`decide` for the caching fields, :func:`strong_etag` for the validator,
:func:`evaluate` for the preconditions.
"""

from __future__ import annotations

from typing import Final

from readscale._core.http import (
    EntityTag,
    Exchange,
    HttpSettings,
    NotModified,
    PreconditionFailed,
    Validators,
    decide,
    evaluate,
    not_modified_headers,
    parse_entity_tag,
    parse_http_date,
    strong_etag,
)
from readscale.errors import HeaderError
from readscale.http._context import HttpContext, HttpMetrics, log

# Fields the plan owns: whatever the handler set is replaced by the plan's value.
_OWNED: Final = frozenset(
    {
        "cache-control",
        "cdn-cache-control",
        "surrogate-control",
        "vary",
        "xkey",
        "surrogate-key",
        "cache-tag",
        "edge-cache-tag",
    }
)
Headers = list[tuple[str, str]]


def finish(
    ctx: HttpContext,
    settings: HttpSettings,
    metrics: HttpMetrics,
    status: int,
    headers: Headers,
    body: bytes | None,
) -> tuple[int, Headers, bool]:
    """(status, fields, drop_body) for the response the handler produced."""
    handler_cc: str | None = None
    vary_parts: list[str] = []
    sets_cookie = False
    etag_value: str | None = None
    last_modified_value: str | None = None
    coding: str | None = None
    kept: Headers = []
    for name, value in headers:
        if name in _OWNED:
            if name == "cache-control":
                handler_cc = value if handler_cc is None else f"{handler_cc}, {value}"
            elif name == "vary":
                vary_parts.append(value)
            continue
        if name == "set-cookie":
            sets_cookie = True
        elif name == "etag":
            etag_value = value
        elif name == "last-modified":
            last_modified_value = value
        elif name == "content-encoding":
            coding = value
        kept.append((name, value))

    app_304 = status == 304
    decision_status = 200 if app_304 else status
    plan = decide(
        ctx.policy,
        Exchange(
            decision_status,
            frozenset(ctx.reads),
            ctx.identity_present & frozenset(ctx.reads),
            ctx.request_authorization,
            sets_cookie,
            handler_cc,
            ", ".join(vary_parts) if vary_parts else None,
            tuple(ctx.tags),
        ),
        settings,
    )
    metrics.bump("responses")
    if plan.downgrade is not None:
        metrics.bump("downgraded")
        log.warning("readscale.http: public refused for %s response (%s); sent private", status, plan.downgrade)
    elif plan.shared:
        metrics.bump("shared")

    # Validators: the handler's own, then the cheap one, then a hash of the final bytes.
    etag: EntityTag | None = None
    if etag_value is not None:
        try:
            etag = parse_entity_tag(etag_value)
        except HeaderError:
            etag = None  # the handler's malformed ETag is sent as is, never compared
    elif ctx.etag is not None:
        etag = ctx.etag.with_coding(coding) if not app_304 else ctx.etag
        kept.append(("etag", etag.render()))
    elif plan.etag and body is not None and 200 <= status < 300 and status != 204:
        etag = strong_etag(body)
        metrics.bump("etags_computed")
        kept.append(("etag", etag.render()))
    last_modified = ctx.last_modified
    if last_modified_value is not None:
        try:
            last_modified = parse_http_date(last_modified_value, header="Last-Modified")
        except HeaderError:
            last_modified = None

    kept.append(("cache-control", plan.cache_control))
    if plan.cdn_cache_control is not None:
        kept.append(("cdn-cache-control", plan.cdn_cache_control))
    if plan.vary is not None:
        kept.append(("vary", plan.vary))
    kept.extend((name.lower(), value) for name, value in plan.tag_lines)

    if app_304:
        metrics.bump("not_modified")
        return 304, not_modified_headers(kept), True
    if 200 <= status < 300 and ctx.conditionals.any:
        outcome = evaluate(ctx.method, ctx.conditionals, Validators(etag, last_modified))
        if isinstance(outcome, NotModified):
            metrics.bump("not_modified")
            return 304, not_modified_headers(kept), True
        if isinstance(outcome, PreconditionFailed):
            metrics.bump("precondition_failed")
            return 412, [("cache-control", "no-store"), ("content-length", "0")], True
    return status, kept, False


def bad_request(exc: HeaderError) -> tuple[int, Headers, bytes]:
    """The 400 for a malformed request field: says which field and why; never cached."""
    body = f"400 Bad Request: {exc}\n".encode("latin-1", "replace")
    return (
        400,
        [
            ("content-type", "text/plain; charset=utf-8"),
            ("content-length", str(len(body))),
            ("cache-control", "no-store"),
        ],
        body,
    )
