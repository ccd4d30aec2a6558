"""Memcached's meta protocol, sans-IO, incoming half: bytes to typed replies.

The outgoing half (keys and requests) is ``readscale._core.memcached.requests``, whose
docstring states the protocol's references. Invariants of this half:

- Feeding the parser any split of a byte stream yields the same replies as feeding it
  whole. It raises ``MetaProtocolError`` and nothing else, for any line it cannot read
  (an unknown reply, a bad number, a value without its CRLF, a line over 8 KiB); the
  connection is then out of step and must be closed. Unknown flags are ignored, so a
  newer memcached's additions do not break it.
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
from typing import NamedTuple

from readscale._core.memcached.requests import BACKEND
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
    "parse_reply",
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


class ReturnFlags(NamedTuple):
    """The flags a reply carries, decoded. Unknown flags are ignored (forward compatible).

    Replies are named tuples rather than frozen dataclasses: as immutable, and several
    times cheaper to build, which a batch of a hundred replies notices."""

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


class Reply(NamedTuple):
    """A meta reply: a status, its flags and (for VA) the value."""

    status: Status
    flags: ReturnFlags = NO_FLAGS
    value: bytes | None = None


class ErrorKind(enum.Enum):
    SERVER_ERROR = "SERVER_ERROR"  # the server could not do it (out of memory, too large)
    CLIENT_ERROR = "CLIENT_ERROR"  # the request was malformed; the connection may be out of step
    ERROR = "ERROR"  # unknown command; the connection may be out of step


class ErrorReply(NamedTuple):
    kind: ErrorKind
    message: str = ""


class StatReply(NamedTuple):
    name: str
    value: str


AnyReply = Reply | ErrorReply | StatReply

_SIMPLE = {s.value.encode(): s for s in (Status.HD, Status.EN, Status.NF, Status.NS, Status.EX)}
_ERRORS = {kind.value.encode(): kind for kind in ErrorKind}
_VA = Status.VA
_LETTERS = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


def _number(token: bytes) -> int:
    if not token.isdigit() or len(token) > 20:
        raise MetaProtocolError(f"bad number {token[:40]!r}")
    return int(token)


def _parse_flags(tokens: list[bytes], start: int) -> ReturnFlags:
    """Decode ``tokens[start:]``. The hot path of every read: one pass, no slicing."""
    cas = client_flags = ttl = size = last_access = opaque = None
    hit_before: bool | None = None
    key: bytes | None = None
    base64_key = won = token_sent = stale = False
    for index in range(start, len(tokens)):
        token = tokens[index]
        if not token or token[0] not in _LETTERS:
            raise MetaProtocolError(f"bad flag {token[:40]!r}")
        letter, arg = token[0], token[1:]
        if letter == 102 and arg.isdigit() and len(arg) <= 10:  # f: the common flags inline
            client_flags = int(arg)
        elif letter == 99 and arg.isdigit() and len(arg) <= 20:  # c
            cas = int(arg)
        elif letter == 79 and arg.isdigit() and len(arg) <= 32:  # O
            opaque = int(arg)
        elif letter in b"fcO":
            raise MetaProtocolError(f"bad number in flag {token[:40]!r}")
        elif letter == 116:  # t
            ttl = -1 if arg == b"-1" else _number(arg)
        elif letter == 115:  # s
            size = _number(arg)
        elif letter == 104:  # h
            hit_before = _number(arg) != 0
        elif letter == 108:  # l
            last_access = _number(arg)
        elif letter == 107:  # k
            if not arg or _NOT_PRINTABLE.search(arg) is not None:
                raise MetaProtocolError(f"bad key flag {token[:40]!r}")
            key = arg
        elif letter in b"bWZX":
            if arg:
                raise MetaProtocolError(f"flag {chr(letter)} takes no argument, got {token[:40]!r}")
            if letter == 98:  # b
                base64_key = True
            elif letter == 87:  # W
                won = True
            elif letter == 90:  # Z
                token_sent = True
            else:  # X
                stale = True
    return ReturnFlags(
        cas, client_flags, ttl, size, hit_before, last_access, opaque, key, base64_key, won, token_sent, stale
    )


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
        if self._pos > 65536 and self._pos > len(self._buf) // 2:  # drop what was read
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data

    def next_reply(self) -> AnyReply | None:
        """The next complete reply, or None. Raises MetaProtocolError on garbage."""
        buf = self._buf
        pos = self._pos
        if self._pending is None:
            got = _line(buf, pos)
            if got is None:
                return None
            tokens, line, self._pos = got
            pos = self._pos
            if tokens[0] != b"VA":
                return _other(tokens, line)
            self._pending = _va_header(tokens, line)
        size, flags = self._pending
        value = _value(buf, pos, size)
        if value is None:
            return None
        self._pos = pos + size + 2
        self._pending = None
        return Reply(_VA, flags, value)


def _line(buf: bytes | bytearray, pos: int) -> tuple[list[bytes], bytes, int] | None:
    """The tokens of the line at ``pos``, the line, and where the next starts; or None."""
    eol = buf.find(b"\r\n", pos)
    if eol < 0:
        if len(buf) - pos > MAX_LINE:
            raise MetaProtocolError(f"no line end within {MAX_LINE} bytes")
        return None
    if eol - pos > MAX_LINE:
        raise MetaProtocolError(f"reply line longer than {MAX_LINE} bytes")
    line = bytes(buf[pos:eol])
    return line.split(b" "), line, eol + 2


def _va_header(tokens: list[bytes], line: bytes) -> tuple[int, ReturnFlags]:
    if len(tokens) < 2 or not tokens[1].isdigit() or len(tokens[1]) > 10:
        raise MetaProtocolError(f"bad VA line {line[:40]!r}")
    size = int(tokens[1])
    if size > MAX_VALUE:
        raise MetaProtocolError(f"value of {size} bytes is over {MAX_VALUE}")
    return size, _parse_flags(tokens, 2) if len(tokens) > 2 else NO_FLAGS


def _value(buf: bytes | bytearray, pos: int, size: int) -> bytes | None:
    """The value of ``size`` bytes at ``pos`` and its CRLF, or None (not all here)."""
    end = pos + size
    if len(buf) < end + 2:
        return None
    if buf[end : end + 2] != b"\r\n":
        raise MetaProtocolError("value not terminated by CRLF")
    if isinstance(buf, bytes):
        return buf[pos:end]
    if size < 65536:
        return bytes(buf[pos:end])
    with memoryview(buf) as view:  # one copy instead of two
        return bytes(view[pos:end])


def parse_reply(buf: bytes | bytearray, pos: int) -> tuple[AnyReply, int] | None:
    """The complete reply starting at ``buf[pos]`` and where the next one starts, or None
    (more bytes needed). Raises MetaProtocolError on garbage. Stateless, for readers that
    keep their own buffer (``readscale._core.memcached.hits``)."""
    got = _line(buf, pos)
    if got is None:
        return None
    tokens, line, pos = got
    if tokens[0] != b"VA":
        return _other(tokens, line), pos
    size, flags = _va_header(tokens, line)
    value = _value(buf, pos, size)
    if value is None:
        return None
    return Reply(_VA, flags, value), pos + size + 2


def _other(tokens: list[bytes], line: bytes) -> AnyReply:
    """Any reply but VA."""
    head = tokens[0]
    status = _SIMPLE.get(head)
    if status is not None:
        return Reply(status, _parse_flags(tokens, 1) if len(tokens) > 1 else NO_FLAGS)
    kind = _ERRORS.get(head)
    if kind is not None:
        return ErrorReply(kind, line[len(head) + 1 :].decode("utf-8", "replace"))
    if line == b"MN":
        return Reply(Status.MN)
    if line == b"END":
        return Reply(Status.END)
    if head == b"STAT" and len(tokens) >= 3 and tokens[1] and _NOT_PRINTABLE.search(line) is None:
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
