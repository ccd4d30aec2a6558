"""Plain hits read straight from the bytes (``readscale._core.memcached.hits``).

The fast readers must mean exactly what the full parser and ``item_state`` mean, for any
stream split anywhere: the reference below reads the same bytes with ``MetaParser``.
"""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from readscale._core.memcached.hits import read_one, read_pipeline
from readscale._core.memcached.items import FENCE_FLAGS, VALUE_FLAGS, Found, item_state
from readscale._core.memcached.replies import (
    AnyReply,
    ErrorKind,
    ErrorReply,
    MetaParser,
    MetaProtocolError,
    Reply,
    ReturnFlags,
    Status,
    encode_reply,
)
from readscale._core.memcached.requests import MetaGet, encode_get
from readscale.errors import InvalidKeyError

Meaning = tuple[list[bytes | None], list[AnyReply]]


def reference(wire: bytes, count: int) -> Meaning:
    """The full parser's reading of a pipeline: Found values by position, the rest."""
    parser = MetaParser()
    parser.feed(wire)
    values: list[bytes | None] = [None] * count
    others: list[AnyReply] = []
    while (reply := parser.next_reply()) is not None:
        if isinstance(reply, Reply) and reply.status is Status.MN:
            assert parser.buffered == 0
            break
        i = reply.flags.opaque if isinstance(reply, Reply) else None
        if isinstance(reply, Reply) and reply.status is Status.VA and i is not None and i < count:
            state = item_state(reply)
            if isinstance(state, Found):
                values[i] = state.value
                continue
        others.append(reply)
    return values, others


def fast(wire: bytes, count: int, cuts: list[int]) -> Meaning:
    """``read_pipeline`` as the driver calls it: on each read, the unread rest + the read."""
    values: list[bytes | None] = [None] * count
    others: list[AnyReply] = []
    pieces = []
    rest = wire
    for cut in cuts:
        pieces.append(rest[:cut])
        rest = rest[cut:]
    pieces.append(rest)
    data = b""
    pos, done = 0, False
    for piece in pieces:
        data = data[pos:] + piece
        pos, done = read_pipeline(data, 0, values, others)
        if done:
            break
    assert done
    assert pos == len(data)
    return values, others


def meaning(values: list[bytes | None], others: list[AnyReply]) -> Meaning:
    """Fold the Found replies of ``others`` into ``values`` (a hit the fast path left to the parser)."""
    out = list(values)
    rest: list[AnyReply] = []
    for reply in others:
        i = reply.flags.opaque if isinstance(reply, Reply) else None
        if isinstance(reply, Reply) and reply.status is Status.VA and i is not None and i < len(out):
            state = item_state(reply)
            if isinstance(state, Found):
                out[i] = state.value
                continue
        rest.append(reply)
    return out, rest


def hit(value: bytes, i: int, cas: int = 7, flags: int = VALUE_FLAGS) -> bytes:
    return b"VA %d f%d c%d O%d\r\n" % (len(value), flags, cas, i) + value + b"\r\n"


MN = b"MN\r\n"


def test_plain_hits_fill_values_and_nothing_else_is_built() -> None:
    wire = hit(b"one", 0) + hit(b"two\r\nMN\r\nVA 1 f1 c1 O0\r\n", 2) + MN
    values: list[bytes | None] = [None] * 3
    others: list[AnyReply] = []
    assert read_pipeline(wire, 0, values, others) == (len(wire), True)
    assert values == [b"one", None, b"two\r\nMN\r\nVA 1 f1 c1 O0\r\n"]
    assert others == []


def test_mixed_replies_keep_their_meaning_and_order() -> None:
    wire = (
        b"EN\r\n"
        + hit(b"v", 1)
        + b"HD f0 s0 c1 Z O2\r\n"
        + b"VA 0 f0 c3 t30 W O3\r\n\r\n"  # a lease won on a plain get: given back by the driver
        + hit(b"", 4, flags=FENCE_FLAGS)  # a fence reads as a miss, never as a value
        + b"VA 2 f1 c5 X W O5\r\nhi\r\n"  # stale
        + hit(b"far", 99)  # out of range: the driver rejects it
        + b"SERVER_ERROR out of memory\r\n"
        + MN
    )
    values, others = fast(wire, 6, [])
    assert values == [None, b"v", None, None, None, None]
    assert [type(r).__name__ for r in others] == ["Reply"] * 6 + ["ErrorReply"]
    assert [r.status for r in others if isinstance(r, Reply)] == [Status.EN, Status.HD] + [Status.VA] * 4
    assert others[-1] == ErrorReply(ErrorKind.SERVER_ERROR, "out of memory")
    assert (values, others) == reference(wire, 6)


