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

Typed values: a value comes back as the type it was stored as, from the L1 and from
every L2 alike, or it is refused when stored. ``codec.typed(SomeType)`` decodes
straight into a declared type (dataclasses, ``msgspec.Struct``, attrs classes,
TypedDict, ``dict[int, str]``, ``set[str]``, tuples, datetimes, ... in one compiled
msgspec step; pydantic v2 models, alone or inside containers, through pydantic's own
``TypeAdapter``), so ``@cached`` functions return what their annotation says and
``get_or_load(..., type=T)`` returns a ``T``. Typed codecs are made once per type.
A value stored with no declared type must be made of what the format brings back as
itself (JSON: ``None``, ``bool``, ``int``, ``float``, ``str``, ``list`` and ``dict``
with ``str`` keys; msgpack also ``bytes`` and ``int`` keys): anything else (a
dataclass, a tuple, a set, ``{1: "a"}``, a datetime) would come back from the L2 as
a dict, a list or a str while the L1 hands back the object, so it is refused at
``set`` (and at a fill) with an error naming the key, the type and the fix. The check
runs when a value is stored, never on a hit.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import pickle  # noqa: TID251 - the one place pickle is allowed: SignedPickleCodec, opt-in by name
import sys
import typing
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


#: What JSON brings back as itself with no declared type (exact types: a subclass, such
#: as an enum or an OrderedDict, comes back as its base).
_JSON_SCALARS: frozenset[type] = frozenset({str, int, float, bool, type(None)})
_JSON_KEYS: frozenset[type] = frozenset({str})
_MSGPACK_SCALARS: frozenset[type] = _JSON_SCALARS | {bytes}
_MSGPACK_KEYS: frozenset[type] = frozenset({str, int})


def _changed_on_return(value: Any, scalars: frozenset[type], keys: frozenset[type]) -> str | None:
    """Why ``value``, decoded with no declared type, would not come back as itself (None
    if it would). Exact type checks over the tree, run when a value is stored, never on a
    hit: on a list of small dicts a few times the JSON encode itself; a scalar, one lookup."""
    if type(value) in scalars:
        return None
    stack = [value]
    pop, push = stack.pop, stack.extend
    while stack:
        item = pop()
        kind = type(item)
        if kind in scalars:
            continue
        if kind is list:
            push(item)
        elif kind is dict:
            for key in item:
                if type(key) not in keys:
                    return f"a dict key of type {type(key).__name__} does not come back as one"
            push(item.values())
        else:
            where = "" if item is value else " inside it"
            return f"a {kind.__name__}{where} comes back as {_returns_as(item)}"
    return None


def _returns_as(item: Any) -> str:
    """What an undeclared decode makes of ``item`` (for the error)."""
    if isinstance(item, list | tuple | set | frozenset):
        return "a list"
    if isinstance(item, dict):
        return "a dict"
    for base in (bool, int, float, str):
        if isinstance(item, base):  # an enum, a subclass
            return f"a plain {base.__name__}"
    return "a dict or a str, if it encodes at all"


def _undeclared_error(value: Any, codec: str, why: str) -> UnserializableValueError:
    name = type(value).__name__
    return UnserializableValueError(
        None,
        name,
        codec,
        f"{why} when no type is declared, while the L1 would hand back the object: declare it "
        f"(get_or_load(..., type={name}) / get(..., type=...), or @cached's return annotation), "
        "or store JSON-native values",
    )


def root_class(type_: Any) -> type | None:
    """The class a value of the declared ``type_`` must be an instance of (None: no cheap
    check): the type itself, or a generic's origin (``list`` for ``list[User]``). The
    cache checks an L1 copy against it, and a typed pickle codec its decoded values."""
    root = typing.get_origin(type_) or type_
    if not isinstance(root, type):
        return None
    try:
        isinstance(None, root)
    except TypeError:  # TypedDict, a runtime-uncheckable Protocol
        return None
    return root


def _uses_pydantic(type_: Any) -> bool:
    """Whether the declared type is or holds a pydantic model (msgspec takes any class as
    a type, so it would accept the model and then fail on every decode)."""
    pydantic = sys.modules.get("pydantic")
    if pydantic is None:  # no pydantic model exists in a process that never imported it
        return False
    stack, seen = [type_], 0
    while stack and seen < 100:
        seen += 1
        item = stack.pop()
        if isinstance(item, type) and issubclass(item, pydantic.BaseModel):
            return True
        stack.extend(typing.get_args(item))
    return False


