"""The stored envelope: round trips, and every malformed input is an EnvelopeError."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from readscale._core.cache.entry import (
    COPY_LIMIT,
    HEADER_SIZE,
    EntryMeta,
    EnvelopeError,
    decode_envelope,
    encode_envelope,
    envelope_head,
    fresh_payload,
    fresh_payloads,
)

finite = st.floats(min_value=0, max_value=1e12, allow_nan=False, allow_infinity=False)
metas = st.builds(
    EntryMeta,
    created_at=finite,
    fresh_ttl=finite,
    swr=finite,
    sie=finite,
    load_time=finite,
    schema=st.integers(0, 2**32 - 1),
    lsn=st.none() | st.integers(0, 2**64 - 1),
    tags=st.lists(st.tuples(st.text(max_size=40), st.integers(0, 2**64 - 1)), max_size=5).map(tuple),
)


@given(meta=metas, codec_id=st.integers(0, 255), payload=st.binary(max_size=300))
def test_round_trip(meta: EntryMeta, codec_id: int, payload: bytes) -> None:
    meta2, codec2, payload2 = decode_envelope(encode_envelope(meta, codec_id, payload))
    assert (meta2, codec2, bytes(payload2)) == (meta, codec_id, payload)


@given(data=st.binary(max_size=200))
def test_arbitrary_bytes_decode_or_raise_envelope_error(data: bytes) -> None:
    with contextlib.suppress(EnvelopeError):
        decode_envelope(data)


@given(meta=metas, payload=st.binary(max_size=50), cut=st.integers(0, 400))
def test_truncation_never_crashes(meta: EntryMeta, payload: bytes, cut: int) -> None:
    raw = encode_envelope(meta, 1, payload)
    with contextlib.suppress(EnvelopeError):
        decode_envelope(raw[:cut])


def test_reasons() -> None:
    raw = encode_envelope(EntryMeta(1.0, 2.0), 1, b"x")
    for bad, reason in [
        (b"", "truncated header"),
        (b"\x00" + raw[1:], "not a readscale entry"),
        (raw[:1] + b"\x09" + raw[2:], "envelope format 9"),
    ]:
        with pytest.raises(EnvelopeError) as info:
            decode_envelope(bad)
        assert info.value.reason == reason
    assert len(raw) == HEADER_SIZE + 1


@given(
    meta=metas,
    codec_id=st.integers(0, 3),
    payload=st.binary(max_size=20),
    offset=st.floats(-10, 1e6, allow_nan=False),
    want_schema=st.integers(0, 2),
    want_codec=st.integers(0, 3),
)
def test_fresh_payloads_agree_with_the_full_path(
    meta: EntryMeta, codec_id: int, payload: bytes, offset: float, want_schema: int, want_codec: int
) -> None:
    from readscale._core.cache.freshness import Freshness, assess

    meta = meta._replace(schema=meta.schema % 3)
    raw = encode_envelope(meta, codec_id, payload)
    now = meta.created_at + offset
    fast, missing = fresh_payloads([raw, None], now, want_schema, want_codec)
    assert missing is None
    decoded, cid, body = decode_envelope(raw)
    full = (
        not decoded.tags
        and decoded.lsn is None
        and cid == want_codec
        and decoded.schema == want_schema
        and now >= decoded.created_at
        and assess(decoded, now, 1.0, 0.0) is Freshness.FRESH
    )
    assert (fast is not None) == full
    if fast is not None:
        assert bytes(fast) == bytes(body) == payload


@given(
    meta=metas,
    codec_id=st.integers(0, 3),
    payload=st.binary(max_size=20),
    offset=st.floats(-10, 1e6, allow_nan=False),
    want_schema=st.integers(0, 2),
    want_codec=st.integers(0, 3),
)
def test_fresh_payload_agrees_with_the_full_path(
    meta: EntryMeta, codec_id: int, payload: bytes, offset: float, want_schema: int, want_codec: int
) -> None:
    from readscale._core.cache.freshness import Freshness, assess

    meta = meta._replace(schema=meta.schema % 3)
    raw = encode_envelope(meta, codec_id, payload)
    now = meta.created_at + offset
    fast = fresh_payload(raw, now, want_schema, want_codec)
    decoded, cid, body = decode_envelope(raw)
    full = (
        not decoded.tags
        and decoded.lsn is None
        and cid == want_codec
        and decoded.schema == want_schema
        and now >= decoded.created_at
        and assess(decoded, now, 1.0, 0.0) is Freshness.FRESH
    )
    assert (fast is not None) == full
    if fast is not None:
        assert bytes(fast) == bytes(body) == payload


@given(tail=st.binary(min_size=0, max_size=80), now=st.floats(-1e300, 1e300, allow_nan=False))
def test_fresh_payload_accepts_only_what_the_full_path_reads_as_a_fresh_plain_entry(tail: bytes, now: float) -> None:
    """Any bytes after a matching head (negative, NaN or infinite times included)."""
    from readscale._core.cache.freshness import Freshness, assess

    raw = envelope_head(1, 0) + tail
    fast = fresh_payload(raw, now, 0, 1)
    if fast is None:
        return
    meta, codec_id, body = decode_envelope(raw)  # never an EnvelopeError
    assert (codec_id, meta.schema, meta.lsn, meta.tags) == (1, 0, None, ())
    assert assess(meta, now, 1.0, 0.0) is Freshness.FRESH
    assert bytes(fast) == bytes(body)


def test_the_fast_paths_copy_small_payloads_and_view_large_ones() -> None:
    # A cache-sized payload is a bytes slice (cheaper to make than a view); a large one is
    # a view, so its bytes are not copied.
    meta = EntryMeta(100.0, 60.0)
    small = encode_envelope(meta, 1, b"s" * 10)
    large = encode_envelope(meta, 1, b"L" * COPY_LIMIT)
    for fast in (fresh_payloads([small, large], 120.0, 0, 1), [fresh_payload(r, 120.0, 0, 1) for r in (small, large)]):
        assert type(fast[0]) is bytes and fast[0] == b"s" * 10
        assert type(fast[1]) is memoryview and fast[1] == b"L" * COPY_LIMIT
