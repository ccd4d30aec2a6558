"""The causal token: merge rules, history resets, and the signed string (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from readscale._core.postgres.lsn import MAX_LSN
from readscale._core.replicas.causal import (
    MAX_TOKEN_LENGTH,
    CausalToken,
    ClusterIdentity,
    TokenSigner,
    advance,
    merge,
    reconcile,
)
from readscale.errors import ConfigurationError

SECRET = b"0123456789abcdef0123456789abcdef"
NOW = 1_800_000_000.0
A = ClusterIdentity(7712381059523301660, 1)
A2 = ClusterIdentity(7712381059523301660, 2)
B = ClusterIdentity(42, 1)

tokens = st.builds(
    CausalToken,
    st.integers(0, (1 << 64) - 1),
    st.integers(1, (1 << 32) - 1),
    st.integers(0, MAX_LSN),
)


# -- merge rules --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("current", "observed", "expected", "why"),
    [
        (None, A.at(10), A.at(10), "a new session takes the position"),
        (A.at(10), A.at(20), A.at(20), "forward"),
        (A.at(20), A.at(10), A.at(20), "never backward (monotonic)"),
        (A.at(20), A2.at(5), A2.at(5), "a new timeline resets, however small its LSN"),
        (A2.at(5), A.at(50), A.at(50), "the live history wins even on an older timeline"),
        (B.at(10**9), A.at(1), A.at(1), "another cluster resets"),
    ],
)
def test_advance(current: CausalToken | None, observed: CausalToken, expected: CausalToken, why: str) -> None:
    assert advance(current, observed) == expected, why


@given(st.lists(st.integers(0, MAX_LSN), min_size=1, max_size=30))
def test_advance_within_one_history_is_the_running_max(positions: list[int]) -> None:
    token = None
    for i, lsn in enumerate(positions):
        token = advance(token, A.at(lsn))
        assert token.lsn == max(positions[: i + 1])


@given(tokens, tokens)
def test_merge_is_commutative_within_a_cluster(a: CausalToken, b: CausalToken) -> None:
    if a.system_identifier == b.system_identifier:
        assert merge(a, b) == merge(b, a)
    assert merge(a, None) == a
    assert merge(None, b) == b
    assert merge(a, b) in (a, b)


def test_merge_prefers_the_later_timeline_of_one_cluster() -> None:
    assert merge(A.at(100), A2.at(1)) == A2.at(1)
    assert merge(A2.at(1), A.at(100)) == A2.at(1)


@pytest.mark.parametrize(
    ("token", "identity", "kept"),
    [
        (A.at(5), A, True),
        (A.at(5), A2, False),
        (A.at(5), B, False),
        (A.at(5), None, True),
        (None, A, False),
    ],
)
def test_reconcile_drops_other_histories(
    token: CausalToken | None, identity: ClusterIdentity | None, kept: bool
) -> None:
    assert reconcile(token, identity) == (token if kept else None)


@pytest.mark.parametrize(
    "args",
    [(-1, 1, 0), (1 << 64, 1, 0), (1, 0, 0), (1, 1 << 32, 0), (1, 1, -1), (1, 1, MAX_LSN + 1)],
)
def test_token_fields_are_range_checked(args: tuple[int, int, int]) -> None:
    with pytest.raises(ConfigurationError):
        CausalToken(*args)


# -- signing ------------------------------------------------------------------------------


@given(tokens, st.one_of(st.none(), st.floats(0, NOW)))
def test_signed_tokens_round_trip(token: CausalToken, written_at: float | None) -> None:
    signer = TokenSigner(SECRET)
    text = signer.dumps(token, now=NOW, written_at=written_at)
    assert len(text) <= MAX_TOKEN_LENGTH
    carried = signer.loads(text, now=NOW + 1)
    assert carried is not None
    assert carried.token == token
    assert carried.issued_at == int(NOW)
    if written_at is None:
        assert carried.written_at is None
    else:
        assert carried.written_at == pytest.approx(written_at, abs=0.001)


def test_every_single_character_change_is_rejected() -> None:
    signer = TokenSigner(SECRET)
    text = signer.dumps(A.at(0x4020260), now=NOW, written_at=NOW - 1)
    alphabet = "0123456789abcdefABCDEF.-_xyz"
    tampered = 0
    for i, original in enumerate(text):
        for replacement in alphabet:
            if replacement == original:
                continue
            forged = text[:i] + replacement + text[i + 1 :]
            assert signer.loads(forged, now=NOW) is None, forged
            tampered += 1
    assert tampered > 1000


def test_forged_expired_future_and_foreign_tokens_are_refused() -> None:
    signer = TokenSigner(SECRET, max_age=3600)
    text = signer.dumps(A.at(100), now=NOW)
    assert signer.loads(text, now=NOW + 3600) is not None
    assert signer.loads(text, now=NOW + 3601) is None, "expired"
    assert signer.loads(text, now=NOW - 3600) is None, "issued in the future"
    other = TokenSigner(b"another secret, same length......")
    assert other.loads(text, now=NOW) is None, "signed with another key"
    assert signer.loads(other.dumps(A.at(100), now=NOW), now=NOW) is None, "forged with another key"


def test_key_rotation_signs_with_the_first_and_accepts_all() -> None:
    old = TokenSigner(b"old secret 0123456789")
    rotated = TokenSigner([b"new secret 0123456789", b"old secret 0123456789"])
    from_old = old.dumps(A.at(7), now=NOW)
    assert rotated.loads(from_old, now=NOW) is not None
    from_new = rotated.dumps(A.at(7), now=NOW)
    assert old.loads(from_new, now=NOW) is None
    assert TokenSigner(b"new secret 0123456789").loads(from_new, now=NOW) is not None


@pytest.mark.parametrize(
    "text",
    [
        None,
        "",
        "rs1",
        "rs1.....",
        "rs2.1.1.0.-.1800000000.AAAAAAAAAAAAAAAAAAAAAA",
        "rs1.1.1.0.-.1800000000.AAAAAAAAAAAAAAAAAAAAAA",
        "rs1.1.1.0.-.1800000000.AAAAAAAAAAAAAAAAAAAAAA.extra",
        "rs1.+1.1.0.-.1800000000.AAAAAAAAAAAAAAAAAAAAAA",
        "rs1.1_0.1.0.-.1800000000.AAAAAAAAAAAAAAAAAAAAAA",
        "x" * 10_000,
        "rs1.1.1.0.-.1800000000.AAAAAAAAAAAAAAAAAAAAA\u00e9",
    ],
)
def test_malformed_tokens_are_none(text: str | None) -> None:
    assert TokenSigner(SECRET).loads(text, now=NOW) is None


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.text(max_size=300), st.binary(max_size=300).map(lambda b: b.decode("latin-1"))))
def test_loads_never_raises(text: str) -> None:
    assert TokenSigner(SECRET).loads(text, now=NOW) is None


@pytest.mark.parametrize("secrets", [b"short", "", [], [b"0123456789abcdef", b"tiny"]])
def test_short_or_missing_secrets_are_refused(secrets: bytes | str | list[bytes]) -> None:
    with pytest.raises(ConfigurationError):
        TokenSigner(secrets)


def test_max_age_must_be_positive() -> None:
    with pytest.raises(ConfigurationError, match="max_age"):
        TokenSigner(SECRET, max_age=0)
