"""Memcached's meta protocol, sans-IO: typed requests to bytes, bytes to typed replies.

Reference: memcached's ``doc/protocol.txt``, section "Meta Commands" (``mg``, ``ms``,
``md``, ``ma``, ``mn``), as shipped with memcached 1.6.18, whose behaviour the tests pin
down against the real server (shared/notes/verified-redis-varnish.md, section 4).

Theory of operation. A driver builds a request (``MetaGet``, ``MetaSet``, ...), calls
``encode()`` and writes the bytes; it feeds whatever the socket returns to a
``MetaParser`` and pulls replies with ``next_reply()`` until it has what it asked for.
Nothing here touches a socket, a clock or a random source.

Invariants:

- A key is checked before any byte exists: non-empty, no whitespace or control
  character, at most 250 bytes on the wire. ASCII keys travel as they are; any other
  key travels base64-encoded with the ``b`` flag, and since memcached bounds the base64
  *text* by 250 characters, such a key holds at most 186 UTF-8 bytes (verified: 186 is
  accepted, 187 is ``CLIENT_ERROR bad command line format``). A base64 key names the same
  item as the raw bytes it encodes. Bad keys raise ``InvalidKeyError``, so a batch holding
  one bad key sends nothing at all.
- Feeding the parser any split of a byte stream yields the same replies as feeding it
  whole. On bytes no memcached sends, it raises ``MetaProtocolError`` and nothing else;
  the connection is then out of step and must be closed.
- Error lines (``SERVER_ERROR``, ``CLIENT_ERROR``, ``ERROR``) are replies, not
  exceptions: the driver decides. After ``SERVER_ERROR`` memcached has swallowed the
  request's value and stays in step; after ``CLIENT_ERROR`` or ``ERROR`` it may read the
  rest of the request as new commands (verified), so the connection must be closed.
- Opaque tokens (``O``) are non-negative integers of at most 32 digits here; readscale
  pipelines with them and only ever reads replies to its own requests.
"""

from __future__ import annotations

import base64
import enum
import math
import re
from dataclasses import dataclass

from readscale.errors import CacheUnavailableError, ConfigurationError, InvalidKeyError

__all__ = [
    "MAX_BASE64_KEY_BYTES",
    "MAX_KEY_BYTES",
    "MAX_RELATIVE_TTL",
    "NO_FLAGS",
    "AnyReply",
    "ErrorKind",
    "ErrorReply",
    "MetaArithmetic",
    "MetaDelete",
    "MetaGet",
    "MetaNoop",
    "MetaParser",
    "MetaProtocolError",
    "MetaSet",
    "Reply",
    "ReturnFlags",
    "SetMode",
    "StatReply",
    "Stats",
    "Status",
    "encode_key",
    "encode_reply",
    "wire_ttl",
]

BACKEND = "memcached"
MAX_KEY_BYTES = 250
MAX_BASE64_KEY_BYTES = 186  # 4 * ceil(186 / 3) = 248 <= 250 < 252 = 4 * ceil(187 / 3)
MAX_RELATIVE_TTL = 2_592_000  # 30 days: memcached reads larger numbers as a Unix time
MAX_OPAQUE = 10**32 - 1
MAX_LINE = 8192  # no reply line of ours comes near; more without CRLF is garbage
MAX_VALUE = 1 << 30  # memcached's own ceiling for item_size_max (-I 1024m)

_BAD_KEY_CHAR = re.compile(r"[\s\x00-\x1f\x7f-\x9f]")
_NOT_PRINTABLE = re.compile(rb"[^\x20-\x7e]")


class MetaProtocolError(CacheUnavailableError):
    """The server sent bytes that are not a meta protocol reply (or not the reply asked
    for): the connection is out of step and is closed; to a caller the cache is unavailable."""

    def __init__(self, message: str) -> None:
        super().__init__(f"memcached protocol error: {message}", backend=BACKEND)


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


def _uint(name: str, value: int, limit: int = 2**64 - 1) -> bytes:
    if not 0 <= value <= limit:
        raise ConfigurationError(f"memcached meta flag {name} must be in 0..{limit}, got {value}")
    return b"%d" % value


