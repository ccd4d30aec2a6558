"""Policies, keys, the circuit breaker and codecs: pure rules, exhaustively."""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import hmac
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from readscale._core.cache import breaker
from readscale._core.cache.keys import companion_key, format_key, hash_tag, physical_key, template_fields, validate_key
from readscale._core.cache.policy import (
    BALANCE,
    CATALOG,
    PRESETS,
    PROFILE,
    STATIC_ASSETS,
    TRENDING,
    CachePolicy,
)
from readscale.codecs import BytesCodec, JsonCodec, MsgpackCodec, SignedPickleCodec
from readscale.errors import ConfigurationError, CorruptValueError, InvalidKeyError, UnserializableValueError


def test_how_is_the_method_called_not_a_policy_field() -> None:
    # CachePolicy.strategy was read by nothing (docs/architecture.md §7.2): it is gone.
    import readscale
    from readscale._core.cache import policy

    assert "strategy" not in {f.name for f in dataclasses.fields(CachePolicy)}
    assert not hasattr(policy, "Strategy")
    assert "Strategy" not in readscale.__all__
    with pytest.raises(TypeError):
        CachePolicy(strategy="aside")  # type: ignore[call-arg]


def test_presets_match_the_usual_table() -> None:
    assert STATIC_ASSETS.ttl == 24 * 3600
    assert CATALOG.ttl == 3600
    assert PROFILE.ttl == 300 and PROFILE.read_your_writes
    assert not BALANCE.cacheable
    assert TRENDING.ttl == 30 and TRENDING.early_refresh > 1
    assert set(PRESETS) == {"default", "static_assets", "catalog", "profile", "balance", "trending"}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"ttl": 0}, "ttl must be > 0"),
        ({"jitter": 1.0}, "jitter is a fraction"),
        ({"swr": -1}, "swr must be >= 0"),
        ({"early_refresh": float("nan")}, "early_refresh must be >= 0"),
        ({"negative_ttl": 0}, "negative_ttl"),
        ({"namespace": "a:b"}, "namespace"),
        ({"namespace": "a b"}, "namespace"),
        ({"tiers": frozenset()}, "at least one tier"),
        ({"schema": -1}, "schema"),
        ({"lease_ttl": 0}, "lease_ttl"),
    ],
)
def test_bad_policies_fail_on_construction(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        CachePolicy(**changes)  # type: ignore[arg-type]


def test_policy_is_frozen_and_with_revalidates() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        CATALOG.ttl = 5  # type: ignore[misc]
    assert CATALOG.with_(ttl=10).ttl == 10
    with pytest.raises(ConfigurationError):
        CATALOG.with_(ttl=-1)
    assert CATALOG.ttl_for(None) == CATALOG.ttl
    assert CATALOG.with_(negative_ttl=5).ttl_for(None) == 5


@pytest.mark.parametrize(
    "key", ["", "a\nb", "a\x00", "tab\tkey", "del\x7f", "zero\u200bwidth", "a}b", 3, None, "x" * 1100]
)
def test_invalid_keys(key: object) -> None:
    with pytest.raises(InvalidKeyError):
        validate_key(key)


@pytest.mark.parametrize("key", ["user:1", "with space", "café:ключ", "{user:1}:profile", "a{b}c"])
def test_valid_keys(key: str) -> None:
    assert validate_key(key) == key


def test_hash_tags_and_companions() -> None:
    assert hash_tag("{user:1}:profile") == "user:1"
    assert hash_tag("a{}b") is None
    assert hash_tag("plain") is None
    assert companion_key("rs:{user:1}:p", "lease") == "rs:{user:1}:p:lease"
    assert companion_key("rs:user:1", "lease") == "{rs:user:1}:lease"
    assert physical_key("rs:", "", "k") == "rs:k"
    assert physical_key("rs:", "ns", "k") == "rs:ns:k"


def test_key_templates() -> None:
    assert template_fields("user:{user_id}:profile") == ("user_id",)
    assert format_key("user:{user_id}:{kind}", {"user_id": 5, "kind": "p"}) == "user:5:p"
    with pytest.raises(ConfigurationError):
        template_fields("user:{user_id!r}")
    with pytest.raises(ConfigurationError):
        template_fields("user:{0}")
    with pytest.raises(ConfigurationError):
        template_fields("user:{")
    with pytest.raises(InvalidKeyError, match="cannot be part of a key"):
        format_key("user:{user}", {"user": object()})
    with pytest.raises(InvalidKeyError):
        format_key("user:{name}", {"name": "new\nline"})


def test_breaker_opens_probes_and_closes() -> None:
    settings = breaker.BreakerSettings(failure_threshold=2, cooldown=1.0, max_cooldown=4.0)
    state = breaker.CLOSED
    state = breaker.on_failure(state, 0.0, settings)
    assert state.circuit is breaker.Circuit.CLOSED
    state = breaker.on_failure(state, 0.1, settings)
    assert state.circuit is breaker.Circuit.OPEN
    assert breaker.allow(state, 0.5) == (False, state)
    allowed, state = breaker.allow(state, 1.2)
    assert allowed and state.circuit is breaker.Circuit.HALF_OPEN
    assert breaker.allow(state, 1.2)[0] is False  # one probe at a time
    state = breaker.on_failure(state, 1.3, settings)
    assert state.circuit is breaker.Circuit.OPEN and state.cooldown == 2.0
    allowed, state = breaker.allow(state, 3.4)
    assert allowed
    assert breaker.on_success(state) is breaker.CLOSED
    assert breaker.on_success(breaker.CLOSED) is breaker.CLOSED


def test_a_probe_that_never_reports_does_not_hold_the_breaker_half_open() -> None:
    """A probe whose caller was cancelled (or a path that does not report) never calls
    on_success or on_failure: after a cooldown without an outcome another call probes."""
    settings = breaker.BreakerSettings(failure_threshold=1, cooldown=1.0, max_cooldown=4.0)
    state = breaker.on_failure(breaker.CLOSED, 0.0, settings)
    allowed, state = breaker.allow(state, 1.0)  # the probe: its outcome is lost
    assert allowed and state.probing
    assert breaker.allow(state, 1.5)[0] is False, "one probe at a time while it may still answer"
    allowed, state = breaker.allow(state, 2.0)
    assert allowed, "a cooldown without an outcome: another probe"
    assert breaker.on_success(state) is breaker.CLOSED


@given(st.lists(st.floats(0.0, 5.0), min_size=1, max_size=30))
def test_the_breaker_is_never_stuck_whatever_goes_unreported(gaps: list[float]) -> None:
    """Whatever calls were let through without an outcome, a call is let through again
    within one (maximal) cooldown of the last one."""
    settings = breaker.BreakerSettings()
    state = breaker.CLOSED
    for _ in range(settings.failure_threshold):
        state = breaker.on_failure(state, 0.0, settings)
    now, last = 0.0, 0.0
    for gap in gaps:
        now += gap
        allowed, state = breaker.allow(state, now)
        if allowed:
            last = now
        assert now - last <= settings.max_cooldown, (now, last, state)
    allowed, _ = breaker.allow(state, now + settings.max_cooldown)
    assert allowed


def test_by_default_a_cache_back_after_a_long_outage_is_used_within_two_seconds() -> None:
    # Calls arrive every 10 ms; the server is down for 60 s, then answers again.
    settings = breaker.BreakerSettings()
    state, back_at, now = breaker.CLOSED, 60.0, 0.0
    while True:
        allowed, state = breaker.allow(state, now)
        if allowed:
            if now >= back_at:
                state = breaker.on_success(state)
                break
            state = breaker.on_failure(state, now, settings)
        now += 0.01
    assert state is breaker.CLOSED
    assert now - back_at <= settings.max_cooldown == 2.0


@given(st.lists(st.sampled_from(["ok", "fail", "tick"]), max_size=60))
def test_breaker_never_allows_calls_while_open_inside_its_cooldown(events: list[str]) -> None:
    settings = breaker.BreakerSettings(failure_threshold=3, cooldown=1.0, max_cooldown=8.0)
    state, now = breaker.CLOSED, 0.0
    for event in events:
        if event == "tick":
            now += 0.4
            continue
        allowed, state = breaker.allow(state, now)
        if state.circuit is breaker.Circuit.OPEN:
            assert not allowed and now - state.opened_at < state.cooldown
        if allowed:
            state = breaker.on_success(state) if event == "ok" else breaker.on_failure(state, now, settings)
        assert state.cooldown <= settings.max_cooldown


@dataclasses.dataclass
class Item:
    id: int
    at: datetime.datetime
    ref: uuid.UUID


def test_codecs_round_trip_and_decode_typed() -> None:
    item = Item(1, datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC), uuid.UUID(int=7))
    for codec in (JsonCodec(), MsgpackCodec()):
        raw = codec.typed(Item).encode(item)
        assert codec.typed(Item).decode(raw) == item
        assert codec.typed(Item) is codec.typed(Item), "one typed codec per type"
        assert isinstance(codec.decode(raw), dict)
        with pytest.raises(UnserializableValueError, match=r"type=Item"):
            codec.encode(item)  # undeclared, it would come back as that dict
    assert BytesCodec().decode(BytesCodec().encode(b"\x00\x01")) == b"\x00\x01"