class JsonCodec:
    """JSON through msgspec: the default. Handles dataclasses, datetimes, UUIDs, enums.

    NaN and infinities are refused (JSON cannot hold them); use msgpack for those."""

    id = 1
    name = "json"
    _checks_floats = True
    _scalars: frozenset[type] = _JSON_SCALARS
    _keys: frozenset[type] = _JSON_KEYS

    def __init__(self, type_: Any = Any) -> None:
        self._type = type_
        self._undeclared = type_ is Any
        self._root = None if self._undeclared else root_class(type_)
        self._typed: dict[Any, Codec] = {}
        self._encoder = msgspec.json.Encoder()
        self._decoder = msgspec.json.Decoder(type_)
        self._expose_fast_decode()

    def _expose_fast_decode(self) -> None:
        """``fast_decode``: the compiled decode, no wrapper (the hit paths call it and, on
        any error, fall back to :meth:`decode`, which makes it a CorruptValueError). Not
        for a subclass that decodes otherwise."""
        if type(self).decode is JsonCodec.decode:
            self.fast_decode = self._decoder.decode

    def check(self, value: Any) -> None:
        """Refuse a value that would not come back as itself (see the module's docstring)."""
        if self._undeclared:
            why = _changed_on_return(value, self._scalars, self._keys)
            if why is not None:
                raise _undeclared_error(value, self.name, why)
        elif self._root is not None and not isinstance(value, self._root):
            raise UnserializableValueError(
                None,
                type(value).__name__,
                self.name,
                f"the declared type is {_type_name(self._type)}: a {type(value).__name__} would come back as one",
            )

    def encode(self, value: Any) -> bytes:
        self.check(value)
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

    def typed(self, type_: Any) -> Codec:
        """This codec decoding into ``type_``: made once per type and kept."""
        if type_ is self._type:
            return self
        try:
            return self._typed[type_]
        except KeyError:
            pass
        except TypeError:  # an unhashable annotation: made each time
            return self._make(type_)
        made = self._typed[type_] = self._make(type_)
        return made

    def _make(self, type_: Any) -> Codec:
        if _uses_pydantic(type_):
            return PydanticCodec(type(self)(), type_)
        return type(self)(type_)


class MsgpackCodec(JsonCodec):
    """msgpack through msgspec: smaller and faster than JSON, same types."""

    id = 2
    name = "msgpack"
    _checks_floats = False  # msgpack keeps NaN and infinities
    _scalars = _MSGPACK_SCALARS
    _keys = _MSGPACK_KEYS

    def __init__(self, type_: Any = Any) -> None:
        super().__init__(type_)
        self._encoder = msgspec.msgpack.Encoder()  # type: ignore[assignment]
        self._decoder = msgspec.msgpack.Decoder(type_)  # type: ignore[assignment]
        self._expose_fast_decode()


class PydanticCodec:
    """A declared type holding pydantic v2 models, through pydantic's own ``TypeAdapter``
    (its serializers on the way in, its validation on the way out) and the format of
    ``base`` (JSON: pydantic's own JSON; msgpack: pydantic's JSON-mode Python values in
    msgpack). Made by ``codec.typed(Model)``; pydantic is needed only by whoever has
    models (the ``pydantic`` extra)."""

    def __init__(self, base: JsonCodec, type_: Any) -> None:
        from pydantic import TypeAdapter

        self.id = base.id
        self.name = base.name
        self._base = base
        self._type = type_
        self._root = root_class(type_)
        self._adapter: Any = TypeAdapter(type_)
        self._json = type(base) is JsonCodec

    def encode(self, value: Any) -> bytes:
        if self._root is not None and not isinstance(value, self._root):
            raise UnserializableValueError(
                None, type(value).__name__, self.name, f"the declared type is {_type_name(self._type)}"
            )
        try:
            if self._json:
                payload: bytes = self._adapter.dump_json(value)
                return payload
            return self._base.encode(self._adapter.dump_python(value, mode="json"))
        except RecursionError as exc:
            raise UnserializableValueError(None, type(value).__name__, self.name, "nested too deeply") from exc
        except (TypeError, ValueError) as exc:  # pydantic's serialization errors are ValueErrors
            raise UnserializableValueError(None, type(value).__name__, self.name, str(exc)) from exc

    def decode(self, data: bytes | memoryview) -> Any:
        try:
            if self._json:  # pydantic reads bytes, not a view of them
                return self._adapter.validate_json(data if type(data) is bytes else bytes(data))
            return self._adapter.validate_python(self._base.decode(data))
        except ValueError as exc:  # pydantic's ValidationError is a ValueError
            raise CorruptValueError(None, f"{self.name}: {exc}") from exc
        except RecursionError:
            raise CorruptValueError(None, f"{self.name}: nested too deeply to decode") from None

    def typed(self, type_: Any) -> Codec:
        return self if type_ is self._type else self._base.typed(type_)