# -- requests --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MetaGet:
    """``mg``: read an item. Each field is one flag of protocol.txt (letter in brackets)."""

    key: str
    value: bool = True  # [v] return the value
    client_flags: bool = False  # [f] return the client flags
    cas: bool = False  # [c] return the CAS value
    ttl: bool = False  # [t] return the remaining TTL (-1: never expires)
    size: bool = False  # [s] return the value's size
    return_key: bool = False  # [k] return the key
    vivify: int | None = None  # [N] on a miss, create an empty item with this TTL; the caller wins (W)
    recache: int | None = None  # [R] win (W) a refill when the remaining TTL is below this
    touch: int | None = None  # [T] update the TTL
    quiet: bool = False  # [q] no reply on a miss (EN)
    opaque: int | None = None  # [O] echoed in the reply

    def encode(self) -> bytes:
        wire, b64 = encode_key(self.key)
        parts = [b"mg", wire]
        if b64:
            parts.append(b"b")
        for on, letter in (
            (self.value, b"v"),
            (self.client_flags, b"f"),
            (self.cas, b"c"),
            (self.ttl, b"t"),
            (self.size, b"s"),
            (self.return_key, b"k"),
            (self.quiet, b"q"),
        ):
            if on:
                parts.append(letter)
        for number, name in ((self.vivify, "N"), (self.recache, "R"), (self.touch, "T")):
            if number is not None:
                parts.append(name.encode() + _uint(name, number, 2**32 - 1))
        if self.opaque is not None:
            parts.append(b"O" + _uint("O", self.opaque, MAX_OPAQUE))
        return b" ".join(parts) + b"\r\n"


class SetMode(enum.Enum):
    """``ms`` mode (the ``M`` flag)."""

    SET = b"S"
    ADD = b"E"  # only if absent (NS otherwise)
    REPLACE = b"R"  # only if present (NS otherwise)
    APPEND = b"A"
    PREPEND = b"P"


@dataclass(frozen=True, slots=True)
class MetaSet:
    """``ms``: store an item."""

    key: str
    value: bytes
    ttl: int = 0  # [T] seconds (see wire_ttl); 0: never expires
    client_flags: int = 0  # [F] 32-bit opaque number kept with the item
    compare_cas: int | None = None  # [C] store only if the item's CAS matches (EX / NF otherwise)
    mode: SetMode = SetMode.SET  # [M]
    invalidate: bool = False  # [I] with C: a lower CAS marks the stored item stale
    return_cas: bool = False  # [c]
    return_key: bool = False  # [k]
    quiet: bool = False  # [q] no reply on success (HD)
    opaque: int | None = None  # [O]

    def encode(self) -> bytes:
        wire, b64 = encode_key(self.key)
        parts = [b"ms", wire, b"%d" % len(self.value)]
        if b64:
            parts.append(b"b")
        if self.ttl:
            parts.append(b"T" + _uint("T", self.ttl, 2**32 - 1))
        if self.client_flags:
            parts.append(b"F" + _uint("F", self.client_flags, 2**32 - 1))
        if self.compare_cas is not None:
            parts.append(b"C" + _uint("C", self.compare_cas))
        if self.mode is not SetMode.SET:
            parts.append(b"M" + self.mode.value)
        for on, letter in (
            (self.invalidate, b"I"),
            (self.return_cas, b"c"),
            (self.return_key, b"k"),
            (self.quiet, b"q"),
        ):
            if on:
                parts.append(letter)
        if self.opaque is not None:
            parts.append(b"O" + _uint("O", self.opaque, MAX_OPAQUE))
        return b" ".join(parts) + b"\r\n" + self.value + b"\r\n"


@dataclass(frozen=True, slots=True)
class MetaDelete:
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
        wire, b64 = encode_key(self.key)
        parts = [b"md", wire]
        if b64:
            parts.append(b"b")
        if self.compare_cas is not None:
            parts.append(b"C" + _uint("C", self.compare_cas))
        if self.invalidate:
            parts.append(b"I")
        if self.ttl is not None:
            parts.append(b"T" + _uint("T", self.ttl, 2**32 - 1))
        if self.return_key:
            parts.append(b"k")
        if self.quiet:
            parts.append(b"q")
        if self.opaque is not None:
            parts.append(b"O" + _uint("O", self.opaque, MAX_OPAQUE))
        return b" ".join(parts) + b"\r\n"


@dataclass(frozen=True, slots=True)
class MetaArithmetic:
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
        wire, b64 = encode_key(self.key)
        parts = [b"ma", wire]
        if b64:
            parts.append(b"b")
        if self.delta != 1:
            parts.append(b"D" + _uint("D", self.delta))
        if self.decrement:
            parts.append(b"MD")
        if self.vivify is not None:
            parts.append(b"N" + _uint("N", self.vivify, 2**32 - 1))
        if self.initial is not None:
            parts.append(b"J" + _uint("J", self.initial))
        for on, letter in ((self.value, b"v"), (self.cas, b"c"), (self.quiet, b"q")):
            if on:
                parts.append(letter)
        if self.opaque is not None:
            parts.append(b"O" + _uint("O", self.opaque, MAX_OPAQUE))
        return b" ".join(parts) + b"\r\n"


