"""The stored envelope of a cache entry: freshness metadata in front of the encoded value.

Layout (little-endian, 48 bytes of header, then optional sections, then the payload)::

    magic   u8   0xA5                 not ours (or an old format) -> a counted miss
    format  u8   ENVELOPE_FORMAT
    codec   u8   which codec encoded the payload
    flags   u8   bit 0: a source LSN follows; bit 1: tag versions follow
    schema  u32  the policy's schema version (bump it when the value's shape changes)
    created_at   f64  wall-clock seconds when the value was loaded
    fresh_ttl    f64  seconds the value is fresh (jitter already applied)
    swr          f64  stale-while-revalidate window after fresh_ttl, seconds
    sie          f64  stale-if-error window after fresh_ttl, seconds
    load_time    f64  seconds the loader took (XFetch's delta)
    [lsn  u64]                        the PostgreSQL WAL position the value was read at
    [ntags u16, then per tag: len u16, utf-8 name, version u64]
    payload (the rest)

Invariants: decoding never raises anything but :class:`EnvelopeError`; an envelope from
another format, schema or codec is reported as such so the driver can count it as a miss
(an old deploy's entries are refilled, never a crash).
"""

from __future__ import annotations

import functools
import math
import struct
from collections.abc import Sequence
from typing import NamedTuple

MAGIC = 0xA5
ENVELOPE_FORMAT = 1
_HEADER = struct.Struct("<BBBBIddddd")
HEADER_SIZE = _HEADER.size
_HEAD = struct.Struct("<BBBBI")  # the fixed fields, then created_at and fresh_ttl
_TIMES = struct.Struct("<dd")
_LSN = struct.Struct("<Q")
_U16 = struct.Struct("<H")
_FLAG_LSN = 1
_FLAG_TAGS = 2


