"""The sans-IO meta protocol core: keys, requests, the reply parser, item states, the ring.

Replies in the tables are transcripts from memcached 1.6.18 (the stack's server).
"""

from __future__ import annotations

import base64
import contextlib
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from readscale._core.memcached.items import (
    DEFAULT_MAX_VALUE_SIZE,
    LEASE_HELD,
    MISSING,
    Found,
    LeaseWon,
    ServerRing,
    item_state,
    max_value_size,
    next_poll_delay,
    parse_token,
)
from readscale._core.memcached.replies import (
    AnyReply,
    ErrorKind,
    ErrorReply,
    MetaParser,
    MetaProtocolError,
    Reply,
    ReturnFlags,
    StatReply,
    Status,
    encode_reply,
)
from readscale._core.memcached.requests import (
    MAX_BASE64_KEY_BYTES,
    MAX_KEY_BYTES,
    MetaArithmetic,
    MetaDelete,
    MetaGet,
    MetaNoop,
    MetaSet,
    SetMode,
    Stats,
    encode_key,
    wire_ttl,
)
from readscale.errors import CacheUnavailableError, ConfigurationError, InvalidKeyError


def drain(parser: MetaParser, data: bytes, chunks: list[int] | None = None) -> list[AnyReply]:
    """Feed ``data`` (in pieces of the given sizes, then the rest) and pull every reply."""
    replies: list[AnyReply] = []
    pieces: list[bytes] = []
    rest = data
    for size in chunks or []:
        pieces.append(rest[:size])
        rest = rest[size:]
    pieces.append(rest)
    for piece in pieces:
        parser.feed(piece)
        while (reply := parser.next_reply()) is not None:
            replies.append(reply)
    return replies


def parse_all(data: bytes, chunks: list[int] | None = None) -> list[AnyReply]:
    parser = MetaParser()
    replies = drain(parser, data, chunks)
    assert parser.buffered == 0
    return replies


# -- keys ------------------------------------------------------------------------------------


def test_ascii_keys_go_as_they_are() -> None:
    assert encode_key("user:42:profile") == (b"user:42:profile", False)
    assert encode_key("a" * MAX_KEY_BYTES) == (b"a" * 250, False)


def test_non_ascii_keys_go_base64() -> None:
    wire, b64 = encode_key("café:ключ:鍵")
    assert b64
    assert base64.b64decode(wire) == "café:ключ:鍵".encode()
    longest = "é" * (MAX_BASE64_KEY_BYTES // 2)  # 186 UTF-8 bytes: base64 text of 248
    assert len(encode_key(longest)[0]) == 248


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("", "empty"),
        ("a" * 251, "251 bytes, over memcached's limit of 250"),
        ("with space", "whitespace or a control character (' ' at index 4)"),
        ("tab\there", "'\\t' at index 3"),
        ("new\nline", "'\\n' at index 3"),
        ("cr\r", "'\\r' at index 2"),
        ("nul\x00", "'\\x00' at index 3"),
        ("del\x7f", "'\\x7f' at index 3"),
        ("c1\x85", "'\\x85' at index 2"),
        ("nbsp\u00a0", "'\\xa0' at index 4"),
        ("ls\u2028", "'\\u2028' at index 2"),
        ("é" * 94, "188 UTF-8 bytes"),
        ("lone\ud800", "not encodable as UTF-8"),
    ],
)
def test_bad_keys_raise_invalid_key_error_naming_key_and_reason(key: str, reason: str) -> None:
    with pytest.raises(InvalidKeyError) as info:
        encode_key(key)
    assert info.value.key == key
    assert info.value.backend == "memcached"
    assert reason in info.value.reason


def test_a_bad_key_fails_before_any_request_bytes_exist() -> None:
    for request in (MetaGet("a b"), MetaSet("a b", b"v"), MetaDelete("a b"), MetaArithmetic("a b")):
        with pytest.raises(InvalidKeyError):
            request.encode()


@settings(deadline=None)  # a shared machine: assert behaviour, never time
@given(st.text(max_size=300))
def test_every_key_is_refused_or_goes_as_safe_wire_bytes(key: str) -> None:
    try:
        wire, b64 = encode_key(key)
    except InvalidKeyError as exc:
        refused: InvalidKeyError | None = exc
    else:
        refused = None
    if refused is not None:
        assert refused.key == key
        return
    assert 0 < len(wire) <= MAX_KEY_BYTES
    assert re.fullmatch(rb"[\x21-\x7e]+", wire)
    assert (base64.b64decode(wire) if b64 else wire) == key.encode("utf-8")
    assert b64 == (not key.isascii())