@dataclass(frozen=True, slots=True)
class MetaNoop:
    """``mn``: answered ``MN`` after every earlier request; ends a quiet pipeline."""

    def encode(self) -> bytes:
        return b"mn\r\n"


@dataclass(frozen=True, slots=True)
class Stats:
    """``stats [group]``: answered by ``STAT name value`` lines and ``END``."""

    group: str = ""

    def encode(self) -> bytes:
        if self.group and not re.fullmatch(r"[a-z_]+", self.group):
            raise ConfigurationError(f"unknown memcached stats group {self.group!r}")
        return b"stats " + self.group.encode() + b"\r\n" if self.group else b"stats\r\n"


# -- replies -----------------------------------------------------------------------------


class Status(enum.Enum):
    """The reply codes of protocol.txt."""

    VA = "VA"  # a value follows
    HD = "HD"  # success, no value
    EN = "EN"  # miss (mg)
    NF = "NF"  # not found (md, ms with C, ma)
    NS = "NS"  # not stored (ms modes E / R)
    EX = "EX"  # CAS mismatch
    MN = "MN"  # end of a pipeline
    END = "END"  # end of a stats listing


@dataclass(frozen=True, slots=True)
class ReturnFlags:
    """The flags a reply carries, decoded. Unknown flags are ignored (forward compatible)."""

    cas: int | None = None  # c
    client_flags: int | None = None  # f
    ttl: int | None = None  # t (-1: never expires)
    size: int | None = None  # s
    hit_before: bool | None = None  # h
    last_access: int | None = None  # l (seconds ago)
    opaque: int | None = None  # O
    key: bytes | None = None  # k (base64 text when base64_key)
    base64_key: bool = False  # b
    won: bool = False  # W: this client won the right to (re)fill the item
    token_sent: bool = False  # Z: another client already won it
    stale: bool = False  # X: the item was invalidated (md I)


NO_FLAGS = ReturnFlags()


@dataclass(frozen=True, slots=True)
class Reply:
    """A meta reply: a status, its flags and (for VA) the value."""

    status: Status
    flags: ReturnFlags = NO_FLAGS
    value: bytes | None = None


class ErrorKind(enum.Enum):
    SERVER_ERROR = "SERVER_ERROR"  # the server could not do it (out of memory, too large)
    CLIENT_ERROR = "CLIENT_ERROR"  # the request was malformed; the connection may be out of step
    ERROR = "ERROR"  # unknown command; the connection may be out of step


@dataclass(frozen=True, slots=True)
class ErrorReply:
    kind: ErrorKind
    message: str = ""


@dataclass(frozen=True, slots=True)
class StatReply:
    name: str
    value: str


AnyReply = Reply | ErrorReply | StatReply

_SIMPLE = {s.value.encode(): s for s in (Status.HD, Status.EN, Status.NF, Status.NS, Status.EX)}


def _number(token: bytes, signed: bool = False) -> int:
    digits = token[1:] if signed and token.startswith(b"-") else token
    if not digits.isdigit() or len(digits) > 20:
        raise MetaProtocolError(f"bad number {token[:40]!r}")
    return int(token)


def _parse_flags(tokens: list[bytes]) -> ReturnFlags:
    if not tokens:
        return NO_FLAGS
    found: dict[str, object] = {}
    for token in tokens:
        if not token or not (65 <= token[0] <= 90 or 97 <= token[0] <= 122):
            raise MetaProtocolError(f"bad flag {token[:40]!r}")
        letter, arg = chr(token[0]), token[1:]
        if letter == "c":
            found["cas"] = _number(arg)
        elif letter == "f":
            found["client_flags"] = _number(arg)
        elif letter == "t":
            found["ttl"] = _number(arg, signed=True)
        elif letter == "s":
            found["size"] = _number(arg)
        elif letter == "h":
            found["hit_before"] = _number(arg) != 0
        elif letter == "l":
            found["last_access"] = _number(arg)
        elif letter == "O":
            if len(arg) > 32:
                raise MetaProtocolError(f"opaque token too long {arg[:40]!r}")
            found["opaque"] = _number(arg)
        elif letter == "k":
            if not arg:
                raise MetaProtocolError("empty key flag")
            found["key"] = arg
        elif letter in "bWZX" and arg:
            raise MetaProtocolError(f"flag {letter} takes no argument, got {token[:40]!r}")
        elif letter == "b":
            found["base64_key"] = True
        elif letter == "W":
            found["won"] = True
        elif letter == "Z":
            found["token_sent"] = True
        elif letter == "X":
            found["stale"] = True
    return ReturnFlags(**found)  # type: ignore[arg-type]


