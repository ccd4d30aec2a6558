"""Fuzzing the parsers of untrusted input with Hypothesis (bounded: ``FUZZ``).

Each target has one contract: it accepts, or it raises its one documented error
(``HeaderError`` naming the field, ``CorruptValueError``, ``InvalidKeyError``), or it
answers ``None`` (a causal token it cannot vouch for). Nothing else may escape. Inputs
are arbitrary text and bytes, and valid values mutated a little (the inputs that reach
deep into a parser). The atheris harness (tests/fuzz) drives the same contracts with
coverage guidance.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from readscale._core.cache.keys import MAX_KEY_BYTES, format_key, physical_keys, validate_key
from readscale._core.http import (
    CacheControl,
    Exchange,
    HttpPolicy,
    HttpSettings,
    carried_identity,
    decide,
    format_http_date,
    parse_cache_control,
    parse_cache_status,
    parse_conditionals,
    parse_entity_tag,
    parse_http_date,
    parse_tag_list,
    render_tags,
    variant_etag,
    variant_key,
    version_etag,
    wire_tag,
)
from readscale._core.http.surrogate import OverBudget, TagHeaders
from readscale._core.replicas.causal import CausalToken, TokenSigner
from readscale.codecs import JsonCodec, MsgpackCodec, SignedPickleCodec
from readscale.errors import CorruptValueError, HeaderError, InvalidKeyError

# READSCALE_FUZZ_EXAMPLES=20000 for a long hunt; CI runs the bounded default.
FUZZ = settings(max_examples=int(os.environ.get("READSCALE_FUZZ_EXAMPLES", "300")), deadline=None)
NOW = 1_800_000_000.0
SIGNER = TokenSigner(b"fuzzing secret, 32 bytes long...")

VALID_HEADERS = [
    "max-age=60, public",
    'no-cache="set-cookie", private="authorization", s-maxage=10',
    "stale-while-revalidate=30, stale-if-error=600, immutable",
    "Sun, 06 Nov 1994 08:49:37 GMT",
    "Sunday, 06-Nov-94 08:49:37 GMT",
    "Sun Nov  6 08:49:37 1994",
    '"a", W/"b", "c,d"',
    "*",
    'W/"xyzzy"',
    'readscale-edge; hit; ttl=-3, Origin; fwd=uri-miss; stored; detail="x"',
]
EDITS = st.text(alphabet=st.sampled_from(list('",;=\\/W*- \t\x00\x7f\xe9\u0100\r\n0123456789aZ')), max_size=4)


@st.composite
def mutated(draw: st.DrawFn, base: list[str] = VALID_HEADERS) -> str:
    """A valid field value with a few characters replaced, inserted or deleted."""
    text = draw(st.sampled_from(base))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(text)))
        cut = draw(st.integers(0, 3))
        text = text[:at] + draw(EDITS) + text[at + cut :]
    return text


latin1 = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=255), max_size=80)
# Short strings of the characters header grammars turn on: quotes, separators, W/, NUL.
header_ish = st.text(alphabet=st.sampled_from(list('abcdefmnorstvxW/*"=,; \t-0123456789\\\x00\x7f\xe9')), max_size=60)
field_values = st.one_of(
    mutated(),
    latin1,
    header_ish,
    st.text(max_size=60),
    st.binary(max_size=60).map(lambda b: b.decode("latin-1")),
)


# -- header parsers ---------------------------------------------------------------------------


def _only_header_error(parse: Any, value: str, header: str | None = None) -> None:
    error: HeaderError | None = None
    try:
        parse(value)
    except HeaderError as exc:
        error = exc
    if error is not None:
        assert error.header, "the error names the field"
        assert header is None or error.header == header
        assert "\n" not in str(error) and "\r" not in str(error), "the value is quoted escaped"


@FUZZ
@given(field_values)
def test_every_header_parser_accepts_or_raises_header_error(value: str) -> None:
    _only_header_error(parse_cache_control, value, "Cache-Control")
    _only_header_error(parse_http_date, value)
    _only_header_error(parse_tag_list, value, "If-None-Match")
    _only_header_error(parse_entity_tag, value)
    _only_header_error(parse_cache_status, value)


@FUZZ
@given(
    st.dictionaries(
        st.sampled_from(["if-match", "if-none-match", "if-modified-since", "if-unmodified-since"]), field_values
    )
)
def test_conditionals_accept_or_refuse_a_precondition(fields: dict[str, str]) -> None:
    refused = None
    try:
        parse_conditionals(fields.get)
    except HeaderError as exc:
        refused = exc.header
    assert refused in (None, "If-Match", "If-None-Match")


@FUZZ
@given(mutated())
def test_what_a_parser_accepts_renders_back_to_something_it_accepts(value: str) -> None:
    try:
        parsed = parse_cache_control(value)
    except HeaderError:
        return
    assert isinstance(parsed, CacheControl)
    assert parse_cache_control(parsed.render()) == parsed


@FUZZ
@given(field_values)
def test_accepted_dates_are_in_range_and_render_back(value: str) -> None:
    try:
        epoch = parse_http_date(value)
    except HeaderError:
        return
    assert parse_http_date(format_http_date(epoch)) == epoch


# -- the response fields readscale writes -----------------------------------------------------

_SAFE = {chr(c) for c in range(0x20, 0x7F)} | {"\t"}
exchanges = st.builds(
    Exchange,
    status=st.integers(100, 599),
    reads=st.frozensets(st.one_of(st.sampled_from(["cookie", "accept-language", "x-api-key"]), latin1), max_size=5),
    identity_present=st.frozensets(st.sampled_from(["cookie", "authorization"])),
    walked=st.frozensets(st.sampled_from(["user-agent", "cookie", "x-forwarded-host"])),
    sets_token=st.booleans(),
    forwarded=st.none() | st.sampled_from(["x-forwarded-proto", "forwarded"]),
    request_authorization=st.booleans(),
    sets_cookie=st.booleans(),
    handler_cache_control=st.none() | field_values,
    handler_vary=st.none() | field_values,
    extra_tags=st.lists(st.text(max_size=40), max_size=6).map(tuple),
)
policies = st.none() | st.sampled_from(
    [HttpPolicy.public(60, edge_max_age=600, stale_while_revalidate=30), HttpPolicy.private(5), HttpPolicy.no_store()]
)


@FUZZ
@given(policies, exchanges, st.sampled_from(["varnish", "fastly", "cloudflare", "akamai", None]))
def test_decide_never_raises_and_only_writes_well_formed_fields(
    policy: HttpPolicy | None, exchange: Exchange, edge: Any
) -> None:
    plan = decide(policy, exchange, HttpSettings(edge=edge))
    values = [plan.cache_control, plan.cdn_cache_control, plan.vary, *(v for _, v in plan.tag_lines)]
    for value in values:
        assert value is None or set(value) <= _SAFE, value
    parse_cache_control(plan.cache_control)
    if plan.vary is not None:
        assert "*" not in [name.strip() for name in plan.vary.split(",")], "never Vary: *"


@FUZZ
@given(st.lists(st.text(max_size=300), max_size=50), st.sampled_from(["varnish", "fastly", "cloudflare", "akamai"]))
def test_tags_render_as_visible_ascii_or_are_refused_as_over_budget(tags: list[str], vendor: Any) -> None:
    rendered = render_tags(tags, vendor)
    assert isinstance(rendered, TagHeaders | OverBudget)
    if isinstance(rendered, TagHeaders):
        for _, value in rendered.lines:
            assert value and all(0x20 <= ord(ch) < 0x7F for ch in value)
    for tag in tags:
        assert wire_tag(tag, vendor) == wire_tag(tag, vendor), "tagging and purging agree"


@FUZZ
@given(field_values)
def test_what_cache_status_accepts_renders_back_canonically(value: str) -> None:
    try:
        members = parse_cache_status(value)
    except HeaderError:
        return
    rendered = ", ".join(m.render() for m in members)
    assert parse_cache_status(rendered) == members
    assert ", ".join(m.render() for m in parse_cache_status(rendered)) == rendered, "canonical: a fixed point"


@FUZZ
@given(
    st.dictionaries(st.sampled_from(["cookie", "accept-language", "authorization", "x-forwarded-proto"]), field_values),
    st.frozensets(st.sampled_from(["cookie", "accept-language", "authorization", "x-forwarded-proto", "accept"])),
)
def test_every_request_yields_a_well_formed_validator_of_its_variant(
    values: dict[str, str], fields: frozenset[str]
) -> None:
    base = version_etag("/p", 1)
    tag = variant_etag(base, variant_key(tuple(sorted(fields)), values.get, frozenset({"readscale_token"})))
    assert parse_entity_tag(tag.render()) == tag, "an ETag that any client can send back"
    present = frozenset(values)
    assert carried_identity(HttpSettings(), present, values.get("cookie")) <= present


# -- causal tokens ----------------------------------------------------------------------------

tokens = st.builds(CausalToken, st.integers(0, (1 << 64) - 1), st.integers(1, (1 << 32) - 1), st.integers(0, 1 << 60))


@FUZZ
@given(tokens, st.data())
def test_a_token_changed_anywhere_is_refused(token: CausalToken, data: st.DataObject) -> None:
    genuine = SIGNER.dumps(token, now=NOW)
    at = data.draw(st.integers(0, len(genuine)))
    cut = data.draw(st.integers(0, 3))
    edit = data.draw(st.text(alphabet=st.sampled_from(list("0123456789abcdefABCDEF.-_=rs\x00\xe9")), max_size=3))
    forged = genuine[:at] + edit + genuine[at + cut :]
    carried = SIGNER.loads(forged, now=NOW)
    if forged == genuine:
        assert carried is not None and carried.token == token
    else:
        assert carried is None, forged


@FUZZ
@given(st.one_of(st.text(max_size=300), st.binary(max_size=300).map(lambda b: b.decode("latin-1")), mutated()))
def test_any_text_is_no_token(text: str) -> None:
    assert SIGNER.loads(text, now=NOW) is None


# -- stored payloads and keys -----------------------------------------------------------------

CODECS = [JsonCodec(), MsgpackCodec(), SignedPickleCodec(b"0123456789abcdef-secret"), JsonCodec(dict[str, int])]


@FUZZ
@given(st.binary(max_size=400), st.sampled_from(CODECS))
def test_codecs_decode_or_raise_corrupt_value_error(payload: bytes, codec: Any) -> None:
    with contextlib.suppress(CorruptValueError):
        codec.decode(payload)


@FUZZ
@given(
    st.one_of(st.text(max_size=1200), st.binary(max_size=20), st.integers(), st.none(), st.lists(st.text(max_size=3)))
)
def test_keys_are_valid_or_refused_with_invalid_key_error(key: Any) -> None:
    try:
        accepted = validate_key(key)
    except InvalidKeyError as exc:
        reason = exc.reason
    else:
        reason = ""
    if reason:
        return
    assert isinstance(accepted, str) and accepted.isprintable()
    assert len(accepted.encode()) <= MAX_KEY_BYTES


@FUZZ
@given(st.lists(st.one_of(st.text(max_size=40), st.integers()), max_size=8))
def test_batches_of_keys_are_all_valid_or_refused(keys: list[Any]) -> None:
    try:
        stored = physical_keys("rs:", "ns", keys)
    except InvalidKeyError:
        return
    assert stored == [f"rs:ns:{validate_key(k)}" for k in keys]


@FUZZ
@given(
    st.dictionaries(st.sampled_from(["user_id", "lang"]), st.one_of(st.text(max_size=30), st.integers(), st.floats()))
)
def test_templates_fill_or_refuse_with_invalid_key_error(values: dict[str, Any]) -> None:
    with contextlib.suppress(InvalidKeyError):
        format_key("user:{user_id}:{lang}", {"user_id": 1, "lang": "en", **values})