def test_flags_in_another_order_or_with_more_flags_take_the_full_parser_with_the_same_answer() -> None:
    wire = b"VA 2 c9 f1 O0\r\nhi\r\nVA 2 f1 c9 t5 O1\r\nho\r\n" + MN
    values, others = fast(wire, 2, [])
    assert meaning(values, others) == ([b"hi", b"ho"], [])


@pytest.mark.parametrize(
    "wire",
    [
        b"VA 5 f1 c1 O0\r\nhelloXY",  # value not closed by CRLF
        b"VA x f1 c1 O0\r\n",
        b"VA 5 f1 cZ O0\r\nhello\r\n",
        b"NOPE\r\n",
        b"VA 99999999999 f1 c1 O0\r\n",
    ],
)
def test_garbage_raises_the_protocol_error(wire: bytes) -> None:
    with pytest.raises(MetaProtocolError):
        read_pipeline(wire + b"\r\n" * 3 + MN, 0, [None], [])


def test_a_partial_stream_waits_at_the_start_of_the_unfinished_reply() -> None:
    wire = hit(b"hello", 0) + hit(b"world", 1) + MN
    values: list[bytes | None] = [None, None]
    others: list[AnyReply] = []
    cut = len(hit(b"hello", 0)) + 7
    assert read_pipeline(wire[:cut], 0, values, others) == (len(hit(b"hello", 0)), False)
    assert values == [b"hello", None]


def test_a_run_of_hits_leaves_what_it_cannot_read_to_the_general_path() -> None:
    # After the first hit, each hit is matched with the CRLF that closes the value before
    # it; a reply the run cannot take ends the run at that reply's header.
    run = hit(b"a", 0) + hit(b"b", 1)
    values: list[bytes | None] = [None] * 3
    others: list[AnyReply] = []
    far = hit(b"far", 7)  # out of range: a reply for the driver to refuse
    assert read_pipeline(run + far + hit(b"c", 2) + MN, 0, values, others) == (len(run + far + hit(b"c", 2) + MN), True)
    assert values == [b"a", b"b", b"c"]
    assert [r.flags.opaque for r in others if isinstance(r, Reply)] == [7]
    values = [None] * 3
    cut = len(run) + 9  # inside the third reply's value
    wire = run + hit(b"c" * 20, 2) + MN
    assert read_pipeline(wire[:cut], 0, values, []) == (len(run), False)
    assert values == [b"a", b"b", None]
    with pytest.raises(MetaProtocolError):  # the last value of a run not closed by CRLF
        read_pipeline(run + b"VA 1 f1 c1 O2\r\nxYZ" + MN, 0, [None] * 3, [])


def test_read_one_returns_a_plain_hits_value_and_the_reply_otherwise() -> None:
    assert read_one(b"VA 5 f1 c3\r\nhe\r\nl\r\n") == b"he\r\nl"
    assert read_one(b"VA 0 f0 c3\r\n\r\n") == b""  # another client's empty value: a hit
    assert read_one(b"EN\r\n") == Reply(Status.EN)
    fence = read_one(b"VA 0 f%d c3\r\n\r\n" % FENCE_FLAGS)
    assert isinstance(fence, Reply)
    assert fence.flags == ReturnFlags(cas=3, client_flags=FENCE_FLAGS)
    assert read_one(b"VA 0 f0 c1 t30 W\r\n\r\n") == Reply(
        Status.VA, ReturnFlags(cas=1, client_flags=0, ttl=30, won=True), b""
    )
    assert read_one(b"CLIENT_ERROR bad command line format\r\n") == ErrorReply(
        ErrorKind.CLIENT_ERROR, "bad command line format"
    )
    assert read_one(b"VA 5 f1 c3\r\nhel") is None
    assert read_one(b"VA 5 f1 c3") is None