class EnvelopeError(ValueError):
    """The bytes are not a readable envelope; ``reason`` says why (for the miss metric)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class EntryMeta(NamedTuple):
    """Freshness facts of one entry. Times are wall-clock seconds (entries cross processes).

    A NamedTuple rather than a frozen dataclass: one is built on every cache read, and a
    tuple is built in a fifth of the time.
    """

    created_at: float
    fresh_ttl: float
    swr: float = 0.0
    sie: float = 0.0
    load_time: float = 0.0
    schema: int = 0
    lsn: int | None = None
    tags: tuple[tuple[str, int], ...] = ()

    @property
    def fresh_until(self) -> float:
        return self.created_at + self.fresh_ttl

    @property
    def usable_until(self) -> float:
        """The last moment the entry is worth keeping: fresh plus the longer stale window."""
        return self.created_at + self.fresh_ttl + max(self.swr, self.sie)


_new_tuple = tuple.__new__


def encode_envelope(meta: EntryMeta, codec_id: int, payload: bytes) -> bytes:
    flags = 0
    parts = [b""]
    if meta.lsn is not None:
        flags |= _FLAG_LSN
        parts.append(_LSN.pack(meta.lsn))
    if meta.tags:
        flags |= _FLAG_TAGS
        parts.append(_U16.pack(len(meta.tags)))
        for name, version in meta.tags:
            raw = name.encode()
            parts.append(_U16.pack(len(raw)) + raw + _LSN.pack(version))
    parts[0] = _HEADER.pack(
        MAGIC,
        ENVELOPE_FORMAT,
        codec_id,
        flags,
        meta.schema,
        meta.created_at,
        meta.fresh_ttl,
        meta.swr,
        meta.sie,
        meta.load_time,
    )
    parts.append(payload)
    return b"".join(parts)


def decode_envelope(data: bytes) -> tuple[EntryMeta, int, memoryview]:
    """Return ``(meta, codec_id, payload)``; raise :class:`EnvelopeError` on anything else."""
    if len(data) < HEADER_SIZE:
        raise EnvelopeError("truncated header")
    magic, fmt, codec_id, flags, schema, created, ttl, swr, sie, load = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise EnvelopeError("not a readscale entry")
    if fmt != ENVELOPE_FORMAT:
        raise EnvelopeError(f"envelope format {fmt}")
    offset = HEADER_SIZE
    lsn = None
    tags: tuple[tuple[str, int], ...] = ()
    try:
        if flags & _FLAG_LSN:
            (lsn,) = _LSN.unpack_from(data, offset)
            offset += _LSN.size
        if flags & _FLAG_TAGS:
            (count,) = _U16.unpack_from(data, offset)
            offset += _U16.size
            found = []
            for _ in range(count):
                (length,) = _U16.unpack_from(data, offset)
                offset += _U16.size
                name = bytes(data[offset : offset + length]).decode()
                if len(name.encode()) != length:
                    raise EnvelopeError("truncated tag")
                offset += length
                (version,) = _LSN.unpack_from(data, offset)
                offset += _LSN.size
                found.append((name, version))
            tags = tuple(found)
    except (struct.error, UnicodeDecodeError) as exc:
        raise EnvelopeError(f"damaged sections: {exc}") from None
    if not (ttl >= 0 and swr >= 0 and sie >= 0 and load >= 0 and not math.isnan(created)):
        raise EnvelopeError("negative or NaN durations")
    # tuple.__new__ skips NamedTuple's Python-level __new__: a sixth of the cost.
    meta = _new_tuple(EntryMeta, (created, ttl, swr, sie, load, schema, lsn, tags))
    return meta, codec_id, memoryview(data)[offset:]


_TAIL = struct.Struct("<ddddd")  # created_at, fresh_ttl, swr, sie, load_time


@functools.lru_cache(maxsize=64)
def envelope_head(codec_id: int, schema: int) -> bytes:
    """The first 8 bytes of an envelope of this codec and schema with no LSN and no tags."""
    return _HEAD.pack(MAGIC, ENVELOPE_FORMAT, codec_id, 0, schema)


def fresh_payload(data: bytes, now: float, schema: int, codec_id: int) -> bytes | memoryview | None:
    """The payload of one envelope if it is fresh at ``now`` (``created_at <= now``), of
    this schema and codec, with no LSN and no tags, and readable; else None (the caller
    takes :func:`decode_envelope` and the full freshness rules instead).

    The single read's fast path: one prefix comparison and one unpack, no EntryMeta built;
    what it accepts is exactly what :func:`decode_envelope` reads as such an entry. The
    payload is a copy (``bytes``) below ``COPY_LIMIT``, a view above it (see there).
    """
    if len(data) < HEADER_SIZE or not data.startswith(envelope_head(codec_id, schema)):
        return None
    created, ttl, swr, sie, load = _TAIL.unpack_from(data, _HEAD.size)
    if created <= now < created + ttl and swr >= 0 and sie >= 0 and load >= 0:
        return data[HEADER_SIZE:] if len(data) < COPY_LIMIT else memoryview(data)[HEADER_SIZE:]
    return None


#: Payloads shorter than this come back from the fast paths as a ``bytes`` slice, longer
#: ones as a ``memoryview``: a slice of a cache-sized value costs a third of a view
#: (one object instead of a view of a view over a managed buffer), and its copy is
#: cheap until values get large.
COPY_LIMIT = 65536


def fresh_payloads(
    raws: Sequence[bytes | None], now: float, schema: int, codec_id: int
) -> list[bytes | memoryview | None]:
    """For each envelope, its payload if it is fresh at ``now`` with this schema and codec,
    else None (missing, stale, expired, another schema or codec, unreadable).

    The batch read's fast path: no EntryMeta is built, and the loop runs in one call;
    whatever comes back None goes through :func:`decode_envelope` and the full freshness
    rules instead. Payloads as in :func:`fresh_payload` (a copy below ``COPY_LIMIT``).
    """
    # The first 8 header bytes (magic, format, codec, no flags, schema) must match exactly:
    # one startswith instead of unpacking and comparing five fields.
    want = envelope_head(codec_id, schema)
    unpack, size, at, limit = _TIMES.unpack_from, HEADER_SIZE, _HEAD.size, COPY_LIMIT
    out: list[bytes | memoryview | None] = []
    append = out.append
    for data in raws:
        if data is not None and size <= len(data) < limit and data.startswith(want):
            created, ttl = unpack(data, at)
            append(data[size:] if created <= now < created + ttl else None)
        elif data is not None and len(data) >= limit and data.startswith(want):
            created, ttl = unpack(data, at)
            append(memoryview(data)[size:] if created <= now < created + ttl else None)
        else:
            append(None)
    return out
