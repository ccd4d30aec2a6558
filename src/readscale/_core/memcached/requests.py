"""Memcached's meta protocol, sans-IO, outgoing half: keys, TTLs and typed requests.

Reference: memcached's ``doc/protocol.txt``, section "Meta Commands" (``mg``, ``ms``,
``md``, ``ma``, ``mn``), as shipped with memcached 1.6.18, whose behaviour the tests pin
down against the real server (shared/notes/verified-redis-varnish.md, section 4, and
tests/_async/backends/test_memcached.py).

Theory of operation. A driver builds a request (``MetaGet``, ``MetaSet``, ...), calls
``encode()`` and writes the bytes; it feeds whatever the socket returns to a
``MetaParser`` (``readscale._core.memcached.replies``, the incoming half) and pulls
replies until it has what it asked for. Pipelines are quiet requests (``q``: no reply
for a miss, a store, a delete) tagged with opaque tokens (``O``) and closed by ``mn``,
whose ``MN`` reply comes after every earlier reply. Nothing here touches a socket, a
clock or a random source: a TTL past 30 days needs ``now``, so it is an argument.

Invariants:

- A key is checked before any byte exists: non-empty, no whitespace or control
  character, at most 250 bytes on the wire. ASCII keys travel as they are; any other
  key travels base64-encoded with the ``b`` flag, and since memcached bounds the base64
  *text* by 250 characters, such a key holds at most 186 UTF-8 bytes (verified: 186 is
  accepted, 187 is ``CLIENT_ERROR bad command line format``). A base64 key names the same
  item as the raw bytes it encodes. Bad keys raise ``InvalidKeyError``, so a batch holding
  one bad key sends nothing at all.
- Every number is range-checked (``ConfigurationError``): a request either encodes to
  bytes memcached accepts or raises before anything is sent.
- Opaque tokens are non-negative integers of at most 32 digits (memcached's limit).
"""

from __future__ import annotations

import base64
import enum
import math
import re
from collections.abc import Iterable, Sequence
from typing import NamedTuple

from readscale.errors import ConfigurationError, InvalidKeyError

__all__ = [
    "MAX_BASE64_KEY_BYTES",
    "MAX_KEY_BYTES",
    "MAX_OPAQUE",
    "MAX_RELATIVE_TTL",
    "MetaArithmetic",
    "MetaDelete",
    "MetaGet",
    "MetaNoop",
    "MetaSet",
    "SetMode",
    "Stats",
    "encode_get",
    "encode_key",
    "wire_ttl",
]

BACKEND = "memcached"
MAX_KEY_BYTES = 250
MAX_BASE64_KEY_BYTES = 186  # 4 * ceil(186 / 3) = 248 <= 250 < 252 = 4 * ceil(187 / 3)
MAX_RELATIVE_TTL = 2_592_000  # 30 days: memcached reads larger numbers as a Unix time
MAX_OPAQUE = 10**32 - 1

_BAD_KEY_CHAR = re.compile(r"[\s\x00-\x1f\x7f-\x9f]")


# -- keys and TTLs -------------------------------------------------------------------------


def encode_key(key: str) -> tuple[bytes, bool]:
    """The key as it goes on the wire and whether it is base64 (the ``b`` flag).

    Raises InvalidKeyError (naming the key and the reason) for an empty key, a key with
    whitespace or a control character, a key that is not valid Unicode text, or one over
    the length limits in the module docstring.
    """
    if not key:
        raise InvalidKeyError(key, "empty", backend=BACKEND)
    bad = _BAD_KEY_CHAR.search(key)
    if bad is not None:
        reason = f"contains whitespace or a control character ({bad.group()!r} at index {bad.start()})"
        raise InvalidKeyError(key, reason, backend=BACKEND)
    if key.isascii():
        if len(key) > MAX_KEY_BYTES:
            raise InvalidKeyError(key, f"{len(key)} bytes, over memcached's limit of {MAX_KEY_BYTES}", backend=BACKEND)
        return key.encode("ascii"), False
    try:
        raw = key.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidKeyError(key, f"not encodable as UTF-8 ({exc.reason})", backend=BACKEND) from exc
    if len(raw) > MAX_BASE64_KEY_BYTES:
        reason = (
            f"{len(raw)} UTF-8 bytes; a non-ASCII key travels base64-encoded and memcached bounds that "
            f"text by {MAX_KEY_BYTES} characters, so at most {MAX_BASE64_KEY_BYTES} bytes"
        )
        raise InvalidKeyError(key, reason, backend=BACKEND)
    return base64.b64encode(raw), True