# -- TTLs ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ttl", "expected"),
    [(0.001, 1), (1, 1), (1.5, 2), (59.9, 60), (2_592_000, 2_592_000), (2_592_000.5, 1_002_592_001)],
)
def test_ttls_round_up_to_whole_seconds_and_become_unix_times_past_30_days(ttl: float, expected: int) -> None:
    assert wire_ttl(ttl, now=1_000_000_000.0) == expected


@pytest.mark.parametrize("ttl", [0, -1, float("nan"), float("inf")])
def test_ttls_must_be_positive_and_finite(ttl: float) -> None:
    with pytest.raises(ConfigurationError):
        wire_ttl(ttl, now=0.0)


# -- requests ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_", "wire"),
    [
        (MetaGet("foo"), b"mg foo v\r\n"),
        (MetaGet("foo", client_flags=True, cas=True, vivify=30), b"mg foo v f c N30\r\n"),
        (MetaGet("foo", value=False, size=True, ttl=True, return_key=True), b"mg foo t s k\r\n"),
        (MetaGet("foo", quiet=True, opaque=7, recache=30, touch=60), b"mg foo v q R30 T60 O7\r\n"),
        (MetaGet("ключ"), b"mg 0LrQu9GO0Yc= b v\r\n"),
        (MetaSet("foo", b"bar", ttl=60, client_flags=1), b"ms foo 3 T60 F1\r\nbar\r\n"),
        (MetaSet("foo", b"", compare_cas=12, quiet=True, opaque=3), b"ms foo 0 C12 q O3\r\n\r\n"),
        (MetaSet("foo", b"x", mode=SetMode.ADD, invalidate=True, return_cas=True), b"ms foo 1 ME I c\r\nx\r\n"),
        (MetaSet("ключ", b"x\r\n"), b"ms 0LrQu9GO0Yc= 3 b\r\nx\r\n\r\n"),
        (MetaDelete("foo"), b"md foo\r\n"),
        (MetaDelete("foo", compare_cas=5, quiet=True, opaque=9), b"md foo C5 q O9\r\n"),
        (MetaDelete("foo", invalidate=True, ttl=30), b"md foo I T30\r\n"),
        (MetaArithmetic("ctr", vivify=0, initial=5, value=True), b"ma ctr N0 J5 v\r\n"),
        (MetaArithmetic("ctr", delta=2, decrement=True, value=True), b"ma ctr D2 MD v\r\n"),
        (MetaNoop(), b"mn\r\n"),
        (Stats("settings"), b"stats settings\r\n"),
        (Stats(), b"stats\r\n"),
    ],
)
def test_requests_encode_as_protocol_txt_says(request_: MetaGet, wire: bytes) -> None:
    assert request_.encode() == wire


def test_a_pipeline_body_is_each_request_tagged_with_its_position() -> None:
    keys = ["a", "ключ", "c", "d"]
    template = MetaGet("", client_flags=True, cas=True, quiet=True, vivify=5)
    expected = b"".join(template._replace(key=keys[i], opaque=i).encode() for i in (0, 1, 3))
    assert template.encode_each(keys, [0, 1, 3]) == expected
    with pytest.raises(InvalidKeyError):
        template.encode_each(["ok", "not ok"], [0, 1])


@pytest.mark.parametrize(
    "request_",
    [
        MetaGet("k", opaque=10**32),
        MetaGet("k", vivify=-1),
        MetaSet("k", b"", ttl=2**32),
        Stats("settings\r\nflush_all"),
    ],
)
def test_out_of_range_arguments_are_configuration_errors(request_: MetaGet) -> None:
    with pytest.raises(ConfigurationError):
        request_.encode()


def _decode_request(wire: bytes) -> tuple[str, str, set[bytes], bytes | None]:
    """A reference reading of one request: command, key, flag tokens, value."""
    line, _, rest = wire.partition(b"\r\n")
    tokens = line.split(b" ")
    command, key_token = tokens[0].decode(), tokens[1]
    value = None
    flags = set(tokens[2:])
    if command == "ms":
        size = int(tokens[2])
        flags = set(tokens[3:])
        value, tail = rest[:size], rest[size:]
        assert tail == b"\r\n"
    else:
        assert rest == b""
    assert len(flags) == len(tokens) - (3 if command == "ms" else 2), "a flag appears twice"
    key = base64.b64decode(key_token).decode() if b"b" in flags else key_token.decode()
    return command, key, flags - {b"b"}, value


