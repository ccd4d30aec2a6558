"""PostgreSQL connection strings in logs and errors: never with their password.

A DSN comes in two forms (libpq, "Connection Strings"): a URI,
``postgresql://user:secret@host:5432/db?sslmode=verify-full&password=...``, and
key/value pairs, ``host=h user=u password='s e c r e t'``. Either can carry a password
(and ``sslpassword``, the passphrase of a client key). Rules:

- :func:`mask_dsn` replaces every password it can find with ``***`` and leaves the rest
  as written, so the host, port, database, user and TLS settings stay readable.
- :func:`scrub` does the same inside free text (a libpq error can quote a whole URI or a
  fragment of a malformed DSN) and also removes the secrets it is given, so a message
  built around a DSN can be logged or raised.
- Masking is textual and never raises: it runs where an error is being reported.

Anything that only needs to *apply* options to a DSN implements :class:`DsnOptions`
(``readscale.settings.PostgresSettings`` does); the core names the protocol so pure
settings can hold one without importing a driver.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Protocol, runtime_checkable
from urllib.parse import unquote

__all__ = ["MASK", "DsnOptions", "mask_dsn", "scrub", "secrets_of"]

MASK = "***"
_SECRET_KEYS = r"(?:ssl)?password"  # noqa: S105 - the names of the secret options, not a secret
# key = value, the value quoted ('...' with \' and \\ escapes, possibly unterminated) or
# bare (backslash escapes allowed there too). Bare words after a bare value
# (``password=two words``) are taken with it: libpq refuses such a DSN and quotes the
# words in its error, and they are the password's.
_BARE = r"(?:\\.|[^\s'\\])*"
_BARE_WORD = r"(?:\\.|[^\s='\\])+"
_KEY_VALUE = re.compile(
    rf"(?P<key>\b{_SECRET_KEYS})(?P<eq>\s*=\s*)(?P<value>'(?:[^'\\]|\\.)*'?|{_BARE}(?:\s+{_BARE_WORD}(?=\s|$))*)",
    re.I,
)
# A URI anywhere in a text: scheme, then everything up to whitespace or a quote.
_URI = re.compile(r"postgres(?:ql)?://[^\s\"'<>]*", re.I)
_QUERY_SECRET = re.compile(rf"(?P<key>(?:[?&]){_SECRET_KEYS}=)(?P<value>[^&#]*)", re.I)


@runtime_checkable
class DsnOptions(Protocol):
    """Options applied to every DSN a component connects with (credentials, TLS...)."""

    def apply(self, dsn: str) -> str:
        """``dsn`` with the options merged in (they win over the DSN's own)."""
        ...


def _mask_uri(uri: str) -> str:
    scheme, sep, rest = uri.partition("://")
    if not sep:
        return uri
    end = len(rest)
    for stop in "/?#":
        pos = rest.find(stop)
        if 0 <= pos < end:
            end = pos
    netloc, tail = rest[:end], rest[end:]
    userinfo, at, hosts = netloc.rpartition("@")
    if at and ":" in userinfo:
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:{MASK}@{hosts}"
    tail = _QUERY_SECRET.sub(lambda m: m["key"] + MASK, tail)
    return f"{scheme}://{netloc}{tail}"


def _mask_pairs(text: str) -> str:
    return _KEY_VALUE.sub(lambda m: f"{m['key']}{m['eq']}{MASK}", text)


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


def _is_uri(text: str) -> bool:
    return _URI.match(text.lstrip()) is not None


def mask_dsn(dsn: object) -> str:
    """``dsn`` with every password replaced by ``***`` (URI or key/value form)."""
    if not isinstance(dsn, str):
        return MASK
    if _is_uri(dsn):
        return _mask_uri(dsn.strip())
    return _mask_pairs(dsn)


def secrets_of(dsn: object) -> list[str]:
    """The password-like values written in ``dsn`` (best effort, for :func:`scrub`)."""
    if not isinstance(dsn, str):
        return []
    found: list[str] = []
    if _is_uri(dsn):
        rest = dsn.strip().split("://", 1)[1]
        netloc = re.split(r"[/?#]", rest, maxsplit=1)[0]
        userinfo, at, _ = netloc.rpartition("@")
        if at and ":" in userinfo:
            found.append(userinfo.split(":", 1)[1])
        found += [m["value"] for m in _QUERY_SECRET.finditer(rest)]
        found += [unquote(s) for s in found]
    else:
        for match in _KEY_VALUE.finditer(dsn):
            value = match["value"]
            if value.startswith("'"):
                found.append(_unescape(value[1:].removesuffix("'")))
            else:
                found += [_unescape(word) for word in value.split()]
    return [s for s in found if s]


def scrub(text: str, secrets: Iterable[str | None] = ()) -> str:
    """``text`` with DSN passwords masked and every given secret removed."""
    parts: list[str] = []
    start = 0
    for match in _URI.finditer(text):
        parts += [_mask_pairs(text[start : match.start()]), _mask_uri(match[0])]
        start = match.end()
    parts.append(_mask_pairs(text[start:]))
    out = "".join(parts)
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        out = out.replace(secret, MASK)
    return out
