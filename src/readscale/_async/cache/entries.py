"""The cache's entries: a value and its metadata as the L2 stores them.

A part of :class:`AsyncCache` (internal; docs/architecture.md §5). It owns the default
codec, the size limit, and the clock and random source of an entry's TTL jitter. An
entry is the envelope of ``readscale._core.cache.entry`` (metadata, codec id, payload);
one that cannot be read as this cache's policy and codec expect (another schema, another
codec, corrupt bytes) is a counted miss, never an error, and one older than the
session's own write is not served to it (read-your-writes).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from readscale._core.cache.entry import EntryMeta, EnvelopeError, decode_envelope, encode_envelope
from readscale._core.cache.freshness import jittered_ttl
from readscale._core.cache.policy import CachePolicy
from readscale._core.replicas.causal import read_before_own_write
from readscale._shared.cache.stats import CacheStats, L2Recorder
from readscale._shared.replicas.causal_context import own_write_floor
from readscale.codecs import Codec
from readscale.errors import CorruptValueError, SerializationError, UnserializableValueError, ValueTooLargeError

log = logging.getLogger("readscale.cache")

#: A decoded entry: the value and its metadata.
Found = tuple[Any, EntryMeta]


class AsyncEntries:
    """Builds, encodes and decodes the cache's entries."""

    def __init__(
        self,
        *,
        codec: Codec,
        max_value_size: int,
        stats: CacheStats,
        clock: Callable[[], float],
        rng: Callable[[], float],
    ) -> None:
        #: The codec of calls that name none.
        self.codec = codec
        #: Encoded entries larger than this (bytes) are refused.
        self.max_value_size = max_value_size
        self.stats = stats
        self.record = L2Recorder(stats)
        #: Wall-clock seconds: an entry's birth is read in other processes.
        self.clock = clock
        #: Uniform in [0, 1): the TTL jitter.
        self.rng = rng

    def meta(
        self,
        value: Any,
        policy: CachePolicy,
        load_time: float,
        tags: tuple[tuple[str, int], ...] = (),
        lsn: int | None = None,
    ) -> EntryMeta:
        """The metadata of ``value`` loaded (or written) now under ``policy``."""
        ttl = jittered_ttl(policy.ttl_for(value), policy.jitter, self.rng())
        return EntryMeta(self.clock(), ttl, policy.swr, policy.sie, load_time, policy.schema, lsn, tags)

    def encode(self, pkey: str, value: Any, meta: EntryMeta, codec: Codec) -> bytes:
        """The stored bytes of ``value``; the errors name the key (nothing is stored)."""
        try:
            payload = codec.encode(value)
        except UnserializableValueError as exc:
            if exc.key is not None:
                raise
            raise UnserializableValueError(pkey, exc.type_name, exc.codec, exc.detail) from exc
        except SerializationError as exc:
            exc.key = pkey  # type: ignore[attr-defined]
            raise
        raw = encode_envelope(meta, codec.id, payload)
        if len(raw) > self.max_value_size:
            raise ValueTooLargeError(pkey, len(raw), self.max_value_size)
        return raw

    def decode(self, pkey: str, raw: bytes, policy: CachePolicy, codec: Codec, *, count: bool = True) -> Found | None:
        """Decode an entry; an unreadable one is None (counted once per read when ``count``)."""
        try:
            meta, codec_id, payload = decode_envelope(raw)
        except EnvelopeError as exc:
            self.record.corrupt(count)
            log.debug("cache %s: %s is not a readable entry (%s): a miss", self.stats.name, pkey, exc.reason)
            return None
        if meta.schema != policy.schema or codec_id != codec.id:
            self.record.corrupt(count)
            return None
        if policy.read_your_writes and read_before_own_write(meta.lsn, own_write_floor()):
            self.record.older_than_own_write()
            return None
        try:
            return codec.decode(payload), meta
        except CorruptValueError as exc:
            self.record.corrupt(count)
            log.debug("cache %s: %s does not decode (%s): a miss", self.stats.name, pkey, exc)
            return None