def _type_name(type_: Any) -> str:
    return type_.__name__ if isinstance(type_, type) else repr(type_)


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
        # Keyed once: a copy per entry costs about half of a one-shot HMAC, whose key
        # setup (an OpenSSL 3 algorithm fetch) dominates for cache-sized values. Never
        # updated itself, so threads share it. The copy is of OpenSSL's own HMAC object
        # where ``hmac.HMAC`` wraps one (its ``copy`` builds a Python wrapper per entry, a
        # quarter of the signature's cost); the same HMAC-SHA256 either way.
        mac = hmac.new(key, digestmod=hashlib.sha256)
        self._mac: Any = getattr(mac, "_hmac", None) or mac
        self._typed: dict[Any, Codec] = {}

    def _sign(self, payload: bytes | memoryview) -> bytes:
        mac = self._mac.copy()
        mac.update(payload)
        return mac.digest()  # type: ignore[no-any-return]

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
        signature, payload = view[: self._SIG], view[self._SIG :]
        if len(signature) < self._SIG or not hmac.compare_digest(signature, self._sign(payload)):
            raise CorruptValueError(None, "pickle signature does not verify (wrong secret or tampered value)")
        try:
            return pickle.loads(payload)  # noqa: S301 - verified above
        except Exception as exc:  # an old class, a missing module: a miss, not a crash
            raise CorruptValueError(None, f"pickle: {exc}") from exc

    def typed(self, type_: Any) -> Codec:
        """This codec checking that what it stores and reads is an instance of ``type_``'s
        class (pickle brings back whatever was pickled: without the check a ``dict`` put
        under the key would be served to a reader that declared ``User``)."""
        try:
            return self._typed[type_]
        except KeyError:
            pass
        except TypeError:  # an unhashable annotation: made each time
            return self._make(type_)
        made = self._typed[type_] = self._make(type_)
        return made

    def _make(self, type_: Any) -> Codec:
        root = root_class(type_)
        return self if root is None or root is object else _CheckedPickleCodec(self, type_, root)


class _CheckedPickleCodec:
    """A :class:`SignedPickleCodec` whose values must be instances of ``root``: another
    value is refused when stored and is a corrupt entry (a counted miss) when read."""

    id = SignedPickleCodec.id
    name = SignedPickleCodec.name

    def __init__(self, base: SignedPickleCodec, type_: Any, root: type) -> None:
        self._base = base
        self._type = type_
        self._root = root

    def encode(self, value: Any) -> bytes:
        if not isinstance(value, self._root):
            raise UnserializableValueError(
                None,
                type(value).__name__,
                self.name,
                f"the declared type is {_type_name(self._type)}: a {type(value).__name__} is not one",
            )
        return self._base.encode(value)

    def decode(self, data: bytes | memoryview) -> Any:
        value = self._base.decode(data)
        if not isinstance(value, self._root):
            raise CorruptValueError(
                None, f"pickle: a {type(value).__name__}, not the declared {_type_name(self._type)}"
            )
        return value

    def typed(self, type_: Any) -> Codec:
        return self if type_ is self._type else self._base.typed(type_)


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


__all__ = ["BytesCodec", "Codec", "JsonCodec", "MsgpackCodec", "PydanticCodec", "SignedPickleCodec"]
