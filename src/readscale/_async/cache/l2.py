"""The cache's access to its tiers: L1 in process, L2 behind a circuit breaker, and the
entry envelope between them. A mixin of :class:`AsyncCache` (internal)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from readscale._async.backends.base import AsyncBackend
from readscale._core.cache import breaker as circuit
from readscale._core.cache.entry import EntryMeta, EnvelopeError, decode_envelope, encode_envelope
from readscale._core.cache.fill import Refusal
from readscale._core.cache.freshness import jittered_ttl, l1_ttl, storage_ttl
from readscale._core.cache.local_invalidations import LocalInvalidations
from readscale._core.cache.novalue import NO_VALUE
from readscale._core.cache.policy import CachePolicy
from readscale._core.postgres.lsn import format_lsn
from readscale._core.replicas.causal import read_before_own_write
from readscale._shared.cache.stats import CacheStats
from readscale._shared.replicas.causal_context import own_write_floor
from readscale.codecs import Codec
from readscale.errors import (
    CacheUnavailableError,
    CorruptValueError,
    SerializationError,
    UnserializableValueError,
    ValueTooLargeError,
)
from readscale.l1 import MemoryStore

log = logging.getLogger("readscale.cache")

_REFUSAL_HINTS = {
    Refusal.LEASE_LOST: "the key was invalidated while it loaded (normal under concurrent writes)",
    Refusal.OLDER_THAN_INVALIDATION: "a read was behind the key's last invalidation (a lagging replica)",
    Refusal.TOO_STALE: "a read was staler than the fill's bound, or of unknown staleness",
    Refusal.UNDECLARED_SOURCE: (
        "the loader read outside the replica router and declared nothing while the key's tombstone "
        "stands: call readscale.cache.report_primary_read() in a loader that reads the primary, or build "
        "the cache with loader_source='primary' (docs/consistency.md)"
    ),
    Refusal.NO_FLOOR: "the cache server failed before the load, so the key's floors are unknown",
}

Found = tuple[Any, EntryMeta]
#: How many keys written during an L2 outage one process remembers for removal.
MAX_UNSYNCED = 100_000


class AsyncTierAccess:
    backend: AsyncBackend | None
    l1: MemoryStore[str, Any] | None
    stats: CacheStats
    max_value_size: int
    tombstone_ttl: float
    _breaker: circuit.BreakerState
    _breaker_settings: circuit.BreakerSettings
    _clock: Callable[[], float]
    _monotonic: Callable[[], float]
    _rng: Callable[[], float]
    #: Keys written while the L2 could not be reached (or was skipped by the breaker):
    #: their L2 copy may be older than the database, so they are removed from it before
    #: the next L2 call. Without this a value written during an outage comes back, stale,
    #: for the rest of its TTL once Redis answers again.
    _unsynced: set[str]
    #: Invalidations this process has seen (its own and the bus's): an L1 copy of data
    #: read before one of them is never put (see readscale._core.cache.local_invalidations).
    _local: LocalInvalidations
    _refusals_logged: set[Refusal]

    # -- L1 -------------------------------------------------------------------------------

    def _l1_get(self, pkey: str, policy: CachePolicy) -> Found | None:
        if self.l1 is None or not policy.uses_l1:
            return None
        item = self.l1.get(pkey)
        if item is NO_VALUE:
            self.stats.l1.misses += 1
            return None
        if policy.read_your_writes and read_before_own_write(item[1].lsn, own_write_floor()):
            self.stats.l1.older_than_own_write += 1
            return None
        self.stats.l1.hits += 1
        return item  # type: ignore[no-any-return]

    def _l1_put(self, pkey: str, value: Any, meta: EntryMeta, policy: CachePolicy, size: int, since: int) -> None:
        """Put an L1 copy of what was read (or loaded) after local invalidation number
        ``since``; not if the key was invalidated since (the copy may predate it)."""
        if self.l1 is None or not policy.uses_l1:
            return
        if self._local.invalidated_since(pkey, since):
            self.stats.l1.puts_skipped += 1
            return
        ttl = l1_ttl(meta, self._clock(), policy.l1_ttl)
        if ttl > 0:
            self.l1.set(pkey, (value, meta), ttl, max(size, 1))

    # -- L2 and its breaker ----------------------------------------------------------------

    def _l2_allowed(self) -> bool:
        if self._breaker is circuit.CLOSED:
            return True
        allowed, self._breaker = circuit.allow(self._breaker, self._monotonic())
        if not allowed:
            self.stats.l2.skipped += 1
        return allowed

    def _l2_ok(self) -> None:
        if self._breaker is not circuit.CLOSED:
            was_open = self._breaker.circuit is not circuit.Circuit.CLOSED
            self._breaker = circuit.on_success(self._breaker)
            if was_open:
                log.warning("cache %s: %s answers again; using it", self.stats.name, self._backend_name)

    def _l2_failed(self, exc: CacheUnavailableError) -> None:
        self.stats.l2.errors += 1
        if exc.busy:
            log.warning("cache %s: %s", self.stats.name, exc)
            return
        before = self._breaker.circuit
        self._breaker = circuit.on_failure(self._breaker, self._monotonic(), self._breaker_settings)
        if self._breaker.circuit is circuit.Circuit.OPEN and before is not circuit.Circuit.OPEN:
            self.stats.breaker_opens += 1
            log.warning(
                "cache %s: %s unavailable (%s); reads go to the loader for %.1fs before a probe",
                self.stats.name,
                self._backend_name,
                exc,
                self._breaker.cooldown,
            )
        else:
            log.debug("cache %s: %s error: %s", self.stats.name, self._backend_name, exc)

    @property
    def _backend_name(self) -> str:
        return self.backend.name if self.backend is not None else "no backend"

    async def _l2_get(self, pkey: str, policy: CachePolicy, codec: Codec) -> Found | None:
        backend = self.backend
        if backend is None or not policy.uses_l2 or not self._l2_allowed():
            return None
        if self._unsynced and not await self._resync():
            return None
        try:
            raw = await backend.get(pkey)
        except CacheUnavailableError as exc:
            self._l2_failed(exc)
            return None
        self._l2_ok()
        if raw is None:
            return None
        return self._decode(pkey, raw, policy, codec)

    async def _l2_call_many(self, pkeys: list[str]) -> list[bytes | None]:
        assert self.backend is not None
        if not self._l2_allowed() or (self._unsynced and not await self._resync()):
            return [None] * len(pkeys)
        try:
            raws = await self.backend.get_many(pkeys)
        except CacheUnavailableError as exc:
            self._l2_failed(exc)
            return [None] * len(pkeys)
        self._l2_ok()
        return raws

    # -- entries ---------------------------------------------------------------------------

    def _decode(self, pkey: str, raw: bytes, policy: CachePolicy, codec: Codec, *, count: bool = True) -> Found | None:
        """Decode an entry; an unreadable one is None (counted once per read when ``count``)."""
        try:
            meta, codec_id, payload = decode_envelope(raw)
        except EnvelopeError as exc:
            self.stats.l2.corrupt += count
            log.debug("cache %s: %s is not a readable entry (%s): a miss", self.stats.name, pkey, exc.reason)
            return None
        if meta.schema != policy.schema or codec_id != codec.id:
            self.stats.l2.corrupt += count
            return None
        if policy.read_your_writes and read_before_own_write(meta.lsn, own_write_floor()):
            self.stats.l2.older_than_own_write += 1
            return None
        try:
            return codec.decode(payload), meta
        except CorruptValueError as exc:
            self.stats.l2.corrupt += count
            log.debug("cache %s: %s does not decode (%s): a miss", self.stats.name, pkey, exc)
            return None

    def _meta(
        self,
        value: Any,
        policy: CachePolicy,
        load_time: float,
        tags: tuple[tuple[str, int], ...] = (),
        lsn: int | None = None,
    ) -> EntryMeta:
        ttl = jittered_ttl(policy.ttl_for(value), policy.jitter, self._rng())
        return EntryMeta(self._clock(), ttl, policy.swr, policy.sie, load_time, policy.schema, lsn, tags)

    def _encode(self, pkey: str, value: Any, meta: EntryMeta, codec: Codec) -> bytes:
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

    async def _store(
        self,
        pkey: str,
        value: Any,
        meta: EntryMeta,
        raw: bytes,
        policy: CachePolicy,
        token: str | None,
        source_lsn: int | None = None,
        *,
        since: int,
        raise_too_large: bool = False,
        write: bool = False,
    ) -> bool:
        """Write an encoded entry to L2 (under ``token``'s lease if given) and to L1.
        ``write``: the entry is a write's value (write-through), not a fill: if the L2
        cannot be told, the key is removed from it once it answers.
        False when the fill was refused (lease lost, or older than an invalidation) or
        the backend's own size limit refused it (raised instead with ``raise_too_large``:
        a caller's explicit write must hear it). A refused entry changes neither tier."""
        backend = self.backend
        reachable = backend is not None and policy.uses_l2 and self._l2_allowed()
        if reachable and self._unsynced:
            reachable = await self._resync()
        if not reachable:
            if backend is not None and policy.uses_l2 and (token is None or write):
                self._mark_unsynced(pkey)
        elif backend is not None:
            ttl = storage_ttl(meta, self._clock())
            try:
                if token is None:
                    await backend.set(pkey, raw, ttl)
                elif not await backend.fill(pkey, raw, ttl, token, source_lsn):
                    # The lease was lost (expired, or an invalidation removed it) or the
                    # value was read before the key's last change: what we loaded may be
                    # older than the database now, so it is not cached anywhere.
                    self._refused(pkey, Refusal.LEASE_LOST, source_lsn=source_lsn)
                    return False
                self.stats.l2.fills += 1
                self._l2_ok()
            except CacheUnavailableError as exc:
                self._l2_failed(exc)
                if token is None or write:  # a write the server may not have: remove the key later
                    self._mark_unsynced(pkey)
            except ValueTooLargeError as exc:
                if raise_too_large:
                    raise
                self.stats.loader.not_cached += 1
                log.warning("cache %s: %s", self.stats.name, exc)
                return False
        self.stats.l1.fills += 1
        self._l1_put(pkey, value, meta, policy, size=len(raw), since=since)
        return True

    async def _forget(self, pkey: str) -> None:
        if self.l1 is not None:
            self.l1.delete(pkey)
        if self.backend is not None:
            try:
                await self.backend.delete(pkey)
            except CacheUnavailableError as exc:
                self._l2_failed(exc)
                self._mark_unsynced(pkey)

    async def _store_fills(
        self,
        entries: list[tuple[str, Any, EntryMeta, bytes, str | None]],
        policy: CachePolicy,
        source_lsn: int | None,
        since: int,
    ) -> None:
        """Store several fills of one load (``(pkey, value, meta, raw, token)``), each under
        its own right, in as few round trips as the server allows."""
        backend = self.backend
        with_rights = [e for e in entries if e[4] is not None]
        if backend is None or not with_rights:
            for pkey, value, meta, raw, token in entries:
                await self._store(pkey, value, meta, raw, policy, token, source_lsn, since=since)
            return
        reachable = policy.uses_l2 and self._l2_allowed()
        if reachable and self._unsynced:
            reachable = await self._resync()
        stored: list[bool]
        if not reachable:
            stored = [True] * len(with_rights)  # as one fill does: the L1 copy is kept
        else:
            now = self._clock()
            items = [
                (pkey, raw, storage_ttl(meta, now), token or "", source_lsn)
                for pkey, _, meta, raw, token in with_rights
            ]
            try:
                stored = await backend.fill_many(items)
                self._l2_ok()
            except CacheUnavailableError as exc:
                self._l2_failed(exc)
                return
            except ValueTooLargeError:  # one of them: store one by one, the others still land
                for pkey, value, meta, raw, token in with_rights:
                    await self._store(pkey, value, meta, raw, policy, token, source_lsn, since=since)
                return
        for (pkey, value, meta, raw, _), ok in zip(with_rights, stored, strict=True):
            if not ok:
                self._refused(pkey, Refusal.LEASE_LOST, source_lsn=source_lsn)
                continue
            if reachable:
                self.stats.l2.fills += 1
            self.stats.l1.fills += 1
            self._l1_put(pkey, value, meta, policy, size=len(raw), since=since)

    def _refused(
        self, pkey: str, cause: Refusal, *, floor_lsn: int | None = None, source_lsn: int | None = None
    ) -> None:
        """Count a refused fill by cause, and log the first of each cause (the fill's value
        went to its caller; it is just not cached)."""
        loader = self.stats.loader
        loader.fills_refused += 1
        name = f"fills_refused_{cause.value}"
        setattr(loader, name, getattr(loader, name) + 1)
        logged = self._refusals_logged
        level = logging.INFO if cause is Refusal.LEASE_LOST else logging.WARNING
        if cause in logged:
            level = logging.DEBUG
        else:
            logged.add(cause)
        if log.isEnabledFor(level):
            log.log(
                level,
                "cache %s: a fill of %s was not stored (%s): %s%s",
                self.stats.name,
                pkey,
                cause.value,
                _REFUSAL_HINTS[cause],
                "" if level == logging.DEBUG else f"; further ones are counted in stats.loader.{name}",
                extra={
                    "cache": self.stats.name,
                    "key": pkey,
                    "cause": cause.value,
                    "floor_lsn": None if floor_lsn is None else format_lsn(floor_lsn),
                    "source_lsn": None if source_lsn is None else format_lsn(source_lsn),
                },
            )

    # -- writes the L2 missed ------------------------------------------------------------

    def _mark_unsynced(self, pkey: str) -> None:
        if pkey in self._unsynced:
            return
        if len(self._unsynced) >= MAX_UNSYNCED:
            self.stats.l2.unsynced_dropped += 1
            log.error(
                "cache %s: %s was written while %s was unreachable and %d keys already wait to be "
                "removed from it: its old copy stays until its TTL",
                self.stats.name,
                pkey,
                self._backend_name,
                MAX_UNSYNCED,
            )
            return
        self._unsynced.add(pkey)
        self.stats.l2.unsynced += 1

    async def _resync(self) -> bool:
        """Remove from the L2 every key written while it was unreachable; False (keys kept
        for the next try) if it still cannot be reached."""
        assert self.backend is not None
        keys = sorted(self._unsynced)
        self._unsynced.difference_update(keys)
        try:
            # An invalidation, not a plain delete: a fill in flight is refused, and the
            # tombstone (position unknown) makes fills of these keys read the primary.
            await self.backend.invalidate(keys, lsn=None, tombstone_ttl=self.tombstone_ttl)
        except CacheUnavailableError as exc:
            self._unsynced.update(keys)
            self._l2_failed(exc)
            return False
        self.stats.l2.resynced += len(keys)
        log.warning(
            "cache %s: removed %d entries from %s that were written while it was unreachable",
            self.stats.name,
            len(keys),
            self._backend_name,
        )
        return True
