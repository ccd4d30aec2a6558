"""PostgreSQL WAL positions (LSNs): parsing, formatting, distance and page headers.

An LSN is a 64-bit byte position in the write-ahead log, printed by PostgreSQL as two
hexadecimal halves ``XXXXXXXX/YYYYYYYY`` (``pg_lsn``). Everything here works on plain
``int``: comparisons are integer comparisons and the distance between two positions is
their difference in bytes (``pg_wal_lsn_diff``).

Invariants and references:

- ``parse_lsn`` accepts exactly what ``pg_lsn`` prints (1-8 hex digits on each side of
  one slash) and raises :class:`~readscale.errors.ConfigurationError` for anything else,
  so a malformed position from a token or a server can never become a number silently.
- The token after a commit is ``pg_current_wal_lsn()`` (the write pointer) when every
  commit flushes locally before returning (``synchronous_commit`` on, local,
  remote_write, remote_apply). With ``synchronous_commit = off`` only the insert pointer
  is past the commit record, and it needs :func:`normalize_insert_lsn`: when the last
  record ended exactly on a page boundary, ``pg_current_wal_insert_lsn()`` points past
  the next page's header, a position no replica reaches until more WAL is written
  (shared/notes/verified-postgres.md section 3 measured stalls of 17-20 s on an idle
  primary). Pages are ``wal_block_size`` bytes (8 kB by default) with a 24-byte short
  header, except the first page of each ``wal_segment_size`` segment (16 MB by default)
  whose long header is 40 bytes (``SizeOfXLogShortPHD`` and ``SizeOfXLogLongPHD`` in
  PostgreSQL's ``xlog_internal.h``).
- A WAL file name is 24 hex digits: timeline, then log and segment numbers
  (``pg_walfile_name``); :func:`timeline_from_walfile` reads the first 8.
"""

from __future__ import annotations

import re

from readscale.errors import ConfigurationError

__all__ = [
    "LONG_PAGE_HEADER",
    "MAX_LSN",
    "SHORT_PAGE_HEADER",
    "format_lsn",
    "lsn_diff",
    "lsn_text",
    "normalize_insert_lsn",
    "parse_lsn",
    "parse_lsn_text",
    "timeline_from_walfile",
]

MAX_LSN = (1 << 64) - 1
SHORT_PAGE_HEADER = 24
LONG_PAGE_HEADER = 40
DEFAULT_BLOCK_SIZE = 8192
DEFAULT_SEGMENT_SIZE = 16 * 1024 * 1024

_LSN = re.compile(r"([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})")
_WALFILE = re.compile(r"[0-9A-Fa-f]{24}")


def parse_lsn(text: str) -> int:
    """``'16/B374D848'`` -> its byte position. Raises ConfigurationError if malformed."""
    match = _LSN.fullmatch(text)
    if match is None:
        raise ConfigurationError(f"not a PostgreSQL LSN: {text[:40]!r} (expected hex 'X/Y', as pg_lsn prints)")
    return (int(match.group(1), 16) << 32) | int(match.group(2), 16)


def format_lsn(lsn: int) -> str:
    """The position as PostgreSQL prints it (upper-case hex, no leading zeros)."""
    if not 0 <= lsn <= MAX_LSN:
        raise ConfigurationError(f"LSN out of range: {lsn}")
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def lsn_diff(a: int, b: int) -> int:
    """Bytes from ``b`` to ``a`` (``pg_wal_lsn_diff(a, b)``); negative when ``a`` is behind."""
    return a - b


def normalize_insert_lsn(
    lsn: int, *, block_size: int = DEFAULT_BLOCK_SIZE, segment_size: int = DEFAULT_SEGMENT_SIZE
) -> int:
    """Pull an insert position that sits just past a page header back to the page start.

    The result is still at or past the end of every record inserted before it (a page
    header holds no record), and it is a position a replica's replay actually reaches.
    """
    if block_size <= 0 or segment_size <= 0 or segment_size % block_size:
        raise ConfigurationError(
            f"WAL segment size {segment_size} must be a positive multiple of the block size {block_size}"
        )
    if lsn % segment_size == LONG_PAGE_HEADER:
        return lsn - LONG_PAGE_HEADER
    if lsn % block_size == SHORT_PAGE_HEADER and lsn % segment_size != SHORT_PAGE_HEADER:
        return lsn - SHORT_PAGE_HEADER
    return lsn


def timeline_from_walfile(name: str) -> int:
    """The timeline of a WAL file name such as ``'000000010000000000000004'`` (-> 1)."""
    if _WALFILE.fullmatch(name) is None:
        raise ConfigurationError(f"not a WAL file name: {name[:40]!r}")
    timeline = int(name[:8], 16)
    if timeline == 0:
        raise ConfigurationError(f"WAL file name {name!r} has timeline 0, which PostgreSQL never uses")
    return timeline


def lsn_text(lsn: int) -> str:
    """An LSN as 16 hex digits: compares as text exactly as the numbers compare, which
    Lua (doubles) and Redis strings cannot do for 64-bit integers."""
    if not 0 <= lsn < 2**64:
        raise ValueError(f"an LSN is a 64-bit unsigned integer, got {lsn}")
    return f"{lsn:016x}"


def parse_lsn_text(text: bytes | str | None) -> int | None:
    if not text:
        return None
    return int(text, 16)
