"""The safe-default decision, validators, preconditions and tag budgets (pure core)."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from readscale._core.http import (
    ANY,
    NO_CONDITIONALS,
    Conditionals,
    EntityTag,
    Exchange,
    HttpPolicy,
    HttpSettings,
    NotModified,
    PreconditionFailed,
    Proceed,
    Validators,
    decide,
    evaluate,
    held_variant,
    not_modified_headers,
    parse_cache_control,
    render_tags,
    strong_etag,
    version_etag,
    wire_tag,
)
from readscale._core.http.surrogate import OverBudget, TagHeaders
from readscale.errors import ConfigurationError

S = HttpSettings()
PUBLIC = HttpPolicy.public(60, edge_max_age=600, stale_while_revalidate=30, stale_if_error=300, tags=("catalog",))


def test_no_policy_is_private_no_cache() -> None:
    plan = decide(None, Exchange(200), S)
    assert plan.cache_control == "private, no-cache"
    assert not plan.shared and plan.cdn_cache_control is None and plan.tag_lines == ()


def test_public_renders_edge_fields_in_cdn_cache_control() -> None:
    plan = decide(PUBLIC, Exchange(200), S)
    assert plan.cache_control == "public, max-age=60, stale-while-revalidate=30, stale-if-error=300"
    assert plan.cdn_cache_control == "max-age=600, stale-while-revalidate=30, stale-if-error=300"
    assert plan.tag_lines == (("xkey", "catalog"),)
    assert plan.shared


def test_s_maxage_compatibility_mode() -> None:
    plan = decide(PUBLIC, Exchange(200), HttpSettings(edge_ttl_header="s-maxage"))
    assert plan.cdn_cache_control is None
    assert parse_cache_control(plan.cache_control).s_maxage == 600


@pytest.mark.parametrize(
    ("exchange", "reason"),
    [
        (Exchange(200, sets_cookie=True), "sets a cookie"),
        (Exchange(200, sets_token=True), "causal token"),
        (Exchange(200, handler_vary="Cookie", identity_present=frozenset({"cookie"})), "varies on cookie"),
        (
            Exchange(200, handler_vary="authorization", identity_present=frozenset({"authorization"})),
            "varies on authorization",
        ),
        (Exchange(200, request_authorization=True), "carried Authorization"),
        (Exchange(200, handler_vary="*"), "Vary: *"),
        (Exchange(200, handler_vary=", ".join(f"x-h{i}" for i in range(7))), "max_vary"),
    ],
)
def test_public_is_refused_when_unsafe(exchange: Exchange, reason: str) -> None:
    plan = decide(PUBLIC, exchange, S)
    assert plan.cache_control == "private, no-cache"
    assert plan.downgrade is not None and reason in plan.downgrade
    assert plan.cdn_cache_control is None and plan.tag_lines == ()
    assert plan.vary is None or "*" not in plan.vary


def test_shared_auth_lifts_identity_rules_but_never_the_cookie_rule() -> None:
    shared = HttpPolicy.public(60, shared_auth=True)
    assert decide(shared, Exchange(200, request_authorization=True), S).shared
    assert decide(shared, Exchange(200, sets_cookie=True), S).downgrade == "the response sets a cookie"


def test_an_anonymous_request_to_a_page_varying_on_cookie_stays_shared_with_vary_cookie() -> None:
    plan = decide(PUBLIC, Exchange(200, handler_vary="Cookie"), S)
    assert plan.shared and plan.vary == "Cookie"


def test_declared_variance_decides_and_undeclared_reads_are_only_reported() -> None:
    lang = HttpPolicy.public(60, vary=("accept-language",))
    reads = frozenset({"accept-language", "host", "if-none-match", "x-lang", "cookie"})
    plan = decide(lang, Exchange(200, reads=reads, identity_present=frozenset({"cookie"})), S)
    assert plan.shared and plan.vary == "Accept-Language"
    assert plan.undeclared == {"x-lang"}, "a read of Cookie the driver did not attribute to the handler is plumbing"
    handler = Exchange(200, reads=reads, identity_present=frozenset({"cookie"}), identity_reads=frozenset({"cookie"}))
    read = decide(lang, handler, S)
    assert not read.shared and read.downgrade == "the handler read cookie, which the request carried"
    assert "Cookie" in (read.vary or "")
    quiet_too = decide(lang, handler, HttpSettings(framework_reads={"cookie"}))
    assert not quiet_too.shared, "framework_reads never silences the handler's own read of identity"
    anonymous = decide(lang, Exchange(200, reads=reads, identity_reads=frozenset({"cookie"})), S)
    assert anonymous.shared and anonymous.vary == "Accept-Language, Cookie"
    assert decide(HttpPolicy.public(60, shared_auth=True), handler, S).shared, "shared_auth: the same for all"
    walked = decide(lang, Exchange(200, walked=frozenset({"user-agent", "cookie"})), S)
    assert walked.shared and walked.vary == "Accept-Language" and walked.undeclared == frozenset()
    quiet = decide(lang, Exchange(200, reads=frozenset({"cookie"})), HttpSettings(framework_reads={"cookie"}))
    assert quiet.undeclared == frozenset()


def test_the_strict_vary_mode_keeps_the_old_rules() -> None:
    strict = HttpSettings(unlisted_reads="vary")
    reads = frozenset({"accept-language", "host", "if-none-match", "x-lang"})
    plan = decide(PUBLIC, Exchange(200, reads=reads), strict)
    assert plan.vary == "Accept-Language, X-Lang"
    assert decide(PUBLIC, Exchange(200, walked=frozenset({"user-agent"})), strict).vary == "User-Agent"
    carried = Exchange(200, reads=frozenset({"cookie"}), identity_present=frozenset({"cookie"}))
    assert decide(PUBLIC, carried, strict).downgrade is not None
    assert decide(PUBLIC, Exchange(200, reads=frozenset({"cookie"})), strict).vary == "Cookie"


def test_a_private_response_varies_on_identity() -> None:
    plan = decide(HttpPolicy.private(60), Exchange(200), S)
    assert plan.cache_control == "private, max-age=60" and plan.vary == "Authorization, Cookie"
    assert decide(HttpPolicy.no_store(), Exchange(200), S).vary is None


def test_a_forwarded_scheme_is_varied_on() -> None:
    plan = decide(PUBLIC, Exchange(200, forwarded="x-forwarded-proto"), S)
    assert plan.shared and plan.vary == "X-Forwarded-Proto"


def test_a_read_of_a_field_named_star_never_renders_vary_star() -> None:
    # Found by the fuzzer: '*' is a token, so it passed the field-name check.
    plan = decide(None, Exchange(200, reads=frozenset({"*", "x-lang"})), HttpSettings(unlisted_reads="vary"))
    assert plan.vary is not None and "*" not in plan.vary and "X-Lang" in plan.vary


def test_unlisted_reads_private_mode() -> None:
    strict = HttpSettings(unlisted_reads="private")
    listed = HttpPolicy.public(60, vary=("accept-language",))
    assert decide(listed, Exchange(200, reads=frozenset({"accept-language"})), strict).shared
    assert not decide(listed, Exchange(200, reads=frozenset({"x-forwarded-host"})), strict).shared


@pytest.mark.parametrize("status", [400, 404, 500, 503, 101])
def test_errors_are_no_store(status: int) -> None:
    assert decide(PUBLIC, Exchange(status), S).cache_control == "no-store"


def test_handler_cache_control_is_kept_but_made_safe() -> None:
    assert (
        decide(None, Exchange(200, handler_cache_control="public, max-age=5"), S).cache_control == "public, max-age=5"
    )
    unsafe = decide(None, Exchange(200, handler_cache_control="public, max-age=5", sets_cookie=True), S)
    assert unsafe.cache_control == "private, no-cache"
    assert decide(None, Exchange(200, handler_cache_control="max-age=bogus"), S).cache_control == "no-store"


def test_tag_budget_overflow_is_not_shared() -> None:
    many = HttpPolicy.public(60, tags=tuple(f"t{i}" for i in range(200)))
    plan = decide(many, Exchange(200), HttpSettings(edge="akamai"))
    assert not plan.shared and plan.downgrade is not None and "limit" in plan.downgrade


@pytest.mark.parametrize(
    "kwargs",
    [
        {"visibility": "private", "tags": ("a",)},
        {"visibility": "private", "edge_max_age": 5},
        {"visibility": "public", "vary": ("*",)},
        {"visibility": "public", "max_age": -1},
        {"visibility": "no-store", "max_age": 5},
        {"visibility": "shared"},
        {"visibility": "public", "vary": ("bad header",)},
    ],
)
def test_invalid_policies_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        HttpPolicy(**kwargs)  # type: ignore[arg-type]


policies = st.one_of(
    st.builds(
        HttpPolicy,
        visibility=st.just("public"),
        max_age=st.none() | st.integers(0, 10**6),
        edge_max_age=st.none() | st.integers(0, 10**6),
        stale_while_revalidate=st.none() | st.integers(0, 100),
        no_cache=st.booleans(),
        tags=st.tuples(st.sampled_from(["t", "product:1", "with space"])),
        shared_auth=st.booleans(),
    ),
    st.builds(HttpPolicy.private, max_age=st.none() | st.integers(0, 10**6)),
    st.just(HttpPolicy.no_store()),
)
exchanges = st.builds(
    Exchange,
    status=st.sampled_from([200, 204, 301, 304, 404, 500]),
    reads=st.frozensets(st.sampled_from(["cookie", "authorization", "x-lang", "accept", "host"])),
    identity_present=st.frozensets(st.sampled_from(["cookie", "authorization"])),
    request_authorization=st.booleans(),
    sets_cookie=st.booleans(),
    handler_vary=st.none() | st.sampled_from(["*", "Origin", "Accept-Encoding, *", "Cookie"]),
    sets_token=st.booleans(),
)


@given(st.none() | policies, exchanges)
def test_invariants_hold_for_every_policy_and_exchange(policy: HttpPolicy | None, exchange: Exchange) -> None:
    plan = decide(policy, exchange, S)
    cc = parse_cache_control(plan.cache_control)  # always valid
    assert plan.vary is None or "*" not in plan.vary
    if not plan.shared:
        assert plan.cdn_cache_control is None and plan.tag_lines == ()
        assert not cc.public and cc.s_maxage is None
    if exchange.sets_cookie or exchange.sets_token or exchange.status >= 400:
        assert not plan.shared
    varied = set(plan.vary_names)
    if varied & exchange.identity_present and not (policy is not None and policy.shared_auth):
        assert not plan.shared, "a shared response never varies on identity the request carried"
    if not plan.shared and "no-store" not in plan.cache_control:
        assert {"authorization", "cookie"} <= varied, "a private response varies on identity"


def test_strong_etag_is_stable_across_processes_and_hash_seeds() -> None:
    code = (
        "from readscale._core.http import strong_etag, version_etag; "
        "print(strong_etag(b'x'*99).render(), version_etag('/p?q=1', (1, 'a')).render())"
    )
    outs = {
        subprocess.run(
            [sys.executable, "-c", code], env={"PYTHONHASHSEED": seed}, capture_output=True, text=True, check=True
        ).stdout
        for seed in ("0", "1", "random")
    }
    assert len(outs) == 1
    assert outs.pop().split() == [strong_etag(b"x" * 99).render(), version_etag("/p?q=1", (1, "a")).render()]


def test_version_etags_differ_per_resource_and_version() -> None:
    assert version_etag("/a", 1) != version_etag("/b", 1)
    assert version_etag("/a", 1) != version_etag("/a", 2)
    assert version_etag("/a", 1) != version_etag("/a", "1")
    assert version_etag("/a", datetime(2026, 1, 1, tzinfo=UTC)) == version_etag("/a", datetime(2026, 1, 1, tzinfo=UTC))
    with pytest.raises(ConfigurationError):
        version_etag("/a", {1, 2})
    with pytest.raises(ConfigurationError):
        version_etag("/a", datetime(2026, 1, 1))


def test_content_coding_is_part_of_the_tag() -> None:
    base = strong_etag(b"body")
    assert base.with_coding("gzip") != base
    assert base.with_coding("identity") == base
    assert held_variant(base, (EntityTag("zz"), base.with_coding("br"))) == base.with_coding("br")
    assert held_variant(base, ANY) == base


E = EntityTag("v1")
W = EntityTag("v1", weak=True)
LM = 1000


@pytest.mark.parametrize(
    ("method", "cond", "outcome"),
    [
        ("GET", NO_CONDITIONALS, Proceed()),
        ("GET", Conditionals(if_none_match=(W,)), NotModified()),  # weak comparison
        ("GET", Conditionals(if_none_match=(EntityTag("x"), E)), NotModified()),
        ("GET", Conditionals(if_none_match=ANY), NotModified()),
        ("HEAD", Conditionals(if_none_match=(E,)), NotModified()),
        ("GET", Conditionals(if_none_match=(EntityTag("x"),)), Proceed()),
        ("PUT", Conditionals(if_none_match=(E,)), PreconditionFailed()),
        ("GET", Conditionals(if_match=(W,)), PreconditionFailed()),  # strong comparison
        ("GET", Conditionals(if_match=(E,)), Proceed()),
        ("GET", Conditionals(if_match=ANY), Proceed()),
        # If-None-Match present: If-Modified-Since is ignored (§13.2.2 step 4)
        ("GET", Conditionals(if_none_match=(EntityTag("x"),), if_modified_since=LM), Proceed()),
        ("GET", Conditionals(if_modified_since=LM), NotModified()),
        ("GET", Conditionals(if_modified_since=LM - 1), Proceed()),
        ("POST", Conditionals(if_modified_since=LM), Proceed()),
        # If-Match present: If-Unmodified-Since is ignored (§13.2.2 step 2)
        ("GET", Conditionals(if_match=(E,), if_unmodified_since=LM - 1), Proceed()),
        ("GET", Conditionals(if_unmodified_since=LM - 1), PreconditionFailed()),
        ("GET", Conditionals(if_unmodified_since=LM), Proceed()),
        # If-Match fails before If-None-Match is looked at
        ("GET", Conditionals(if_match=(EntityTag("x"),), if_none_match=(E,)), PreconditionFailed()),
    ],
)
def test_preconditions_in_rfc_9110_order(method: str, cond: Conditionals, outcome: object) -> None:
    assert evaluate(method, cond, Validators(E, LM)) == outcome


def test_not_modified_keeps_the_required_fields() -> None:
    fields = [
        ("cache-control", "public, max-age=60"),
        ("content-location", "/x"),
        ("date", "d"),
        ("etag", '"v1"'),
        ("expires", "e"),
        ("vary", "Accept"),
        ("last-modified", "lm"),
        ("content-type", "text/html"),
        ("content-length", "5"),
        ("content-encoding", "gzip"),
        ("x-request-id", "r"),
    ]
    kept = dict(not_modified_headers(fields))
    assert set(kept) == {
        "cache-control",
        "content-location",
        "date",
        "etag",
        "expires",
        "vary",
        "last-modified",
        "x-request-id",
    }


def test_tags_wire_form_and_budgets() -> None:
    assert wire_tag("product:42") == "product:42"
    hashed = wire_tag("has space")
    assert hashed.startswith("h-") and hashed == wire_tag("has space")
    assert wire_tag("x" * 300).startswith("h-")
    assert wire_tag("x" * 300, "fastly") == "x" * 300
    many = render_tags([f"tag-{i:05d}" for i in range(1500)], "varnish")
    assert isinstance(many, TagHeaders) and len(many.lines) > 1
    assert all(len(v) <= 6000 and name == "xkey" for name, v in many.lines)
    assert isinstance(render_tags([f"t{i}" for i in range(129)], "akamai"), OverBudget)
    assert render_tags(["a", "b", "a"], "cloudflare") == TagHeaders((("Cache-Tag", "a,b"),))


def test_variant_etags_differ_per_variant_and_ignore_the_causal_cookie() -> None:
    from readscale._core.http import variant_etag, variant_key

    base = version_etag("/p", 1)
    fields = ("accept-language", "cookie")

    def tag(**values: str | None) -> EntityTag:
        return variant_etag(base, variant_key(fields, values.get, frozenset({"readscale_token"})))

    fr = tag(**{"accept-language": "fr"})
    assert fr != tag(**{"accept-language": "de"}) and fr == tag(**{"accept-language": " fr "})
    assert tag(cookie="s=a") != tag(cookie="s=b") != tag()
    assert tag(cookie="s=a; readscale_token=x") == tag(cookie="readscale_token=y; s=a")
    assert tag(cookie="") != tag(), "absent and empty differ"
    assert variant_etag(base, variant_key(("accept-encoding",), {"accept-encoding": "gzip"}.get)) == base
    assert fr.opaque.startswith(base.opaque + ".")


def test_expected_vary_is_what_decide_renders_without_handler_fields() -> None:
    from readscale._core.http import expected_vary

    for policy in (PUBLIC, HttpPolicy.public(5, vary=("accept-language",)), HttpPolicy.private(60), None):
        for forwarded in (None, "x-forwarded-proto"):
            plan = decide(policy, Exchange(200, forwarded=forwarded), S)
            assert expected_vary(policy, S, forwarded) == plan.vary_names


def test_carried_identity_ignores_a_cookie_holding_only_the_causal_token() -> None:
    from readscale._core.http import carried_identity

    present = frozenset({"cookie", "accept"})
    assert carried_identity(S, present, "readscale_token=abc") == frozenset()
    assert carried_identity(S, present, "readscale_token=abc; sessionid=1") == {"cookie"}
