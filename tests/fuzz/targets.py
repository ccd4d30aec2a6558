"""Fuzz targets shared by the atheris harness: one input in, a contract checked.

Each target feeds bytes to a parser of untrusted input and fails (raises anything but
the documented outcome) only on a real bug. The contracts are those of
``tests/fuzz/test_contracts.py``; atheris adds coverage guidance to find inputs Hypothesis
does not think of.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from readscale._core.cache.entry import EnvelopeError, decode_envelope
from readscale._core.cache.keys import validate_key
from readscale._core.http import (
    parse_cache_control,
    parse_cache_status,
    parse_conditionals,
    parse_entity_tag,
    parse_http_date,
    parse_tag_list,
    render_tags,
)
from readscale._core.postgres.dsn import mask_dsn, scrub, secrets_of
from readscale._core.replicas.causal import TokenSigner
from readscale.codecs import JsonCodec, MsgpackCodec
from readscale.errors import CorruptValueError, HeaderError, InvalidKeyError

SIGNER = TokenSigner(b"fuzzing secret, 32 bytes long...")
_JSON, _MSGPACK = JsonCodec(), MsgpackCodec()


def _refused_field(parse: Callable[[], object]) -> str | None:
    try:
        parse()
    except HeaderError as exc:
        return exc.header or "?"
    return None


def _headers(data: bytes) -> None:
    text = data.decode("latin-1")
    for parse in (parse_cache_control, parse_http_date, parse_tag_list, parse_entity_tag, parse_cache_status):
        assert _refused_field(lambda p=parse: p(text)) != "?", "a HeaderError names its field"  # type: ignore[misc]
    conditionals = {"if-none-match": text, "if-modified-since": text}
    assert _refused_field(lambda: parse_conditionals(conditionals.get)) in (None, "If-None-Match")


def _token(data: bytes) -> None:
    assert SIGNER.loads(data.decode("latin-1"), now=1_800_000_000.0) is None


def _payload(data: bytes) -> None:
    with contextlib.suppress(EnvelopeError):
        decode_envelope(data)
    for codec in (_JSON, _MSGPACK):
        with contextlib.suppress(CorruptValueError):
            codec.decode(data)


def _key(data: bytes) -> None:
    text = data.decode("utf-8", "surrogateescape")
    try:
        validate_key(text)
    except InvalidKeyError:
        return
    assert text.isprintable()


def _tags_and_dsns(data: bytes) -> None:
    text = data.decode("utf-8", "replace")
    render_tags(text.split("\n"))
    scrub(mask_dsn(text), secrets_of(text))


TARGETS: list[Callable[[bytes], None]] = [_headers, _token, _payload, _key, _tags_and_dsns]


def one_input(data: bytes) -> None:
    """The first byte picks the target; the rest is its input."""
    if not data:
        return
    TARGETS[data[0] % len(TARGETS)](data[1:])
