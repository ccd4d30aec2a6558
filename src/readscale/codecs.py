"""Codecs: how a cached value becomes bytes and back.

Safe by default: JSON (msgspec) unless you choose otherwise; msgpack (msgspec) for
smaller, faster payloads; pickle only when named, and then always HMAC-signed, so a
writer without the secret (someone who reached Redis) cannot make the application
unpickle their bytes. A payload that fails to decode or verify raises
:class:`~readscale.errors.CorruptValueError`, which the cache counts as a miss; that
includes a payload nested too deeply to decode (a crafted value cannot crash a read).

What cannot be stored faithfully is refused with
:class:`~readscale.errors.UnserializableValueError`, never changed on the way: a type
the codec lacks, a value nested deeper than the interpreter's recursion limit, and
under JSON a NaN or an infinity (JSON has none: msgspec would write ``null``, and the
value read back from Redis would differ from the one in the process's L1; msgpack and
signed pickle keep them).

Typed decoding: ``codec.typed(SomeType)`` decodes straight into that type (dataclasses,
``msgspec.Struct``, TypedDict, datetime, ...), so ``@cached`` functions return what
their annotation says, not a dict.
"""

from __future__ import annotations

import hmac
import math
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


def _has_non_finite(value: Any) -> bool:
    """Whether a builtins tree (``msgspec.to_builtins``) holds a NaN or an infinity."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, float):
            if not math.isfinite(item):
                return True
        elif isinstance(item, dict):
            stack.extend(item.values())
            stack.extend(k for k in item if isinstance(k, float))
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return False


class JsonCodec:
    """JSON through msgspec: the default. Handles dataclasses, datetimes, UUIDs, enums.

    NaN and infinities are refused (JSON cannot hold them); use msgpack for those."""

    id = 1
    name = "json"
    _checks_floats = True

    def __init__(self, type_: Any = Any) -> None:
        self._type = type_
        self._encoder = msgspec.json.Encoder()
        self._decoder = msgspec.json.Decoder(type_)

    def encode(self, value: Any) -> bytes:
        try:
            payload: bytes = self._encoder.encode(value)
        except RecursionError as exc:
            raise UnserializableValueError(None, type(value).__name__, self.name, "nested too deeply") from exc
        except (TypeError, msgspec.EncodeError, OverflowError, ValueError) as exc:
            raise UnserializableValueError(None, type(value).__name__, self.name, str(exc)) from exc
        # msgspec writes NaN and infinities as null. Only a payload with a null can hold
        # one, so the check costs nothing on the others.
        if self._checks_floats and b"null" in payload and _has_non_finite(msgspec.to_builtins(value)):
            raise UnserializableValueError(
                None, type(value).__name__, self.name, "NaN and infinity have no JSON form (use the msgpack codec)"
            )
        return payload

    def decode(self, data: bytes | memoryview) -> Any:
        try:
            return self._decoder.decode(data)
        except (msgspec.DecodeError, msgspec.ValidationError, ValueError, OverflowError) as exc:
            # ValueError: a msgpack string that is not UTF-8 (UnicodeDecodeError), found by fuzzing.
            raise CorruptValueError(None, f"{self.name}: {exc}") from exc
        except RecursionError:
            raise CorruptValueError(None, f"{self.name}: nested too deeply to decode") from None

    def typed(self, type_: Any) -> JsonCodec:
        return self if type_ is self._type else JsonCodec(type_)


class MsgpackCodec(JsonCodec):
    """msgpack through msgspec: smaller and faster than JSON, same types."""

    id = 2
    name = "msgpack"
    _checks_floats = False  # msgpack keeps NaN and infinities

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
        return hmac.digest(self._key, payload, "sha256")  # one C call: a third of hmac.new's cost

    def encode(self, value: Any) -> bytes:
        try:
            payload = pickle.dumps(value, protocol=self._protocol)
        except RecursionError as exc:
            raise UnserializableValueError(None, type(value).__name__, self.name, "nested too deeply") from exc
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
