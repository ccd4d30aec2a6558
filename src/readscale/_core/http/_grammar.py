"""The shared bits of HTTP field-value grammar (RFC 9110 §5.5, §5.6).

Invariants:
- Every parser here is strict: input that does not match the grammar raises the one
  :class:`~readscale.errors.HeaderError`, naming the header; nothing else escapes.
- Field values arrive as ``str`` decoded from latin-1 (what ASGI/WSGI servers hand
  over), so obs-text (%x80-FF) is the characters U+0080..U+00FF; anything above is
  not a valid octet and is refused.
- Lists (``#rule``, §5.6.1): empty elements are accepted and dropped, as recipients
  must; commas inside quoted strings do not split.
"""

from __future__ import annotations

from readscale.errors import HeaderError

# tchar (RFC 9110 §5.6.2)
TCHARS = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
# qdtext = HTAB / SP / %x21 / %x23-5B / %x5D-7E / obs-text
_OBS_TEXT = "".join(chr(c) for c in range(0x80, 0x100))
_QDTEXT = frozenset("\t !" + "".join(chr(c) for c in range(0x23, 0x7F) if c != 0x5C) + _OBS_TEXT)
# quoted-pair = "\" ( HTAB / SP / VCHAR / obs-text )
_QPAIR = frozenset("\t " + "".join(chr(c) for c in range(0x21, 0x7F)) + _OBS_TEXT)
OWS = " \t"


def is_token(text: str) -> bool:
    return bool(text) and all(ch in TCHARS for ch in text)


def check_field_value(header: str, value: str) -> None:
    """Refuse control characters (other than HTAB) and characters beyond latin-1."""
    for ch in value:
        code = ord(ch)
        if (code < 0x20 and ch != "\t") or code == 0x7F or code > 0xFF:
            raise HeaderError(header, value, f"control or non-latin-1 character {ch!r}")


def read_quoted(header: str, value: str, start: int) -> tuple[str, int]:
    """Read a quoted-string whose opening quote is at ``start``; return (text, next index)."""
    assert value[start] == '"'
    out: list[str] = []
    i = start + 1
    n = len(value)
    while i < n:
        ch = value[i]
        if ch == '"':
            return "".join(out), i + 1
        if ch == "\\":
            if i + 1 >= n or value[i + 1] not in _QPAIR:
                raise HeaderError(header, value, "bad escape in quoted string")
            out.append(value[i + 1])
            i += 2
            continue
        if ch not in _QDTEXT:
            raise HeaderError(header, value, f"character {ch!r} not allowed in a quoted string")
        out.append(ch)
        i += 1
    raise HeaderError(header, value, "unterminated quoted string")


def split_list(header: str, value: str) -> list[str]:
    """Split a ``#element`` list on top-level commas, trimming OWS, dropping empties."""
    check_field_value(header, value)
    items: list[str] = []
    start = 0
    i = 0
    n = len(value)
    while i < n:
        ch = value[i]
        if ch == '"':
            _, i = read_quoted(header, value, i)
            continue
        if ch == ",":
            item = value[start:i].strip(OWS)
            if item:
                items.append(item)
            start = i + 1
        i += 1
    item = value[start:].strip(OWS)
    if item:
        items.append(item)
    return items


def quote(text: str) -> str:
    """Render ``text`` as a token when it is one, else as a quoted-string."""
    if is_token(text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