keys = st.text(
    st.characters(codec="utf-8", exclude_categories=["Cc", "Zs", "Zl", "Zp"]), min_size=1, max_size=60
).filter(lambda key: len(key.encode()) <= MAX_BASE64_KEY_BYTES)
small = st.integers(0, 2**32 - 1)
maybe = st.none() | small


@settings(deadline=None)  # a shared machine: assert behaviour, never time
@given(key=keys, v=st.booleans(), f=st.booleans(), c=st.booleans(), q=st.booleans(), n=maybe, o=maybe)
def test_get_requests_carry_exactly_the_flags_asked(
    key: str, v: bool, f: bool, c: bool, q: bool, n: int | None, o: int | None
) -> None:
    command, decoded, flags, _ = _decode_request(
        MetaGet(key, value=v, client_flags=f, cas=c, quiet=q, vivify=n, opaque=o).encode()
    )
    expected = {letter for on, letter in ((v, b"v"), (f, b"f"), (c, b"c"), (q, b"q")) if on}
    expected |= {b"N%d" % n} if n is not None else set()
    expected |= {b"O%d" % o} if o is not None else set()
    assert (command, decoded, flags) == ("mg", key, expected)


@settings(deadline=None)  # a shared machine: assert behaviour, never time
@given(key=keys, value=st.binary(max_size=300), ttl=small, cas=maybe, q=st.booleans(), o=maybe)
def test_set_requests_carry_the_value_verbatim(
    key: str, value: bytes, ttl: int, cas: int | None, q: bool, o: int | None
) -> None:
    command, decoded, flags, carried = _decode_request(
        MetaSet(key, value, ttl=ttl, client_flags=1, compare_cas=cas, quiet=q, opaque=o).encode()
    )
    expected = {b"F1"} | ({b"T%d" % ttl} if ttl else set()) | ({b"q"} if q else set())
    expected |= ({b"C%d" % cas} if cas is not None else set()) | ({b"O%d" % o} if o is not None else set())
    assert (command, decoded, flags, carried) == ("ms", key, expected, value)


# -- the reply parser -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("wire", "reply"),
    [
        (
            b"VA 3 t60 f5 c1 kfoo s3\r\nbar\r\n",
            Reply(Status.VA, ReturnFlags(ttl=60, client_flags=5, cas=1, key=b"foo", size=3), b"bar"),
        ),
        (b"VA 0 f0 c1 t30 W\r\n\r\n", Reply(Status.VA, ReturnFlags(client_flags=0, cas=1, ttl=30, won=True), b"")),
        (b"VA 0 t30 c2 Z\r\n\r\n", Reply(Status.VA, ReturnFlags(ttl=30, cas=2, token_sent=True), b"")),
        (
            b"VA 2 f1 c3 t29 Z X\r\nhi\r\n",
            Reply(Status.VA, ReturnFlags(cas=3, client_flags=1, ttl=29, token_sent=True, stale=True), b"hi"),
        ),
        (b"VA 1 kayBlIHk= b\r\nv\r\n", Reply(Status.VA, ReturnFlags(key=b"ayBlIHk=", base64_key=True), b"v")),
        (b"VA 5 t-1\r\na\r\nbc\r\n", Reply(Status.VA, ReturnFlags(ttl=-1), b"a\r\nbc")),
        (
            b"VA 1 O12 kx s1 t59 f0 c53 h0 l1\r\nx\r\n",
            Reply(Status.VA, ReturnFlags(53, 0, 59, 1, hit_before=False, last_access=1, opaque=12, key=b"x"), b"x"),
        ),
        (b"HD\r\n", Reply(Status.HD)),
        (b"HD O7 kx c53\r\n", Reply(Status.HD, ReturnFlags(cas=53, opaque=7, key=b"x"))),
        (b"EN\r\n", Reply(Status.EN)),
        (b"EN O12 knokey\r\n", Reply(Status.EN, ReturnFlags(opaque=12, key=b"nokey"))),
        (b"NF O2\r\n", Reply(Status.NF, ReturnFlags(opaque=2))),
        (b"NS\r\n", Reply(Status.NS)),
        (b"EX\r\n", Reply(Status.EX)),
        (b"MN\r\n", Reply(Status.MN)),
        (b"END\r\n", Reply(Status.END)),
        (b"HD Q5 c1\r\n", Reply(Status.HD, ReturnFlags(cas=1))),  # unknown flags are ignored
        (b"STAT item_size_max 1048576\r\n", StatReply("item_size_max", "1048576")),
        (
            b"SERVER_ERROR object too large for cache\r\n",
            ErrorReply(ErrorKind.SERVER_ERROR, "object too large for cache"),
        ),
        (b"CLIENT_ERROR bad command line format\r\n", ErrorReply(ErrorKind.CLIENT_ERROR, "bad command line format")),
        (b"ERROR\r\n", ErrorReply(ErrorKind.ERROR, "")),
    ],
)
def test_replies_parse_into_typed_values(wire: bytes, reply: AnyReply) -> None:
    assert parse_all(wire) == [reply]
    assert parse_all(wire, [1] * len(wire)) == [reply]  # byte by byte


