"""Batches: many keys in one round trip per server. Written once, async;
``readscale._sync.cache.batch`` is generated from this file.

``get_many`` reads the L1 first, then the rest from the L2 in one call; fresh entries
without tags or LSN take a fast path (decoded straight from their payload, no L1 copy to
make). ``load_missing`` fills the keys a batch did not find as one fill: each key holds a
ticket taken before the load, and the one load reads at or past the highest of their
floors (``readscale._core.cache.fill``). The façade (``AsyncCache.get_many``,
``get_or_load_many``) resolves the policy and codec and starts the bus first.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, cast

from readscale._async.cache.coherence import AsyncCoherence
from readscale._async.cache.entries import AsyncEntries
from readscale._async.cache.filler import AsyncFiller, log
from readscale._async.cache.l2 import AsyncL2Gate
from readscale._async.cache.versions import AsyncVersions
from readscale._core.cache.entry import EntryMeta, fresh_payloads
from readscale._core.cache.fill import Refusal, merge_floor
from readscale._core.cache.freshness import Freshness, assess
from readscale._core.cache.keys import physical_keys
from readscale._core.cache.lease import LeaseResult
from readscale._core.cache.novalue import NO_VALUE
from readscale._core.cache.policy import CachePolicy
from readscale._shared.cache.fill_scope import fill_scope
from readscale._shared.cache.stats import CacheStats, FillRecorder
from readscale.codecs import Codec
from readscale.errors import CacheUnavailableError, SerializationError, UnserializableValueError


class AsyncBatch:
    """``get_many`` and the fill of the keys it missed, over the cache's parts (it owns
    no state of its own)."""

    def __init__(
        self,
        l2: AsyncL2Gate,
        entries: AsyncEntries,
        versions: AsyncVersions,
        coherence: AsyncCoherence,
        filler: AsyncFiller,
        *,
        stats: CacheStats,
        clock: Callable[[], float],
        monotonic: Callable[[], float],
    ) -> None:
        self.l2 = l2
        self.entries = entries
        self.versions = versions
        self.coherence = coherence
        #: The filler's parts a batch fill uses: loads under a right, and the fill store.
        self.loads = filler.loads
        self.stores = filler.stores
        self.stats = stats
        self.record = FillRecorder(stats)
        self._clock = clock
        self._monotonic = monotonic

    async def get_many(
        self, keys: Sequence[str], policy: CachePolicy, codec: Codec, expect: type | None = None
    ) -> dict[str, Any]:
        """The cached values of ``keys`` that are present (one round trip per server); an
        L1 copy that is not an ``expect`` (the declared type's class) is a miss."""
        if policy.versioned:
            pkeys = [await self.versions.pkey(key, policy) for key in keys]
        else:
            pkeys = physical_keys(self.versions.prefix, policy.namespace, keys)
        use_l1 = self.coherence.l1 is not None and policy.uses_l1
        result: dict[str, Any] = {}
        remote_keys: Sequence[str] = keys
        remote: list[str] = pkeys
        if use_l1:
            remote_keys, remote = [], []
            for key, pkey in zip(keys, pkeys, strict=True):
                found = self.coherence.l1_get(pkey, policy)
                if found is not None and expect is not None and not isinstance(found[0], expect):
                    self.coherence.l1_wrong_type(pkey, found[0], expect)
                    found = None
                if found is not None and (not found[1].tags or self.versions.tags_current_locally(found[1].tags)):
                    result[key] = found[0]
                else:
                    remote_keys.append(key)
                    remote.append(pkey)
        if not remote or self.l2.backend is None or not policy.uses_l2:
            return result
        since = self.coherence.local.seq
        raws = await self.l2.get_many(remote)
        now = self._clock()
        # The fast path: fresh entries without tags or LSN, no L1 copy to make.
        fast = not use_l1 and not policy.read_your_writes  # own writes are judged on the full path
        payloads = fresh_payloads(raws, now, policy.schema, codec.id) if fast else [None] * len(raws)
        # The codec's compiled decoder when it has one: a payload it refuses is decoded
        # again on the full path below, where the error is handled and counted.
        decode = getattr(codec, "fast_decode", codec.decode)
        hits = stale = 0
        if not use_l1 and None not in payloads:
            # Every entry fresh and plain (the common batch): decoded in one C-level pass.
            # Any payload the decoder refuses sends the whole batch down the loop below.
            values: list[Any] | None
            try:
                values = list(map(decode, cast("list[bytes | memoryview]", payloads)))
            except Exception:  # decoded again below, where the error is handled and counted
                values = None
            if values is not None:
                result.update(zip(remote_keys, values, strict=True))
                self.record.l2_hit(len(values))
                self.record.l2_miss(0)
                return result
        for key, pkey, raw, payload in zip(remote_keys, remote, raws, payloads, strict=True):
            if payload is not None:
                try:
                    value = decode(payload)
                except Exception:  # decoded again below, where the error is handled and counted
                    value = NO_VALUE
                if value is not NO_VALUE:
                    result[key] = value
                    hits += 1
                    continue
            if raw is None:
                continue
            found = self.entries.decode(pkey, raw, policy, codec)
            if found is None:
                continue
            if found[1].tags and not await self.versions.tags_current(found[1].tags):
                self.record.tag_stale()
                continue
            state = assess(found[1], now, 1.0, 0.0)
            if state is Freshness.FRESH:
                hits += 1
                self.coherence.l1_put(pkey, found[0], found[1], policy, size=len(raw), since=since)
                result[key] = found[0]
            elif state is Freshness.STALE:
                self.record.served_stale()
                stale += 1
                result[key] = found[0]
        self.record.l2_hit(hits)
        self.record.l2_miss(len(remote) - hits - stale)
        return result

    async def load_missing(
        self,
        keys: Sequence[str],
        found: dict[str, Any],
        loader: Callable[[list[str]], Awaitable[Mapping[str, Any]]],
        policy: CachePolicy,
        codec: Codec,
    ) -> dict[str, Any]:
        """``found`` (what ``get_many`` returned) completed with the missing keys, from one
        call of ``loader(missing_keys)``, stored as one fill."""
        missing = [k for k in dict.fromkeys(keys) if k not in found]
        if not missing:
            return found
        if not policy.cacheable:
            found.update(await self.loads.call_loader(lambda: loader(missing)))
            return found
        since = self.coherence.local.seq
        pkeys = {k: await self.versions.pkey(k, policy) for k in missing}
        rights: dict[str, LeaseResult] = {}
        floor: int | None = None
        floors_known = True
        if self.l2.backend is not None and policy.uses_l2:
            taken = await self.loads.tickets(list(pkeys.values()), policy)  # None: the server failed (counted)
            if taken is None:
                floors_known = False
            else:
                rights = dict(zip(pkeys, taken, strict=True))
                for right in taken:
                    floor = merge_floor(floor, right.floor_lsn)
        else:
            now = self._monotonic()
            for pkey in pkeys.values():
                floor = merge_floor(floor, self.coherence.local.floor(pkey, now))
        tag_versions: tuple[tuple[str, int], ...] = ()
        tag_floor: int | None = None
        if floors_known:
            try:
                tag_versions, tag_floor = await self.loads.fill_floors(policy.tags, policy)
            except CacheUnavailableError as exc:
                self.l2.failed(exc)
                floors_known = False
        if not floors_known:
            for k, right in rights.items():
                await self.stores.release(pkeys[k], right.token)
            loaded = await self.loads.load_fail_open(lambda: loader(missing), tuple(pkeys[k] for k in missing))
            for pkey in pkeys.values():
                self.stores.refused(pkey, Refusal.NO_FLOOR)
            found.update({k: loaded[k] for k in missing if k in loaded})
            return found
        floor = merge_floor(floor, tag_floor)
        started = self._monotonic()
        try:
            with fill_scope(floor, self.loads.staleness) as scope:
                loaded = await self.loads.call_loader(lambda: loader(missing))
        except BaseException:
            for k, right in rights.items():
                await self.stores.release(pkeys[k], right.token)
            raise
        elapsed = self._monotonic() - started
        ok = True
        for k in missing:
            ok = await self.stores.may_store(pkeys[k], scope, rights[k].token if k in rights else None) and ok
        if ok:
            source = scope.source_lsn
            entry_lsn = None if not scope.reads or any(r.primary for r in scope.reads) else source
            entries: list[tuple[str, Any, EntryMeta, bytes, str | None]] = []
            for k in missing:
                token = rights[k].token if k in rights else None
                if k not in loaded:
                    await self.stores.release(pkeys[k], token)
                    continue
                value = loaded[k]
                meta = self.entries.meta(value, policy, elapsed, tag_versions, entry_lsn)
                try:
                    raw = self.entries.encode(pkeys[k], value, meta, codec)
                except SerializationError as exc:
                    self.record.not_cached()
                    log.warning(
                        "cache %s: %s not cached: %s",
                        self.stats.name,
                        pkeys[k],
                        exc,
                        extra={
                            "event": "cache_value_not_cached",
                            "cache": self.stats.name,
                            "key": pkeys[k],
                            "reason": str(exc),
                        },
                    )
                    if isinstance(exc, UnserializableValueError):  # the caller's to fix (loads.py)
                        for other in missing:  # nothing of this batch is stored
                            await self.stores.release(pkeys[other], rights[other].token if other in rights else None)
                        raise
                    await self.stores.release(pkeys[k], token)
                    continue
                entries.append((pkeys[k], value, meta, raw, token))
            await self.stores.store_fills(entries, policy, source, since)
            if entries:  # one batched fill: one observation, load start to stored
                self.record.fill_time(self._monotonic() - started)
        found.update({k: loaded[k] for k in missing if k in loaded})
        return found


__all__ = ["AsyncBatch"]
