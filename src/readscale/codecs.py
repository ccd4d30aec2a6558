"""Codecs: how a cached value becomes bytes and back.

Safe by default: JSON (msgspec) unless you choose otherwise; msgpack (msgspec) for
smaller, faster payloads; pickle only when named, and then always HMAC-signed, so a
writer without the secret (someone who reached Redis) cannot make the application
unpickle their bytes. A payload that fails to decode or verify raises
:class:`~readscale.errors.CorruptValueError`, which the cache counts as a miss.

Typed decoding: ``codec.typed(SomeType)`` decodes straight into that type (dataclasses,
``msgspec.Struct``, TypedDict, datetime, ...), so ``@cached`` functions return what
their annotation says, not a dict.
"""

from __future__ import annotations

import hashlib
import hmac
import pickle  # noqa: TID251 - the one place pickle is allowed: SignedPickleCodec, opt-in by name
from typing import Any, Protocol, runtime_checkable

import msgspec

from readscale.errors import ConfigurationError, CorruptValueError, UnserializableValueError


@runtime_checkable
class Codec(Protocol):
    #: Stored in each entry's envelope, so an entry written by another codec is a counted miss.
    id: int
    name: str

    def encode(self, value: Any) -> bytes: ...

    def decode(self, data: bytes | memoryview) -> Any: ...

    def typed(self, type_: Any) -> Codec:
        """A codec decoding into ``type_`` (or itself if it cannot)."""
        ...


class JsonCodec:
    """JSON through msgspec: the default. Handles dataclasses, datetimes, UUIDs, enums."""

    id = 1
    name = "json"

    def __init__(self, type_: Any = Any) -> None:
        self._type = type_
        self._encoder = msgspec.json.Encoder()
        self._decoder = msgspec.json.Decoder(type_)

    def encode(self, value: Any) -> bytes:
        try:
            return self._encoder.encode(value)
        except (TypeError, msgspec.EncodeError, OverflowError, ValueError) as exc:
            raise UnserializableValueError(None, type(value).__name__, self.name, str(exc)) from exc

    def decode(self, data: bytes | memoryview) -> Any:
        try:
            return self._decoder.decode(data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise CorruptValueError(None, f"{self.name}: {exc}") from exc

    def typed(self, type_: Any) -> JsonCodec:
        return self if type_ is self._type else JsonCodec(type_)


class MsgpackCodec(JsonCodec):
    """msgpack through msgspec: smaller and faster than JSON, same types."""

    id = 2
    name = "msgpack"

    def __init__(self, type_: Any = Any) -> None:
        self._type = type_
        self._encoder = msgspec.msgpack.Encoder()  # type: ignore[assignment]
        self._decoder = msgspec.msgpack.Decoder(type_)  # type: ignore[assignment]

    def typed(self, type_: Any) -> MsgpackCodec:
        return self if type_ is self._type else MsgpackCodec(type_)


class SignedPickleCodec:
    """Pickle, HMAC-SHA256 signed with ``secret``. Opt in only when values are not
    JSON/msgpack-able; every process sharing the cache needs the same secret."""

    id = 3
    name = "pickle"
    _SIG = 32

    def __init__(self, secret: bytes | str, *, protocol: int = pickle.HIGHEST_PROTOCOL) -> None:
        key = secret.encode() if isinstance(secret, str) else bytes(secret)
        if len(key) < 16:
            raise ConfigurationError("SignedPickleCodec needs a secret of at least 16 bytes")
        self._key = key
        self._protocol = protocol

    def _sign(self, payload: bytes | memoryview) -> bytes:
        return hmac.new(self._key, payload, hashlib.sha256).digest()

    def encode(self, value: Any) -> bytes:
        try:
            payload = pickle.dumps(value, protocol=self._protocol)
        except (pickle.PicklingError, TypeError, AttributeError) as exc:
            raise UnserializableValueError(None, type(value).__name__, self.name, str(exc)) from exc
        return self._sign(payload) + payload

    def decode(self, data: bytes | memoryview) -> Any:
        view = memoryview(data)
        signature, payload = bytes(view[: self._SIG]), view[self._SIG :]
        if len(signature) < self._SIG or not hmac.compare_digest(signature, self._sign(payload)):
            raise CorruptValueError(None, "pickle signature does not verify (wrong secret or tampered value)")
        try:
            return pickle.loads(payload)  # noqa: S301 - verified above
        except Exception as exc:  # an old class, a missing module: a miss, not a crash
            raise CorruptValueError(None, f"pickle: {exc}") from exc

    def typed(self, type_: Any) -> SignedPickleCodec:
        return self


class BytesCodec:
    """Raw bytes, stored as given (for values you encode yourself)."""

    id = 4
    name = "bytes"

    def encode(self, value: Any) -> bytes:
        if not isinstance(value, bytes | bytearray | memoryview):
            raise UnserializableValueError(None, type(value).__name__, self.name, "the bytes codec takes bytes")
        return bytes(value)

    def decode(self, data: bytes | memoryview) -> Any:
        return bytes(data)

    def typed(self, type_: Any) -> BytesCodec:
        return self


__all__ = ["BytesCodec", "Codec", "JsonCodec", "MsgpackCodec", "SignedPickleCodec"]