@pytest.mark.parametrize(
    "wire",
    [
        b"VA\r\n",
        b"VA x\r\n",
        b"VA -1\r\n",
        b"VA 3\r\nbarX\r\n",
        b"VA 99999999999\r\n",
        b"HD  c1\r\n",
        b"HD \r\n",
        b"HD c\r\n",
        b"HD cx\r\n",
        b"HD W1\r\n",
        b"HD 5\r\n",
        b"HD t-\r\n",
        b"HD O123456789012345678901234567890123\r\n",
        b"HD k\r\n",
        b"MN c1\r\n",
        b"OK\r\n",
        b"VALUE foo 0 3\r\n",
        b"STAT x\r\n",
        b"HD \x01\r\n",
        b"\xff\xfe\r\n",
        b"H" * 9000,
        b"H" * 9000 + b"\r\n",
    ],
)
def test_garbage_raises_the_protocol_error(wire: bytes) -> None:
    with pytest.raises(MetaProtocolError) as info:
        drain(MetaParser(), wire)
    assert isinstance(info.value, CacheUnavailableError)
    assert info.value.backend == "memcached"


def test_partial_input_waits_and_counts_what_is_buffered() -> None:
    parser = MetaParser()
    parser.feed(b"VA 5 c1\r\nhel")
    assert parser.next_reply() is None
    assert parser.buffered == 3
    parser.feed(b"lo\r\nEN\r")
    assert parser.next_reply() == Reply(Status.VA, ReturnFlags(cas=1), b"hello")
    assert parser.next_reply() is None
    parser.feed(b"\n")
    assert parser.next_reply() == Reply(Status.EN)
    assert parser.buffered == 0


def test_a_large_value_in_many_pieces() -> None:
    value = bytes(range(256)) * 4096  # 1 MiB
    wire = b"VA %d f1\r\n" % len(value) + value + b"\r\nMN\r\n"
    assert parse_all(wire, [65536] * 17) == [Reply(Status.VA, ReturnFlags(client_flags=1), value), Reply(Status.MN)]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400), st.lists(st.integers(0, 50), max_size=10))
def test_the_parser_raises_only_the_protocol_error_on_arbitrary_bytes(data: bytes, cuts: list[int]) -> None:
    with contextlib.suppress(MetaProtocolError):
        drain(MetaParser(), data, cuts)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([b"VA ", b"HD", b"EN", b"MN", b"\r\n", b" c1", b" W", b"3", b"abc", b"STAT a b"])))
def test_the_parser_raises_only_the_protocol_error_on_reply_like_bytes(parts: list[bytes]) -> None:
    with contextlib.suppress(MetaProtocolError):
        drain(MetaParser(), b"".join(parts))