def wire_ttl(ttl: float, now: float) -> int:
    """``ttl`` seconds as memcached takes them: whole seconds, rounded up (an entry may
    live up to a second longer, never shorter). Past 30 days memcached reads the number
    as a Unix time, so such a TTL becomes ``now + ttl`` (``now``: Unix seconds)."""
    if not ttl > 0 or math.isinf(ttl):
        raise ConfigurationError(f"a memcached TTL must be a finite number of seconds > 0, got {ttl!r}")
    seconds = math.ceil(ttl)
    if seconds > MAX_RELATIVE_TTL:
        return math.ceil(now + ttl)
    return seconds


_U32 = 2**32 - 1
_U64 = 2**64 - 1


def _head(command: bytes, key: str, size: int | None = None) -> list[bytes]:
    """The command, the key, the size (``ms``) and ``b`` when the key is base64."""
    wire, b64 = encode_key(key)
    parts = [command, wire] if size is None else [command, wire, b"%d" % size]
    if b64:
        parts.append(b"b")
    return parts


def _number(letter: bytes, value: int, limit: int = _U64) -> bytes:
    if not 0 <= value <= limit:
        raise ConfigurationError(f"memcached meta flag {letter.decode()} must be in 0..{limit}, got {value}")
    return b"%s%d" % (letter, value)


def _check_opaque(opaque: int) -> int:
    if not 0 <= opaque <= MAX_OPAQUE:
        raise ConfigurationError(f"memcached meta flag O must be in 0..{MAX_OPAQUE}, got {opaque}")
    return opaque


# -- requests --------------------------------------------------------------------------------
#
# Requests are named tuples (immutable, typed, and cheaper to build than frozen
# dataclasses: a batch builds a hundred of them). Each field is one flag of protocol.txt,
# its letter in brackets; ``encode()`` sends the flags in field order.


