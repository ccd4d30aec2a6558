"""The response cache's pure rules (readscale._core.http.stored): what is stored, keys,
variants, freshness, Age and the replayed 304."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from readscale._core.cache.policy import CachePolicy
from readscale._core.http import HttpPolicy, parse_conditionals
from readscale._core.http.stored import (
    Reuse,
    StoredResponse,
    age_seconds,
    answer,
    lookup_plan,
    matches,
    refusal,
    response_key,
    reuse,
    shared_freshness,
    storage_policy,
    to_store,
)

BASE = CachePolicy(name="responses")
PUBLIC = (("cache-control", "public, max-age=0"), ("cdn-cache-control", "max-age=60, stale-while-revalidate=5"))


def getter(values: dict[str, str]):  # type: ignore[no-untyped-def]
    return values.get


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        (PUBLIC, (60, 5)),
        ((("cache-control", "public, s-maxage=30, max-age=5"),), (30, 0)),
        ((("cache-control", "public, max-age=10"),), (10, 0)),
        ((("cache-control", "max-age=10"),), "the response has no shared freshness"),
        ((("cache-control", "private, max-age=10"),), "the response is private or no-store"),
        ((("cache-control", "no-store"),), "the response is private or no-store"),
        ((("cache-control", "public, no-cache"),), "the response is no-cache"),
        ((("cache-control", "public, no-cache"), ("cdn-cache-control", "max-age=9")), (9, 0)),
        (
            (("cache-control", "public, max-age=5"), ("cdn-cache-control", "no-store")),
            "CDN-Cache-Control forbids storing it",
        ),
        ((("cache-control", 'public, max-age="x'),), "a malformed Cache-Control"),
        # A field-qualified no-cache (RFC 9111 §5.2.2.4): the named fields may not be
        # replayed to another request, so the response is not stored at all.
        (
            (("cache-control", 'public, max-age=60, no-cache="x-user"'),),
            "the response is no-cache for the fields x-user",
        ),
        (
            (("cache-control", 'public, no-cache="x-user, x-b"'), ("cdn-cache-control", "max-age=9")),
            "the response is no-cache for the fields x-user, x-b",
        ),
        (
            (("cache-control", "public, max-age=5"), ("cdn-cache-control", 'max-age=9, no-cache="x-user"')),
            "the response is no-cache for the fields x-user",
        ),
    ],
)
def test_shared_freshness(fields: tuple[tuple[str, str], ...], expected: object) -> None:
    assert shared_freshness(fields) == expected


@pytest.mark.parametrize(
    ("status", "extra", "size", "reason"),
    [
        (200, (), 10, None),
        (404, (), 10, "status 404 is not stored"),
        (500, (), 10, "status 500 is not stored"),
        (200, (("set-cookie", "a=b"),), 10, "the response sets a cookie"),
        (200, (("readscale-token", "t"),), 10, "the response carries a session's causal token"),
        (200, (("vary", "Accept, *"),), 10, "the response varies on *"),
        (200, (), 11, "the body (11 bytes) is over the limit of 10"),
    ],
)
def test_refusal(status: int, extra: tuple[tuple[str, str], ...], size: int, reason: str | None) -> None:
    assert refusal(status, (*PUBLIC, *extra), size, 10) == reason


def test_only_anonymous_gets_of_shared_routes_are_looked_up() -> None:
    public = HttpPolicy.public(0, edge_max_age=60, vary=("accept-language",))
    plan = lookup_plan("GET", public, frozenset(), "x-forwarded-proto", BASE)
    assert plan is not None and plan.names == ("accept-language", "x-forwarded-proto")
    assert plan.storage.ttl == 60 and plan.storage.early_refresh == 0 and plan.storage.jitter == 0
    assert lookup_plan("HEAD", public, frozenset(), None, BASE) is None
    assert lookup_plan("POST", public, frozenset(), None, BASE) is None
    assert lookup_plan("GET", public, frozenset({"authorization"}), None, BASE) is None
    assert lookup_plan("GET", public, frozenset({"cookie"}), None, BASE) is None
    assert lookup_plan("GET", None, frozenset(), None, BASE) is None
    assert lookup_plan("GET", HttpPolicy.private(60), frozenset(), None, BASE) is None
    assert lookup_plan("GET", HttpPolicy.public(0), frozenset(), None, BASE) is None, "no shared freshness"
    assert storage_policy(HttpPolicy.public(10, stale_while_revalidate=5), BASE).ttl == 15  # type: ignore[union-attr]


def test_keys_fold_in_the_varied_values() -> None:
    fr, de = getter({"accept-language": "fr"}), getter({"accept-language": "de"})
    names = ("accept-language",)
    assert response_key("GET", "http://a/x", names, fr) != response_key("GET", "http://a/x", names, de)
    assert response_key("GET", "http://a/x", (), fr) == response_key("GET", "http://a/x", (), de)
    assert response_key("GET", "http://a/x", (), fr) != response_key("GET", "http://b/x", (), fr)
    assert response_key("GET", "http://a/x", names, fr) == response_key("GET", "http://a/x", names, fr)


def test_a_stored_variant_serves_only_its_own_values() -> None:
    fields = (*PUBLIC, ("vary", "Accept-Language, Accept-Encoding"))
    stored = to_store(200, fields, b"bonjour", 100.0, getter({"accept-language": "fr"}), ("news",))
    assert stored.vary == ("accept-encoding", "accept-language") and stored.values == (None, "fr")
    assert matches(stored, getter({"accept-language": "fr"}))
    assert not matches(stored, getter({"accept-language": "de"}))
    assert not matches(stored, getter({"accept-language": "fr", "accept-encoding": "gzip"}))


def test_freshness_and_age() -> None:
    stored = to_store(200, PUBLIC, b"x", 100.0, getter({}), ())
    assert (stored.fresh_for, stored.stale_for) == (60.0, 5.0)
    assert [reuse(stored, t) for t in (100.0, 159.9, 160.0, 164.9, 165.0)] == [
        Reuse.FRESH,
        Reuse.FRESH,
        Reuse.STALE,
        Reuse.STALE,
        Reuse.EXPIRED,
    ]
    assert age_seconds(stored, 90.0) == 0 and age_seconds(stored, 112.7) == 12


def test_a_replay_answers_preconditions_from_the_stored_validators() -> None:
    fields = (*PUBLIC, ("etag", '"v1"'), ("content-type", "text/plain"), ("content-length", "1"))
    match = parse_conditionals({"if-none-match": '"v1"'}.get)
    other = parse_conditionals({"if-none-match": '"v0"'}.get)
    status, out, drop = answer("GET", 200, fields, match, 3)
    assert status == 304 and drop and ("age", "3") in out and ("etag", '"v1"') in out
    assert all(name not in ("content-type", "content-length") for name, _ in out)
    status, out, drop = answer("GET", 200, fields, other, 3)
    assert status == 200 and not drop and ("age", "3") in out
    assert answer("GET", 200, fields, parse_conditionals({"if-match": '"v0"'}.get), None)[0] == 412


_text = st.text(st.characters(codec="latin-1", exclude_characters="\n"), max_size=20)


@given(
    st.builds(
        StoredResponse,
        st.integers(100, 599),
        st.lists(st.tuples(_text, _text), max_size=4).map(tuple),
        st.binary(max_size=64),
        st.floats(0, 2e9),
        st.floats(0, 1e6),
        st.floats(0, 1e6),
        st.lists(_text, max_size=3).map(tuple),
        st.lists(st.none() | _text, max_size=3).map(tuple),
        st.lists(_text, max_size=3).map(tuple),
    )
)
def test_a_stored_response_round_trips(stored: StoredResponse) -> None:
    assert StoredResponse.decode(stored.encode()) == stored


@pytest.mark.parametrize("raw", [b"", b"other", b"rs-http-1\n", b"rs-http-1\n[1,2]\nbody", b"rs-http-1\n{x\n"])
def test_foreign_bytes_are_no_stored_response(raw: bytes) -> None:
    assert StoredResponse.decode(raw) is None
