"""The error hierarchy: one root, few leaves, fields an operator can use."""

from __future__ import annotations

import readscale.errors as errors
from readscale.errors import (
    CacheUnavailableError,
    CorruptValueError,
    HeaderError,
    InvalidKeyError,
    ReadscaleError,
    ReplicaUnavailableError,
    UnserializableValueError,
    ValueTooLargeError,
)


def test_every_public_error_derives_from_the_root() -> None:
    for name in errors.__all__:
        cls = getattr(errors, name)
        assert issubclass(cls, ReadscaleError), name


def test_errors_carry_their_fields() -> None:
    too_large = ValueTooLargeError("user:1", 2_000_000, 1_000_000)
    assert (too_large.key, too_large.size, too_large.limit) == ("user:1", 2_000_000, 1_000_000)
    assert "2000000 bytes" in str(too_large)

    bad_key = InvalidKeyError("a b", "contains whitespace", backend="memcached")
    assert isinstance(bad_key, ValueError)
    assert "memcached" in str(bad_key)

    unserializable = UnserializableValueError("k", "set", "json")
    assert isinstance(unserializable, TypeError)

    assert CorruptValueError("k", "bad magic").reason == "bad magic"
    assert CacheUnavailableError("down", backend="redis").backend == "redis"
    assert ReplicaUnavailableError("lagging", retry_after=0.2).retry_after == 0.2

    header = HeaderError("If-None-Match", "x" * 200, "unquoted entity tag")
    assert header.header == "If-None-Match"
    assert len(str(header)) < 200
