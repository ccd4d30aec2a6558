"""Memcached's meta protocol, sans-IO, incoming half: bytes to typed replies.

The outgoing half (keys and requests) is ``readscale._core.memcached_meta``, whose
docstring states the protocol's references. Invariants of this half:

- Feeding the parser any split of a byte stream yields the same replies as feeding it
  whole. On bytes no memcached sends, it raises ``MetaProtocolError`` and nothing else;
  the connection is then out of step and must be closed.
- Error lines (``SERVER_ERROR``, ``CLIENT_ERROR``, ``ERROR``) are replies, not
  exceptions: the driver decides. After ``SERVER_ERROR`` memcached has swallowed the
  request's value and stays in step; after ``CLIENT_ERROR`` or ``ERROR`` it may read the
  rest of the request as new commands (verified), so the connection must be closed.
- Opaque tokens (``O``) are read as integers: readscale only sends numeric ones.
- ``encode_reply`` is the parser's inverse, for fakes and tests.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from readscale._core.memcached_meta import BACKEND
from readscale.errors import CacheUnavailableError

__all__ = [
    "NO_FLAGS",
    "AnyReply",
    "ErrorKind",
    "ErrorReply",
    "MetaParser",
    "MetaProtocolError",
    "Reply",
    "ReturnFlags",
    "StatReply",
    "Status",
    "encode_reply",
]

MAX_LINE = 8192  # no reply line of ours comes near; more without CRLF is garbage
MAX_VALUE = 1 << 30  # memcached's own ceiling for item_size_max (-I 1024m)

_NOT_PRINTABLE = re.compile(rb"[^\x20-\x7e]")


class MetaProtocolError(CacheUnavailableError):
    """The server sent bytes that are not a meta protocol reply (or not the reply asked
    for): the connection is out of step and is closed; to a caller the cache is unavailable."""

    def __init__(self, message: str) -> None:
        super().__init__(f"memcached protocol error: {message}", backend=BACKEND)


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