class MetaGet(NamedTuple):
    """``mg``: read an item."""

    key: str
    value: bool = True  # [v] return the value
    client_flags: bool = False  # [f] return the client flags
    cas: bool = False  # [c] return the CAS value
    ttl: bool = False  # [t] return the remaining TTL (-1: never expires)
    size: bool = False  # [s] return the value's size
    return_key: bool = False  # [k] return the key
    quiet: bool = False  # [q] no reply on a miss (EN)
    vivify: int | None = None  # [N] on a miss, create an empty item with this TTL; the caller wins (W)
    recache: int | None = None  # [R] win (W) a refill when the remaining TTL is below this
    touch: int | None = None  # [T] update the TTL
    opaque: int | None = None  # [O] echoed in the reply

    def encode(self) -> bytes:
        return b" ".join(_head(b"mg", self.key) + self._flags()) + b"\r\n"

    def tail(self) -> bytes:
        """Everything after the key (the flags and CRLF), for :func:`encode_get`."""
        return b" ".join([b"", *self._flags()]) + b"\r\n"

    def encode_each(self, keys: Sequence[str], positions: Iterable[int]) -> bytes:
        """This request for ``keys[i]``, each tagged ``O<i>``, for ``i`` in ``positions``:
        the body of a pipeline, built in one pass (the flags are encoded once)."""
        tail = _tail_of(self)
        if not isinstance(positions, range):
            positions = list(positions)
        if not positions:
            return b""
        if (
            isinstance(positions, range)
            and positions.start == 0
            and positions.step == 1
            and len(positions) == len(keys)
        ):
            batch = list(keys)
        else:
            batch = [keys[i] for i in positions]
        joined = "".join(batch)
        lengths = list(map(len, batch))
        if isinstance(positions, range) and positions.step > 0:
            first, last = positions[0], positions[-1]
        else:
            first, last = min(positions), max(positions)
        if (  # the common case, checked for the whole batch at once: short ASCII keys
            joined.isascii()
            # ASCII text holds no whitespace or control character (_BAD_KEY_CHAR) iff it
            # is printable (only the space is printable whitespace) and has no space.
            and joined.isprintable()
            and " " not in joined
            and min(lengths) > 0
            and max(lengths) <= MAX_KEY_BYTES
            and first >= 0
        ):
            text = tail.decode("ascii")
            if last < _SUFFIXES:
                # Keys and suffixes interleaved by slice assignment and joined once: no
                # Python step per key. Suffix i closes request i and opens the next one.
                suffixes = _suffixes(tail)
                parts = [""] * (2 * len(batch))
                parts[0::2] = batch
                if positions == range(len(batch)):
                    parts[1::2] = suffixes[: len(batch)]
                else:
                    parts[1::2] = [suffixes[i] for i in positions]
                parts[0] = "mg " + parts[0]
                parts[-1] = f"{text} O{positions[-1]}\r\n"
                return "".join(parts).encode("ascii")
            if last <= MAX_OPAQUE:
                return "".join([f"mg {key}{text} O{i}\r\n" for key, i in zip(batch, positions, strict=True)]).encode(
                    "ascii"
                )
        return b"".join(b"%s%s O%d\r\n" % (b" ".join(_head(b"mg", keys[i])), tail, _check_opaque(i)) for i in positions)

    def _flags(self) -> list[bytes]:
        parts = []
        if self.value:
            parts.append(b"v")
        if self.client_flags:
            parts.append(b"f")
        if self.cas:
            parts.append(b"c")
        if self.ttl:
            parts.append(b"t")
        if self.size:
            parts.append(b"s")
        if self.return_key:
            parts.append(b"k")
        if self.quiet:
            parts.append(b"q")
        if self.vivify is not None:
            parts.append(_number(b"N", self.vivify, _U32))
        if self.recache is not None:
            parts.append(_number(b"R", self.recache, _U32))
        if self.touch is not None:
            parts.append(_number(b"T", self.touch, _U32))
        if self.opaque is not None:
            parts.append(_number(b"O", self.opaque, MAX_OPAQUE))
        return parts


#: Requests of a pipeline tagged O0 .. O<_SUFFIXES - 1> are built from a table of their
#: suffixes, made once per set of flags (a larger position takes the general path).
_SUFFIXES = 1024
_SUFFIX_TABLES: dict[bytes, list[str]] = {}
_TAILS: dict[tuple[object, ...], bytes] = {}


def _tail_of(request: MetaGet) -> bytes:
    """A request's flags without its opaque, as they follow the key (`` v f c q``)."""
    flags = request[1:-1]  # every field but the key and the opaque
    tail = _TAILS.get(flags)
    if tail is None:
        tail = b" ".join([b"", *request._replace(opaque=None)._flags()])
        if len(_TAILS) < 64:
            _TAILS[flags] = tail
    return tail


def _suffixes(tail: bytes) -> list[str]:
    """``tail`` + `` O<i>\\r\\nmg `` for every ``i`` below _SUFFIXES (built whole, then
    published: a thread never sees a partial table)."""
    table = _SUFFIX_TABLES.get(tail)
    if table is None:
        text = tail.decode("ascii")
        table = [f"{text} O{i}\r\nmg " for i in range(_SUFFIXES)]
        if len(_SUFFIX_TABLES) < 64:
            _SUFFIX_TABLES[tail] = table
    return table


def encode_get(key: str, tail: bytes) -> bytes:
    """``MetaGet(key, ...).encode()`` with the flags encoded once (``tail``: its
    :meth:`MetaGet.tail`): the hot path of ``get`` builds one bytes object."""
    wire, b64 = encode_key(key)
    return b"mg " + wire + (b" b" + tail if b64 else tail)


class SetMode(enum.Enum):
    """``ms`` mode (the ``M`` flag)."""

    SET = b"MS"
    ADD = b"ME"  # only if absent (NS otherwise)
    REPLACE = b"MR"  # only if present (NS otherwise)
    APPEND = b"MA"
    PREPEND = b"MP"


