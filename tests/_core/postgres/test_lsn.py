"""LSN parsing, formatting, page-header normalisation and WAL file names (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from readscale._core.postgres.lsn import (
    LONG_PAGE_HEADER,
    MAX_LSN,
    SHORT_PAGE_HEADER,
    format_lsn,
    lsn_diff,
    normalize_insert_lsn,
    parse_lsn,
    timeline_from_walfile,
)
from readscale.errors import ConfigurationError

BLOCK = 8192
SEGMENT = 16 * 1024 * 1024
lsns = st.integers(min_value=0, max_value=MAX_LSN)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("0/0", 0),
        ("0/1", 1),
        ("0/4020260", 0x4020260),
        ("16/B374D848", (0x16 << 32) | 0xB374D848),
        ("16/b374d848", (0x16 << 32) | 0xB374D848),
        ("FFFFFFFF/FFFFFFFF", MAX_LSN),
        ("00000001/00000000", 1 << 32),
    ],
)
def test_parse_accepts_what_pg_lsn_prints(text: str, value: int) -> None:
    assert parse_lsn(text) == value


@pytest.mark.parametrize(
    "text",
    ["", "0", "/", "0/", "/0", "0/0/0", "G/0", "0/G", "123456789/0", "0/123456789", " 0/0", "0/0 ", "-1/0", "0x1/0"],
)
def test_parse_rejects_anything_else(text: str) -> None:
    with pytest.raises(ConfigurationError, match="not a PostgreSQL LSN"):
        parse_lsn(text)


@given(lsns)
def test_format_and_parse_round_trip(lsn: int) -> None:
    text = format_lsn(lsn)
    assert parse_lsn(text) == lsn
    assert text == text.upper()
    assert "/" in text


@given(lsns, lsns)
def test_order_and_distance_are_integer_order_and_difference(a: int, b: int) -> None:
    assert (a < b) == (parse_lsn(format_lsn(a)) < parse_lsn(format_lsn(b)))
    assert lsn_diff(a, b) == a - b


@pytest.mark.parametrize("bad", [-1, MAX_LSN + 1])
def test_format_rejects_out_of_range(bad: int) -> None:
    with pytest.raises(ConfigurationError):
        format_lsn(bad)


@pytest.mark.parametrize(
    ("lsn", "expected", "why"),
    [
        (BLOCK + SHORT_PAGE_HEADER, BLOCK, "just past a short page header"),
        (5 * BLOCK + SHORT_PAGE_HEADER, 5 * BLOCK, "any page but a segment's first"),
        (SEGMENT + LONG_PAGE_HEADER, SEGMENT, "just past a segment's long header"),
        (LONG_PAGE_HEADER, 0, "the very first segment"),
        (SEGMENT + SHORT_PAGE_HEADER, SEGMENT + SHORT_PAGE_HEADER, "inside a long header is not a record end"),
        (BLOCK + SHORT_PAGE_HEADER + 8, BLOCK + SHORT_PAGE_HEADER + 8, "mid-page"),
        (BLOCK, BLOCK, "a page start"),
        (0x4020260, 0x4020260, "a real mid-page position"),
    ],
)
def test_normalize_insert_lsn(lsn: int, expected: int, why: str) -> None:
    assert normalize_insert_lsn(lsn) == expected, why


@given(lsns)
def test_normalize_only_ever_drops_a_page_header(lsn: int) -> None:
    out = normalize_insert_lsn(lsn)
    assert lsn - out in (0, SHORT_PAGE_HEADER, LONG_PAGE_HEADER)
    assert out % SEGMENT != LONG_PAGE_HEADER
    assert out % BLOCK != SHORT_PAGE_HEADER or out % SEGMENT == SHORT_PAGE_HEADER
    assert normalize_insert_lsn(out) == out


@pytest.mark.parametrize(("block", "segment"), [(0, SEGMENT), (BLOCK, 0), (BLOCK, BLOCK + 1), (-BLOCK, SEGMENT)])
def test_normalize_rejects_inconsistent_layouts(block: int, segment: int) -> None:
    with pytest.raises(ConfigurationError):
        normalize_insert_lsn(100, block_size=block, segment_size=segment)


def test_normalize_follows_the_layout_it_is_given() -> None:
    assert normalize_insert_lsn(2 * 4096 + 24, block_size=4096, segment_size=1024 * 1024) == 2 * 4096
    assert normalize_insert_lsn(1024 * 1024 + 40, block_size=4096, segment_size=1024 * 1024) == 1024 * 1024


@pytest.mark.parametrize(
    ("name", "timeline"),
    [("000000010000000000000004", 1), ("0000000A0000000100000002", 10), ("FFFFFFFF0000000000000001", 0xFFFFFFFF)],
)
def test_timeline_from_walfile(name: str, timeline: int) -> None:
    assert timeline_from_walfile(name) == timeline


@pytest.mark.parametrize("name", ["", "00000001", "00000001000000000000000Z", "000000000000000000000001", "x" * 24])
def test_timeline_from_walfile_rejects_bad_names(name: str) -> None:
    with pytest.raises(ConfigurationError):
        timeline_from_walfile(name)