flag_values = st.builds(
    ReturnFlags,
    cas=maybe,
    client_flags=maybe,
    ttl=st.none() | st.integers(-1, 2**31),
    size=maybe,
    hit_before=st.none() | st.booleans(),
    last_access=maybe,
    opaque=maybe,
    key=st.none() | st.from_regex(rb"\A[\x21-\x7e]{1,250}\Z"),
    base64_key=st.booleans(),
    won=st.booleans(),
    token_sent=st.booleans(),
    stale=st.booleans(),
)
meta_replies = st.one_of(
    st.builds(Reply, st.just(Status.VA), flag_values, st.binary(max_size=200)),
    st.builds(Reply, st.sampled_from([Status.HD, Status.EN, Status.NF, Status.NS, Status.EX]), flag_values, st.none()),
    st.just(Reply(Status.MN)),
    st.just(Reply(Status.END)),
    st.builds(StatReply, st.from_regex(r"\A[a-z_]{1,20}\Z"), st.from_regex(r"\A[\x21-\x7e]{1,20}\Z")),
    st.builds(ErrorReply, st.sampled_from(ErrorKind), st.from_regex(r"\A[\x20-\x7e]{0,40}\Z").map(str.strip)),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(meta_replies, max_size=8), st.lists(st.integers(0, 40), max_size=12))
def test_replies_round_trip_through_bytes_split_anywhere(replies: list[AnyReply], cuts: list[int]) -> None:
    wire = b"".join(encode_reply(reply) for reply in replies)
    assert parse_all(wire, cuts) == replies


# -- item states, tokens, limits, the ring -----------------------------------------------------


@pytest.mark.parametrize(
    ("wire", "state"),
    [
        (b"EN\r\n", MISSING),
        (b"VA 5 f1 c3\r\nhello\r\n", Found(b"hello")),
        (b"VA 0 f1 c3\r\n\r\n", Found(b"")),  # readscale's own empty value
        (b"VA 0 f0 c3\r\n\r\n", Found(b"")),  # an empty value of another client: no lease flags
        (b"VA 0 f0 c1 t30 W\r\n\r\n", LeaseWon(1)),  # mg N on a miss: we won
        (b"VA 0 f0 c1 t30 Z\r\n\r\n", LEASE_HELD),
        (b"VA 2 f1 c5 t60 X W\r\nhi\r\n", LeaseWon(5, stale=True)),  # md I, then any mg wins
        (b"VA 2 f1 c5 t60 Z X\r\nhi\r\n", LEASE_HELD),
        (b"HD f0 s0 c1 Z\r\n", LEASE_HELD),  # a poll without the value
        (b"HD f1 s5 c1\r\n", Found(None)),
        (b"VA 3 f1 c9 Z\r\nnew\r\n", Found(b"new")),  # a recache (R) win on a real value is still a hit
    ],
)
def test_item_states(wire: bytes, state: object) -> None:
    (reply,) = parse_all(wire)
    assert isinstance(reply, Reply)
    assert item_state(reply) == state


def test_lease_tokens_are_the_cas_as_text_and_nothing_else_parses() -> None:
    assert LeaseWon(12345).token == "12345"
    assert parse_token("12345") == 12345
    for bad in ("", "abc", "-1", "1.5", "²", " 1", "1" * 21, str(2**64), "not-the-token"):
        assert parse_token(bad) is None


def test_polling_backs_off_from_1_ms_to_50_ms() -> None:
    delays = [0.001]
    for _ in range(8):
        delays.append(next_poll_delay(delays[-1]))
    assert delays == [0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.05, 0.05, 0.05]


def test_value_limit_fits_the_longest_key() -> None:
    # verified: 1 MiB - 313 is the largest value memcached -I 1m takes under a 250-byte key
    assert max_value_size(1 << 20) == DEFAULT_MAX_VALUE_SIZE == 1_048_263


def test_the_ring_is_stable_balanced_and_moves_few_keys() -> None:
    names = ["10.0.0.1:11211", "10.0.0.2:11211", "10.0.0.3:11211"]
    ring = ServerRing(names)
    keys = [f"user:{i}".encode() for i in range(3000)]
    placed = [ring.index(key) for key in keys]
    assert placed == [ServerRing(names).index(key) for key in keys]  # no per-process randomness
    for server in range(3):
        assert 600 < placed.count(server) < 1400
    smaller = ServerRing(names[:2])
    moved = [i for i, key in enumerate(keys) if placed[i] != 2 and smaller.index(key) != placed[i]]
    assert moved == []  # only the removed server's keys move
    assert ServerRing(names[:1]).index(b"anything") == 0


@pytest.mark.parametrize("names", [[], ["a:1", "a:1"]])
def test_the_ring_refuses_empty_or_repeated_servers(names: list[str]) -> None:
    with pytest.raises(ConfigurationError):
        ServerRing(names)
