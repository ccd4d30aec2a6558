"""Cache-Status (RFC 9211) against http-sf, the RFC 9651 editor's parser: a differential test.

What http-sf accepts as a List we accept with the same members and parameters (unknown
ones kept), what it refuses we refuse, and what we render http-sf reads back unchanged
in its canonical form.
"""

from __future__ import annotations

import http_sf
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from readscale._core.http import CacheStatus, append_cache_status, parse_cache_status
from readscale.errors import HeaderError


def _reference(value: str) -> list[tuple[object, dict[str, object]]] | None:
    try:
        parsed = http_sf.parse(value.encode("latin-1"), tltype="list")
    except Exception:
        return None
    return parsed  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    "value",
    [
        "ExampleCache; hit=?0; fwd=uri-miss",  # hit=?0 is valid: "not a hit"
        "Edge; hit; ttl=-3; x-vendor=1; detail=abc",  # unknown parameters are kept
        'Origin; fwd=uri-miss; stored, "Edge Cache"; hit; detail="stale-if-error"',
        "a;hit,b;fwd=miss;fwd-status=200;collapsed",
    ],
)
def test_valid_fields_are_read_as_http_sf_reads_them(value: str) -> None:
    members = parse_cache_status(value)
    reference = _reference(value)
    assert reference is not None
    assert [m.cache for m in members] == [str(item) for item, _ in reference]
    for member, (_, params) in zip(members, reference, strict=True):
        assert member.hit is (params.get("hit") is True)
        assert _plain(member.parameters()) == _plain(params)


@pytest.mark.parametrize("value", ["a ; hit", "a;hit ,", "a;\thit", "a;HIT", "a;hit=1?", "1cache", "a;fwd=", "a,,b"])
def test_invalid_fields_are_refused_as_http_sf_refuses_them(value: str) -> None:
    assert _reference(value) is None
    with pytest.raises(HeaderError):
        parse_cache_status(value)


def test_rendering_is_canonical() -> None:
    member = CacheStatus("readscale-edge", hit=True, ttl=5, detail="x y", params=(("x-vendor", 1),))
    rendered = member.render()
    assert rendered == http_sf.ser(http_sf.parse(rendered.encode(), tltype="list"))
    assert rendered == 'readscale-edge;hit;ttl=5;detail="x y";x-vendor=1'
    assert append_cache_status("Origin;fwd=miss", member) == f"Origin;fwd=miss, {rendered}"


def _plain(params: dict[str, object]) -> dict[str, object]:
    # A false RFC boolean (hit=?0) means the same as its absence.
    return {
        k: str(v) if isinstance(v, http_sf.Token) else v
        for k, v in params.items()
        if not (k in ("hit", "stored", "collapsed") and v is False)
    }


sf_text = st.text(alphabet=st.sampled_from(list('abcz-*;=,?01 "\t:/.A')), max_size=40)


@settings(max_examples=400, deadline=None)
@given(sf_text)
def test_differential_against_http_sf(value: str) -> None:
    reference = _reference(value)
    try:
        members = parse_cache_status(value)
    except HeaderError:
        members = None
    if reference is None:
        assert members is None, f"http-sf refuses {value!r}"
        return
    # http-sf accepts any List; a Cache-Status member must also be a token or string with
    # its RFC 9211 parameters well-typed, so we may refuse more, never accept more.
    if members is not None:
        assert [m.cache for m in members] == [str(item) for item, _ in reference]
