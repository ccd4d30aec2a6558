"""Strict header parsers: table-driven cases and round trips. Fuzzing (accept or
HeaderError, for every parser) is in test_fuzz.py."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from readscale._core.http import (
    ANY,
    CacheControl,
    CacheStatus,
    EntityTag,
    format_http_date,
    parse_cache_control,
    parse_cache_status,
    parse_conditionals,
    parse_http_date,
    parse_tag_list,
)
from readscale._core.http.cache_control import DELTA_SECONDS_MAX
from readscale.errors import HeaderError


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("max-age=60", CacheControl(max_age=60)),
        ("Public, MAX-AGE=60", CacheControl(public=True, max_age=60)),
        ('max-age="60"', CacheControl(max_age=60)),
        ("no-cache", CacheControl(no_cache=True)),
        ('no-cache="Set-Cookie, X-Foo"', CacheControl(no_cache=("set-cookie", "x-foo"))),
        ('private="authorization"', CacheControl(private=("authorization",))),
        ("max-stale", CacheControl(max_stale=True)),
        ("max-stale=5", CacheControl(max_stale=5)),
        (", ,max-age=1,,", CacheControl(max_age=1)),
        ("max-age=1, max-age=1", CacheControl(max_age=1)),
        ("s-maxage=99999999999999", CacheControl(s_maxage=DELTA_SECONDS_MAX)),
        ("stale-while-revalidate=30, stale-if-error=600", CacheControl(stale_while_revalidate=30, stale_if_error=600)),
        ('community="UCI"', CacheControl(extensions=(("community", "UCI"),))),
        ("immutable, no-transform", CacheControl(immutable=True, no_transform=True)),
        ("", CacheControl()),
    ],
)
def test_cache_control_parses(value: str, expected: CacheControl) -> None:
    assert parse_cache_control(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        "max-age=-1",
        "max-age=1.5",
        "max-age",
        "max-age=",
        "max-age=1, max-age=2",
        "no-store=1",
        "public=yes",
        'max-age="1',
        "max age=1",
        "max-age=1 2",
        'private=""',
        "ma\x00x-age=1",
        "max-age=١",  # an Arabic-Indic digit: not DIGIT
        "€",
    ],
)
def test_cache_control_refuses(value: str) -> None:
    with pytest.raises(HeaderError) as info:
        parse_cache_control(value)
    assert info.value.header == "Cache-Control"


cache_controls = st.builds(
    CacheControl,
    max_age=st.none() | st.integers(0, DELTA_SECONDS_MAX),
    s_maxage=st.none() | st.integers(0, 10**6),
    stale_while_revalidate=st.none() | st.integers(0, 10**6),
    stale_if_error=st.none() | st.integers(0, 10**6),
    no_cache=st.booleans() | st.tuples(st.sampled_from(["set-cookie", "x-a"])),
    private=st.booleans(),
    public=st.booleans(),
    no_store=st.booleans(),
    immutable=st.booleans(),
    must_revalidate=st.booleans(),
)


@given(cache_controls)
def test_cache_control_round_trips(cc: CacheControl) -> None:
    assert parse_cache_control(cc.render()) == cc


@pytest.mark.parametrize(
    ("value", "epoch"),
    [
        ("Sun, 06 Nov 1994 08:49:37 GMT", 784111777),
        ("Sunday, 06-Nov-94 08:49:37 GMT", 784111777),
        ("Sun Nov  6 08:49:37 1994", 784111777),
        ("Thu, 01 Jan 1970 00:00:00 GMT", 0),
    ],
)
def test_http_date_formats(value: str, epoch: int) -> None:
    assert parse_http_date(value) == epoch


@pytest.mark.parametrize(
    "value",
    [
        "Sun, 6 Nov 1994 08:49:37 GMT",
        "Sun, 06 Nov 1994 08:49:37 UTC",
        "Sun, 31 Feb 1994 08:49:37 GMT",
        "Sun, 06 Nov 1994 24:00:00 GMT",
        "sun, 06 Nov 1994 08:49:37 GMT",
        "1994-11-06T08:49:37Z",
        "",
    ],
)
def test_http_date_refuses(value: str) -> None:
    with pytest.raises(HeaderError):
        parse_http_date(value)


def test_rfc850_two_digit_year_uses_now() -> None:
    now = parse_http_date("Sat, 01 Jan 2050 00:00:00 GMT")
    assert parse_http_date("Friday, 01-Jan-99 00:00:00 GMT", now=now) == parse_http_date(
        "Fri, 01 Jan 2099 00:00:00 GMT"
    )
    now = parse_http_date("Sat, 01 Jan 2000 00:00:00 GMT")
    assert parse_http_date("Friday, 01-Jan-99 00:00:00 GMT", now=now) == parse_http_date(
        "Fri, 01 Jan 1999 00:00:00 GMT"
    )


@given(st.integers(0, 253402300799))
def test_http_date_round_trips(epoch: int) -> None:
    assert parse_http_date(format_http_date(epoch)) == epoch


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("*", ANY),
        ('"a"', (EntityTag("a"),)),
        ('W/"a", "b"', (EntityTag("a", weak=True), EntityTag("b"))),
        ('"a,b", ,"c"', (EntityTag("a,b"), EntityTag("c"))),
        ('""', (EntityTag(""),)),
        ('"\xe9t\xe9"', (EntityTag("\xe9t\xe9"),)),
    ],
)
def test_tag_lists(value: str, expected: object) -> None:
    assert parse_tag_list(value) == expected


@pytest.mark.parametrize("value", ["a", '"a', 'w/"a"', '*, "a"', '"a" "b"', '"a"b', "", " , ", '"a\x00"', '"a""b"'])
def test_tag_lists_refuse(value: str) -> None:
    with pytest.raises(HeaderError) as info:
        parse_tag_list(value)
    assert info.value.header == "If-None-Match"


@given(
    st.lists(
        st.tuples(st.text(alphabet=st.characters(min_codepoint=0x23, max_codepoint=0x7E), max_size=10), st.booleans()),
        min_size=1,
        max_size=5,
    )
)
def test_tag_list_round_trips(tags: list[tuple[str, bool]]) -> None:
    entity_tags = tuple(EntityTag(o, w) for o, w in tags)
    assert parse_tag_list(", ".join(t.render() for t in entity_tags)) == entity_tags


def test_invalid_dates_in_conditionals_are_ignored_not_refused() -> None:
    cond = parse_conditionals(
        {"if-modified-since": "yesterday", "if-unmodified-since": "Sun, 06 Nov 1994 08:49:37 GMT"}.get
    )
    assert cond.if_modified_since is None
    assert cond.if_unmodified_since == 784111777


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("readscale-edge; hit; ttl=-3", [CacheStatus("readscale-edge", hit=True, ttl=-3)]),
        (
            'Origin; fwd=uri-miss; stored, "Edge Cache"; hit; detail="stale-if-error"',
            [
                CacheStatus("Origin", fwd="uri-miss", stored=True),
                CacheStatus("Edge Cache", hit=True, detail="stale-if-error"),
            ],
        ),
    ],
)
def test_cache_status(value: str, expected: list[CacheStatus]) -> None:
    assert parse_cache_status(value) == expected
    assert parse_cache_status(", ".join(m.render() for m in expected)) == expected


def test_strong_etag_field_is_the_quoted_strong_etag() -> None:
    """The middleware's bytes form of the strong ETag (no str round trip) is the same tag."""
    from readscale._core.http import strong_etag, strong_etag_field

    bodies = [b"", b"x", b"x" * 500, bytes(range(256)) * 40, b"\xff\xfe" * 3001]
    assert [strong_etag_field(b) for b in bodies] == [strong_etag(b).render().encode("ascii") for b in bodies]