def test_read_one_refuses_bytes_past_the_reply() -> None:
    with pytest.raises(MetaProtocolError, match="beyond"):
        read_one(b"VA 2 f1 c3\r\nhi\r\nEN\r\n")
    with pytest.raises(MetaProtocolError, match="beyond"):
        read_one(b"EN\r\nEN\r\n")


values_st = st.binary(max_size=60) | st.sampled_from([b"\r\n", b"MN\r\n", b"VA 1 f1 c1 O0\r\n", b"EN\r\n"])
flag_st = st.builds(
    ReturnFlags,
    cas=st.none() | st.integers(0, 2**64 - 1),
    client_flags=st.none() | st.sampled_from([0, VALUE_FLAGS, FENCE_FLAGS, 7]),
    ttl=st.none() | st.integers(-1, 100),
    won=st.booleans(),
    token_sent=st.booleans(),
    stale=st.booleans(),
    size=st.none(),
    hit_before=st.none(),
    last_access=st.none(),
    opaque=st.none(),
    key=st.none(),
    base64_key=st.just(False),
)


@st.composite
def pipelines(draw: st.DrawFn) -> tuple[bytes, int]:
    count = draw(st.integers(1, 8))
    parts = []
    for i in draw(st.permutations(range(count + 2)))[: draw(st.integers(0, count + 2))]:
        kind = draw(st.sampled_from(["plain", "flags", "miss", "error"]))
        if kind == "plain":
            parts.append(hit(draw(values_st), i, draw(st.integers(0, 2**64 - 1)), draw(st.sampled_from([0, 1, 2]))))
        elif kind == "flags":
            flags = draw(flag_st)._replace(opaque=i)
            parts.append(encode_reply(Reply(Status.VA, flags, draw(values_st))))
        elif kind == "miss":
            parts.append(encode_reply(Reply(draw(st.sampled_from([Status.EN, Status.HD])), ReturnFlags(opaque=i))))
        else:
            parts.append(b"SERVER_ERROR out of memory\r\n")
    return b"".join(parts) + MN, count


@settings(max_examples=300, deadline=None)
@given(pipelines(), st.lists(st.integers(0, 40), max_size=12))
def test_the_fast_reader_means_what_the_parser_does_for_any_split(pipeline: tuple[bytes, int], cuts: list[int]) -> None:
    wire, count = pipeline
    assert meaning(*fast(wire, count, cuts)) == reference(wire, count)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=80) | st.sampled_from([b"VA ", b"VA 3 f1 c1", b"MN", b"\r\n"]).map(lambda b: b * 3))
def test_any_bytes_give_an_answer_none_or_the_protocol_error(data: bytes) -> None:
    for attempt in (lambda: read_one(data), lambda: read_pipeline(data, 0, [None, None], [])):
        with contextlib.suppress(MetaProtocolError):
            attempt()


# -- requests built for a whole batch at once --------------------------------------------------

batch_keys = st.lists(
    st.text(max_size=12) | st.from_regex(r"\A[\x21-\x7e]{1,260}\Z") | st.sampled_from(["a b", "", "é", "k\n"]),
    max_size=6,
)


@settings(max_examples=300, deadline=None)
@given(batch_keys, st.data())
def test_a_batch_of_gets_is_byte_for_byte_the_requests_one_by_one(keys: list[str], data: st.DataObject) -> None:
    positions = data.draw(st.lists(st.integers(0, max(len(keys) - 1, 0)), max_size=len(keys), unique=True))
    request = MetaGet("", client_flags=True, cas=True, quiet=True)
    try:
        one_by_one = b"".join(request._replace(key=keys[i], opaque=i).encode() for i in positions)
    except InvalidKeyError:
        with pytest.raises(InvalidKeyError):
            request.encode_each(keys, positions)
        return
    assert request.encode_each(keys, positions) == one_by_one
    for i in positions:
        assert encode_get(keys[i], request.tail()) == request._replace(key=keys[i]).encode()