class MetaSet(NamedTuple):
    """``ms``: store an item."""

    key: str
    value: bytes
    ttl: int = 0  # [T] seconds (see wire_ttl); 0: never expires
    client_flags: int = 0  # [F] 32-bit number kept with the item
    compare_cas: int | None = None  # [C] store only if the item's CAS matches (EX / NF otherwise)
    mode: SetMode = SetMode.SET  # [M]
    invalidate: bool = False  # [I] with C: a lower CAS marks the stored item stale
    return_cas: bool = False  # [c]
    return_key: bool = False  # [k]
    quiet: bool = False  # [q] no reply on success (HD)
    opaque: int | None = None  # [O]

    def encode(self) -> bytes:
        parts = _head(b"ms", self.key, len(self.value))
        if self.ttl:
            parts.append(_number(b"T", self.ttl, _U32))
        if self.client_flags:
            parts.append(_number(b"F", self.client_flags, _U32))
        if self.compare_cas is not None:
            parts.append(_number(b"C", self.compare_cas))
        if self.mode is not SetMode.SET:
            parts.append(self.mode.value)
        if self.invalidate:
            parts.append(b"I")
        if self.return_cas:
            parts.append(b"c")
        if self.return_key:
            parts.append(b"k")
        if self.quiet:
            parts.append(b"q")
        if self.opaque is not None:
            parts.append(_number(b"O", self.opaque, MAX_OPAQUE))
        return b" ".join(parts) + b"\r\n" + self.value + b"\r\n"


class MetaDelete(NamedTuple):
    """``md``: delete an item, or with ``invalidate`` mark it stale (the next reader wins
    the refill). Quiet mode hides HD but not NF (verified), so NF counts misses."""

    key: str
    compare_cas: int | None = None  # [C] delete only if the CAS matches (EX otherwise)
    invalidate: bool = False  # [I] mark stale instead of removing
    ttl: int | None = None  # [T] with I: the stale item's new TTL
    return_key: bool = False  # [k]
    quiet: bool = False  # [q]
    opaque: int | None = None  # [O]

    def encode(self) -> bytes:
        parts = _head(b"md", self.key)
        if self.compare_cas is not None:
            parts.append(_number(b"C", self.compare_cas))
        if self.invalidate:
            parts.append(b"I")
        if self.ttl is not None:
            parts.append(_number(b"T", self.ttl, _U32))
        if self.return_key:
            parts.append(b"k")
        if self.quiet:
            parts.append(b"q")
        if self.opaque is not None:
            parts.append(_number(b"O", self.opaque, MAX_OPAQUE))
        return b" ".join(parts) + b"\r\n"


class MetaArithmetic(NamedTuple):
    """``ma``: increment or decrement a counter stored as decimal text."""

    key: str
    delta: int = 1  # [D]
    decrement: bool = False  # [MD] instead of the default increment
    vivify: int | None = None  # [N] on a miss, create the counter with this TTL
    initial: int | None = None  # [J] the created counter's value
    value: bool = False  # [v] return the new value
    cas: bool = False  # [c]
    quiet: bool = False  # [q]
    opaque: int | None = None  # [O]

    def encode(self) -> bytes:
        parts = _head(b"ma", self.key)
        if self.delta != 1:
            parts.append(_number(b"D", self.delta))
        if self.decrement:
            parts.append(b"MD")
        if self.vivify is not None:
            parts.append(_number(b"N", self.vivify, _U32))
        if self.initial is not None:
            parts.append(_number(b"J", self.initial))
        if self.value:
            parts.append(b"v")
        if self.cas:
            parts.append(b"c")
        if self.quiet:
            parts.append(b"q")
        if self.opaque is not None:
            parts.append(_number(b"O", self.opaque, MAX_OPAQUE))
        return b" ".join(parts) + b"\r\n"


class MetaNoop(NamedTuple):
    """``mn``: answered ``MN`` after every earlier request; ends a quiet pipeline."""

    def encode(self) -> bytes:
        return b"mn\r\n"


class Stats(NamedTuple):
    """``stats [group]``: answered by ``STAT name value`` lines and ``END``."""

    group: str = ""

    def encode(self) -> bytes:
        if self.group and not re.fullmatch(r"[a-z_]+", self.group):
            raise ConfigurationError(f"unknown memcached stats group {self.group!r}")
        return b"stats " + self.group.encode() + b"\r\n" if self.group else b"stats\r\n"