class MetaParser:
    """Incremental reply parser: ``feed`` bytes as they arrive, then call ``next_reply``
    until it returns None (more bytes needed). ``buffered`` counts bytes fed but not yet
    consumed; after the last expected reply it must be 0, or the stream is out of step."""

    __slots__ = ("_buf", "_pending", "_pos")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._pos = 0
        self._pending: tuple[int, ReturnFlags] | None = None  # a VA header awaiting its value

    @property
    def buffered(self) -> int:
        return len(self._buf) - self._pos

    def feed(self, data: bytes) -> None:
        self._buf += data

    def next_reply(self) -> AnyReply | None:
        """The next complete reply, or None. Raises MetaProtocolError on garbage."""
        buf = self._buf
        if self._pending is not None:
            size, flags = self._pending
            end = self._pos + size
            if len(buf) < end + 2:
                return None
            if buf[end : end + 2] != b"\r\n":
                raise MetaProtocolError("value not terminated by CRLF")
            with memoryview(buf) as view:
                value = bytes(view[self._pos : end])
            self._consume(end + 2)
            self._pending = None
            return Reply(Status.VA, flags, value)
        eol = buf.find(b"\r\n", self._pos)
        if eol < 0:
            if len(buf) - self._pos > MAX_LINE:
                raise MetaProtocolError(f"no line end within {MAX_LINE} bytes")
            return None
        if eol - self._pos > MAX_LINE:
            raise MetaProtocolError(f"reply line longer than {MAX_LINE} bytes")
        line = bytes(buf[self._pos : eol])
        self._consume(eol + 2)
        reply = self._parse_line(line)
        if reply is None:  # a VA header: its value may already be here
            return self.next_reply()
        return reply

    def _consume(self, upto: int) -> None:
        self._pos = upto
        if upto == len(self._buf):
            self._buf.clear()
            self._pos = 0
        elif upto > 65536 and upto > len(self._buf) // 2:
            del self._buf[:upto]
            self._pos = 0

    def _parse_line(self, line: bytes) -> AnyReply | None:
        head, _, rest = line.partition(b" ")
        if head in (b"SERVER_ERROR", b"CLIENT_ERROR", b"ERROR"):
            return ErrorReply(ErrorKind(head.decode()), rest.decode("utf-8", "replace"))
        if _NOT_PRINTABLE.search(line) is not None:
            raise MetaProtocolError(f"unprintable reply line {line[:40]!r}")
        tokens = line.split(b" ")
        head = tokens[0]
        if head == b"VA":
            if len(tokens) < 2:
                raise MetaProtocolError("VA without a size")
            size = _number(tokens[1])
            if size > MAX_VALUE:
                raise MetaProtocolError(f"value of {size} bytes is over {MAX_VALUE}")
            self._pending = (size, _parse_flags(tokens[2:]))
            return None
        status = _SIMPLE.get(head)
        if status is not None:
            return Reply(status, _parse_flags(tokens[1:]))
        if line == b"MN":
            return Reply(Status.MN)
        if line == b"END":
            return Reply(Status.END)
        if head == b"STAT" and len(tokens) >= 3 and tokens[1]:
            return StatReply(tokens[1].decode("ascii"), b" ".join(tokens[2:]).decode("ascii"))
        raise MetaProtocolError(f"unexpected reply {line[:40]!r}")


# -- replies as a server sends them (for fakes and tests) -------------------------------


def _render_flags(flags: ReturnFlags) -> list[bytes]:
    out: list[bytes] = []
    for letter, number in (
        (b"c", flags.cas),
        (b"f", flags.client_flags),
        (b"t", flags.ttl),
        (b"s", flags.size),
        (b"l", flags.last_access),
        (b"O", flags.opaque),
    ):
        if number is not None:
            out.append(letter + b"%d" % number)
    if flags.hit_before is not None:
        out.append(b"h1" if flags.hit_before else b"h0")
    if flags.key is not None:
        out.append(b"k" + flags.key)
    for on, letter in ((flags.base64_key, b"b"), (flags.won, b"W"), (flags.token_sent, b"Z"), (flags.stale, b"X")):
        if on:
            out.append(letter)
    return out


def encode_reply(reply: AnyReply) -> bytes:
    """The bytes memcached would send for ``reply`` (the parser's inverse)."""
    if isinstance(reply, ErrorReply):
        tail = b" " + reply.message.encode() if reply.message else b""
        return reply.kind.value.encode() + tail + b"\r\n"
    if isinstance(reply, StatReply):
        return b"STAT " + reply.name.encode() + b" " + reply.value.encode() + b"\r\n"
    if reply.status is Status.VA:
        value = reply.value or b""
        head = [b"VA", b"%d" % len(value), *_render_flags(reply.flags)]
        return b" ".join(head) + b"\r\n" + value + b"\r\n"
    return b" ".join([reply.status.value.encode(), *_render_flags(reply.flags)]) + b"\r\n"