def test_codec_errors_are_readscale_errors() -> None:
    with pytest.raises(UnserializableValueError):
        JsonCodec().encode({1, 2} | {object()})
    with pytest.raises(UnserializableValueError):
        BytesCodec().encode("text")
    with pytest.raises(CorruptValueError):
        JsonCodec().decode(b"{not json")
    with pytest.raises(CorruptValueError):
        JsonCodec(int).decode(b'"a string"')


def test_pickle_is_signed_and_needs_a_real_secret() -> None:
    with pytest.raises(ConfigurationError):
        SignedPickleCodec("short")
    codec = SignedPickleCodec(b"k" * 32)
    raw = codec.encode({1, 2})
    assert codec.decode(raw) == {1, 2}
    tampered = raw[:-1] + bytes([raw[-1] ^ 1])
    with pytest.raises(CorruptValueError, match="does not verify"):
        codec.decode(tampered)
    with pytest.raises(CorruptValueError):
        SignedPickleCodec(b"j" * 32).decode(raw)
    with pytest.raises(CorruptValueError):
        codec.decode(b"")
    # Plain HMAC-SHA256 over the pickle (entries written by any version verify), and
    # signing many entries leaves the shared keyed state untouched.
    payload = raw[32:]
    assert raw[:32] == hmac.new(b"k" * 32, payload, hashlib.sha256).digest()
    assert codec.encode({1, 2}) == raw
    forged = hmac.new(b"j" * 32, payload, hashlib.sha256).digest() + payload
    with pytest.raises(CorruptValueError, match="does not verify"):
        codec.decode(forged)
    with pytest.raises(CorruptValueError, match="does not verify"):
        codec.decode(raw[:20])
