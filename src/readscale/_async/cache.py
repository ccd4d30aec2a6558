"""The application cache: an in-process L1 in front of a remote L2, with stampede
protection and fail-open reads. Written once, async; ``readscale._sync.cache.Cache`` is
generated from this file.

A read asks ``readscale._core.freshness.assess`` what the entry it found is worth and
carries the answer out (fresh: serve; early refresh or stale: serve and refresh once in
the background; stale-if-error: load and fall back to the stale value; expired or
missing: fill). A fill runs once per key per process (single-flight) and, with
``OnMiss.WAIT``, once per key across processes (a lease in the backend: the others are
woken by the fill). When the L2 server fails, reads go to the loader and a circuit
breaker stops paying the timeout on every call until a probe succeeds; each such event
is logged and counted.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, ParamSpec, TypeVar, assert_never

from readscale._async.backends.base import AsyncBackend
from readscale._async.cached import AsyncCachedFunction
from readscale._core import breaker as circuit
from readscale._core.entry import EntryMeta, EnvelopeError, decode_envelope, encode_envelope, fresh_payload
from readscale._core.freshness import Freshness, assess, jittered_ttl, l1_ttl, storage_ttl
from readscale._core.keys import DEFAULT_PREFIX, physical_key, template_fields, validate_key
from readscale._core.policy import DEFAULT, CachePolicy, OnMiss
from readscale._primitives import AsyncBackground, AsyncSingleFlight
from readscale.codecs import Codec, JsonCodec
from readscale.errors import (
    CacheUnavailableError,
    ConfigurationError,
    CorruptValueError,
    SerializationError,
    ValueTooLargeError,
)
from readscale.memory import NO_VALUE, MemoryStore
from readscale.metrics import CacheStats

T = TypeVar("T")
P = ParamSpec("P")
log = logging.getLogger("readscale.cache")

DEFAULT_MAX_VALUE_SIZE = 1024 * 1024
Found = tuple[Any, EntryMeta]


class AsyncCache:
    """An application cache over an optional in-process L1 and a remote L2 backend.

    Arguments:
        backend: the L2 (Redis, Redis Cluster, Memcached, memory). None: L1 only.
        l1: the in-process tier, or None for no L1.
        codec: how values become bytes (JSON by default; pickle only if named and signed).
        policy: the default :class:`CachePolicy` for calls that give none.
        prefix: prepended to every key this cache stores (``rs:`` by default).
        max_value_size: encoded values larger than this are refused (bytes).
        clock: wall-clock seconds (entries cross processes); monotonic: for durations;
        rng: uniform in [0, 1) for TTL jitter and XFetch. Inject them in tests.
    """

    def __init__(
        self,
        backend: AsyncBackend | None = None,
        *,
        l1: MemoryStore | None = None,
        codec: Codec | None = None,
        policy: CachePolicy = DEFAULT,
        prefix: str = DEFAULT_PREFIX,
        max_value_size: int = DEFAULT_MAX_VALUE_SIZE,
        breaker: circuit.BreakerSettings | None = None,
        name: str = "cache",
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        rng: Callable[[], float] = random.random,
    ) -> None:
        if backend is None and l1 is None:
            raise ConfigurationError("a cache needs a backend, an l1 store, or both")
        self.backend = backend
        self.l1 = l1
        self.codec: Codec = codec or JsonCodec()
        self.policy = policy
        self.prefix = prefix
        self.max_value_size = max_value_size
        self.stats = CacheStats(name)
        self._breaker_settings = breaker or circuit.BreakerSettings()
        self._breaker = circuit.CLOSED
        self._clock = clock
        self._monotonic = monotonic
        self._rng = rng
        self._flight: AsyncSingleFlight[str, Any] = AsyncSingleFlight()
        self._background: AsyncBackground[str] = AsyncBackground(on_error=self._refresh_failed)

    # -- keys ------------------------------------------------------------------------------

    def key(self, key: str, policy: CachePolicy | None = None) -> str:
        """The physical key stored for ``key`` under ``policy``'s namespace."""
        return physical_key(self.prefix, (policy or self.policy).namespace, validate_key(key))

    def prepare_entry(
        self, key: str, value: Any, *, policy: CachePolicy | None = None, codec: Codec | None = None
    ) -> tuple[str, bytes, float]:
        """Encode ``value`` as this cache stores it: ``(physical_key, envelope, storage_ttl)``.

        For writers that store entries themselves in one atomic step with other commands
        (write-behind puts the entry and its queue record in one script). Raises the
        encoding errors of :meth:`set`.
        """
        policy = policy or self.policy
        pkey = self.key(key, policy)
        meta = self._meta(value, policy, 0.0)
        raw = self._encode(pkey, value, meta, codec or self.codec)
        return pkey, raw, storage_ttl(meta, self._clock())

    def forget_local(self, key: str, *, policy: CachePolicy | None = None) -> None:
        """Drop ``key`` from this process's L1 only (after another writer changed it)."""
        if self.l1 is not None:
            self.l1.delete(self.key(key, policy))

    # -- cache-aside -----------------------------------------------------------------------

    async def get(self, key: str, *, policy: CachePolicy | None = None, codec: Codec | None = None) -> Any:
        """The cached value of ``key``, or ``NO_VALUE`` on a miss (None is a cached value).

        A stale value inside its stale-while-revalidate window is returned (there is no
        loader here to refresh it); a dead L2 reads as a miss.
        """
        policy = policy or self.policy
        if not policy.cacheable:
            return NO_VALUE
        pkey = self.key(key, policy)
        found = self._l1_get(pkey, policy)
        if found is not None:
            return found[0]
        found = await self._l2_get(pkey, policy, codec or self.codec)
        if found is None:
            self.stats.l2.misses += 1
            return NO_VALUE
        value, meta = found
        state = assess(meta, self._clock(), 1.0, 0.0)
        if state is Freshness.FRESH:
            self.stats.l2.hits += 1
            self._l1_put(pkey, value, meta, policy, size=0)
            return value
        if state is Freshness.STALE:
            self.stats.l2.stale_serves += 1
            return value
        self.stats.l2.misses += 1
        return NO_VALUE

    async def set(
        self,
        key: str,
        value: Any,
        *,
        policy: CachePolicy | None = None,
        ttl: float | None = None,
        codec: Codec | None = None,
    ) -> None:
        """Store ``value``. Raises :class:`UnserializableValueError` or
        :class:`ValueTooLargeError` (nothing stored); a dead L2 is logged and counted."""
        policy = policy or self.policy
        if ttl is not None:
            policy = policy.with_(ttl=ttl)
        if not policy.cacheable:
            return
        pkey = self.key(key, policy)
        meta = self._meta(value, policy, 0.0)
        raw = self._encode(pkey, value, meta, codec or self.codec)
        await self._store(pkey, value, meta, raw, policy, token=None)

    async def delete(self, key: str, *, policy: CachePolicy | None = None) -> bool:
        """Remove ``key`` from both tiers. Raises :class:`CacheUnavailableError` when the
        L2 cannot be reached: a lost delete would leave stale data behind."""
        pkey = self.key(key, policy)
        if self.l1 is not None:
            self.l1.delete(pkey)
        if self.backend is None:
            return True
        return await self.backend.delete(pkey)

    async def delete_many(self, keys: Sequence[str], *, policy: CachePolicy | None = None) -> int:
        pkeys = [self.key(k, policy) for k in keys]
        if self.l1 is not None:
            self.l1.delete_many(pkeys)
        if self.backend is None:
            return len(pkeys)
        return await self.backend.delete_many(pkeys)

    # -- read-through ----------------------------------------------------------------------

    async def get_or_load(
        self,
        key: str,
        loader: Callable[[], Awaitable[T]],
        *,
        policy: CachePolicy | None = None,
        codec: Codec | None = None,
    ) -> T:
        """The cached value of ``key``, loading it with ``loader`` on a miss.

        Concurrent misses of one key share one load in this process, and with
        ``OnMiss.WAIT`` one load across processes. Errors of the cache server never reach
        the caller (the value is loaded instead); errors of ``loader`` do.
        """
        policy = policy or self.policy
        if not policy.cacheable:
            self.stats.loader.bypasses += 1
            return await self._call_loader(loader)
        codec = codec or self.codec
        pkey = self.key(key, policy)
        found = self._l1_get(pkey, policy)
        if found is not None:
            value, meta = found
            if policy.early_refresh and assess(meta, self._clock(), self._u(), policy.early_refresh) is (
                Freshness.EARLY_REFRESH
            ):
                self.stats.l1.early_refreshes += 1
                self._refresh_soon(pkey, loader, policy, codec)
            return value  # type: ignore[no-any-return]

        # Concurrent readers of one key in this process share one L2 read (and fill).
        async def read() -> Any:
            return await self._read_through(pkey, loader, policy, codec)

        value, leader = await self._flight.run(pkey, read)
        if not leader:
            self.stats.l2.coalesced += 1
        return value  # type: ignore[no-any-return]

    async def _read_through(
        self, pkey: str, loader: Callable[[], Awaitable[Any]], policy: CachePolicy, codec: Codec
    ) -> Any:
        found = await self._l2_get(pkey, policy, codec)
        if found is None:
            self.stats.l2.misses += 1
            return await self._fill_once(pkey, loader, policy, codec)
        value, meta = found
        state = assess(meta, self._clock(), self._u(), policy.early_refresh)
        match state:
            case Freshness.FRESH:
                self.stats.l2.hits += 1
                self._l1_put(pkey, value, meta, policy, size=0)
                return value
            case Freshness.EARLY_REFRESH:
                self.stats.l2.hits += 1
                self.stats.l2.early_refreshes += 1
                self._refresh_soon(pkey, loader, policy, codec)
                return value
            case Freshness.STALE:
                self.stats.l2.stale_serves += 1
                self._refresh_soon(pkey, loader, policy, codec)
                return value
            case Freshness.STALE_IF_ERROR:
                self.stats.l2.misses += 1
                try:
                    return await self._fill_once(pkey, loader, policy, codec)
                except Exception as exc:
                    self.stats.loader.stale_if_error += 1
                    log.warning("cache %s: loading %s failed (%s); serving the stale value", self.stats.name, pkey, exc)
                    return value
            case Freshness.EXPIRED:
                self.stats.l2.misses += 1
                return await self._fill_once(pkey, loader, policy, codec)
            case _:
                assert_never(state)

    async def write_through(
        self,
        key: str,
        writer: Callable[[], Awaitable[T]],
        *,
        policy: CachePolicy | None = None,
        codec: Codec | None = None,
    ) -> T:
        """Run ``writer`` (the database write, returning what was written), then cache its result.

        If the value cannot be cached (the L2 is down, or it cannot be encoded), the key is
        removed instead where possible, and the event is logged and counted: the write
        itself has happened and is not undone.
        """
        value = await writer()
        policy = policy or self.policy
        if not policy.cacheable:
            return value
        pkey = self.key(key, policy)
        meta = self._meta(value, policy, 0.0)
        try:
            raw = self._encode(pkey, value, meta, codec or self.codec)
        except SerializationError as exc:
            self.stats.loader.not_cached += 1
            log.warning("cache %s: write-through of %s not cached: %s", self.stats.name, pkey, exc)
            await self._forget(pkey)
            return value
        await self._store(pkey, value, meta, raw, policy, token=None)
        return value

    # -- batches ---------------------------------------------------------------------------

    async def get_many(
        self, keys: Sequence[str], *, policy: CachePolicy | None = None, codec: Codec | None = None
    ) -> dict[str, Any]:
        """The cached values of ``keys`` that are present (one round trip per server)."""
        policy = policy or self.policy
        if not policy.cacheable or not keys:
            return {}
        codec = codec or self.codec
        result: dict[str, Any] = {}
        remote: list[tuple[str, str]] = []
        for key in keys:
            pkey = self.key(key, policy)
            found = self._l1_get(pkey, policy)
            if found is not None:
                result[key] = found[0]
            else:
                remote.append((key, pkey))
        if not remote or self.backend is None or not policy.uses_l2:
            return result
        raws = await self._l2_call_many([p for _, p in remote])
        now = self._clock()
        schema, codec_id, decode = policy.schema, codec.id, codec.decode
        use_l1 = self.l1 is not None and policy.uses_l1
        hits = stale = 0
        for (key, pkey), raw in zip(remote, raws, strict=True):
            if raw is None:
                continue
            payload = None if use_l1 else fresh_payload(raw, now, schema, codec_id)
            if payload is not None:
                try:
                    result[key] = decode(payload)
                    hits += 1
                    continue
                except CorruptValueError:
                    pass
            found = self._decode(pkey, raw, policy, codec)
            if found is None:
                continue
            state = assess(found[1], now, 1.0, 0.0)
            if state is Freshness.FRESH:
                hits += 1
                self._l1_put(pkey, found[0], found[1], policy, size=len(raw))
                result[key] = found[0]
            elif state is Freshness.STALE:
                self.stats.l2.stale_serves += 1
                stale += 1
                result[key] = found[0]
        self.stats.l2.hits += hits
        self.stats.l2.misses += len(remote) - hits - stale
        return result

    async def get_or_load_many(
        self,
        keys: Sequence[str],
        loader: Callable[[list[str]], Awaitable[Mapping[str, Any]]],
        *,
        policy: CachePolicy | None = None,
        codec: Codec | None = None,
    ) -> dict[str, Any]:
        """Values of all ``keys``: cached ones from the cache, the rest from one call of
        ``loader(missing_keys)``, which returns a mapping (keys it omits are not cached)."""
        policy = policy or self.policy
        found = await self.get_many(keys, policy=policy, codec=codec)
        missing = [k for k in dict.fromkeys(keys) if k not in found]
        if not missing:
            return found
        started = self._monotonic()
        self.stats.loader.calls += 1
        try:
            loaded = await loader(missing)
        except BaseException:
            self.stats.loader.errors += 1
            raise
        elapsed = self._monotonic() - started
        self.stats.loader.seconds += elapsed
        if policy.cacheable:
            await self._store_many(loaded, policy, codec or self.codec, elapsed)
        found.update({k: loaded[k] for k in missing if k in loaded})
        return found

    # -- decorator -------------------------------------------------------------------------

    def cached(
        self, template: str, *, policy: CachePolicy | None = None, codec: Codec | None = None
    ) -> Callable[[Callable[P, Awaitable[T]]], AsyncCachedFunction[P, T]]:
        """Decorate a function so its results are cached under ``template`` filled from its
        arguments (see :class:`AsyncCachedFunction`)."""
        template_fields(template)  # a bad template fails here, at decoration time

        def decorate(fn: Callable[P, Awaitable[T]]) -> AsyncCachedFunction[P, T]:
            return AsyncCachedFunction(self, fn, template, policy, codec)

        return decorate

    # -- internals: tiers ------------------------------------------------------------------

    def _u(self) -> float:
        return 1.0 - self._rng()

    def _l1_get(self, pkey: str, policy: CachePolicy) -> Found | None:
        if self.l1 is None or not policy.uses_l1:
            return None
        item = self.l1.get(pkey)
        if item is NO_VALUE:
            self.stats.l1.misses += 1
            return None
        self.stats.l1.hits += 1
        return item  # type: ignore[no-any-return]

    def _l1_put(self, pkey: str, value: Any, meta: EntryMeta, policy: CachePolicy, size: int) -> None:
        if self.l1 is None or not policy.uses_l1:
            return
        ttl = l1_ttl(meta, self._clock(), policy.l1_ttl)
        if ttl > 0:
            self.l1.set(pkey, (value, meta), ttl, max(size, 1))

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
        if not self._l2_allowed():
            return [None] * len(pkeys)
        try:
            raws = await self.backend.get_many(pkeys)
        except CacheUnavailableError as exc:
            self._l2_failed(exc)
            return [None] * len(pkeys)
        self._l2_ok()
        return raws

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
        try:
            return codec.decode(payload), meta
        except CorruptValueError as exc:
            self.stats.l2.corrupt += count
            log.debug("cache %s: %s does not decode (%s): a miss", self.stats.name, pkey, exc)
            return None

    def _meta(self, value: Any, policy: CachePolicy, load_time: float) -> EntryMeta:
        ttl = jittered_ttl(policy.ttl_for(value), policy.jitter, self._rng())
        return EntryMeta(
            created_at=self._clock(),
            fresh_ttl=ttl,
            swr=policy.swr,
            sie=policy.sie,
            load_time=load_time,
            schema=policy.schema,
        )

    def _encode(self, pkey: str, value: Any, meta: EntryMeta, codec: Codec) -> bytes:
        try:
            payload = codec.encode(value)
        except SerializationError as exc:
            exc.key = pkey  # type: ignore[attr-defined]
            raise
        raw = encode_envelope(meta, codec.id, payload)
        if len(raw) > self.max_value_size:
            raise ValueTooLargeError(pkey, len(raw), self.max_value_size)
        return raw

    async def _store(
        self, pkey: str, value: Any, meta: EntryMeta, raw: bytes, policy: CachePolicy, token: str | None
    ) -> None:
        """Write an encoded entry to L2 (under ``token``'s lease if given) and to L1."""
        backend = self.backend
        if backend is not None and policy.uses_l2 and self._l2_allowed():
            ttl = storage_ttl(meta, self._clock())
            try:
                if token is None:
                    await backend.set(pkey, raw, ttl)
                elif not await backend.fill(pkey, raw, ttl, token):
                    # The lease was lost (expired, or an invalidation removed it): what we
                    # loaded may predate a change, so it is not cached anywhere.
                    self.stats.loader.fills_refused += 1
                    return
                self.stats.l2.fills += 1
                self._l2_ok()
            except CacheUnavailableError as exc:
                self._l2_failed(exc)
            except ValueTooLargeError as exc:
                self.stats.loader.not_cached += 1
                log.warning("cache %s: %s", self.stats.name, exc)
                return
        self.stats.l1.fills += 1
        self._l1_put(pkey, value, meta, policy, size=len(raw))

    async def _store_many(self, values: Mapping[str, Any], policy: CachePolicy, codec: Codec, elapsed: float) -> None:
        items: list[tuple[str, bytes, float]] = []
        now = self._clock()
        for key, value in values.items():
            pkey = self.key(key, policy)
            meta = self._meta(value, policy, elapsed)
            try:
                raw = self._encode(pkey, value, meta, codec)
            except SerializationError as exc:
                self.stats.loader.not_cached += 1
                log.warning("cache %s: %s not cached: %s", self.stats.name, pkey, exc)
                continue
            items.append((pkey, raw, storage_ttl(meta, now)))
            self._l1_put(pkey, value, meta, policy, size=len(raw))
        if items and self.backend is not None and policy.uses_l2 and self._l2_allowed():
            try:
                await self.backend.set_many(items)
                self.stats.l2.fills += len(items)
                self._l2_ok()
            except CacheUnavailableError as exc:
                self._l2_failed(exc)

    async def _forget(self, pkey: str) -> None:
        if self.l1 is not None:
            self.l1.delete(pkey)
        if self.backend is not None:
            try:
                await self.backend.delete(pkey)
            except CacheUnavailableError as exc:
                self._l2_failed(exc)

    # -- internals: fills ------------------------------------------------------------------

    async def _call_loader(self, loader: Callable[[], Awaitable[T]]) -> T:
        started = self._monotonic()
        self.stats.loader.calls += 1
        try:
            return await loader()
        except BaseException:
            self.stats.loader.errors += 1
            raise
        finally:
            self.stats.loader.seconds += self._monotonic() - started

    async def _fill_once(
        self, pkey: str, loader: Callable[[], Awaitable[Any]], policy: CachePolicy, codec: Codec
    ) -> Any:
        backend = self.backend
        if backend is None or not policy.uses_l2 or policy.on_miss is not OnMiss.WAIT or not backend.supports_leases:
            return await self._load_and_store(pkey, loader, policy, codec, token=None)
        deadline = self._monotonic() + policy.wait_budget
        while True:
            if not self._l2_allowed():
                self.stats.loader.fail_open += 1
                return await self._load_and_store(pkey, loader, policy, codec, token=None)
            try:
                lease = await backend.lease(pkey, policy.lease_ttl)
            except CacheUnavailableError as exc:
                self._l2_failed(exc)
                self.stats.loader.fail_open += 1
                return await self._load_and_store(pkey, loader, policy, codec, token=None)
            self._l2_ok()
            if lease.value is not None:
                found = self._decode(pkey, lease.value, policy, codec, count=False)
                if found is not None and assess(found[1], self._clock(), 1.0, 0.0).servable:
                    self.stats.l2.hits += 1
                    self._l1_put(pkey, found[0], found[1], policy, size=len(lease.value))
                    return found[0]
                # Unreadable or expired: overwrite it with a fresh load.
                return await self._load_and_store(pkey, loader, policy, codec, token=None)
            if lease.token is not None:
                return await self._load_and_store(pkey, loader, policy, codec, token=lease.token)
            # Someone else holds the lease: wait for their fill, then read it.
            remaining = deadline - self._monotonic()
            if remaining <= 0:
                self.stats.loader.lease_timeouts += 1
                log.warning("cache %s: waited %.1fs for the fill of %s; loading it here", self.stats.name,
                            policy.wait_budget, pkey)  # fmt: skip
                return await self._load_and_store(pkey, loader, policy, codec, token=None)
            self.stats.l2.lease_waits += 1
            try:
                await backend.wait_for_fill(pkey, min(remaining, policy.lease_ttl))
            except CacheUnavailableError as exc:
                self._l2_failed(exc)
                continue
            found = await self._l2_get(pkey, policy, codec)
            if found is not None and assess(found[1], self._clock(), 1.0, 0.0).servable:
                self.stats.l2.hits += 1
                self._l1_put(pkey, found[0], found[1], policy, size=0)
                return found[0]

    async def _load_and_store(
        self, pkey: str, loader: Callable[[], Awaitable[Any]], policy: CachePolicy, codec: Codec, token: str | None
    ) -> Any:
        started = self._monotonic()
        try:
            value = await self._call_loader(loader)
        except BaseException:
            if token is not None and self.backend is not None:
                try:
                    await self.backend.release(pkey, token)
                except CacheUnavailableError as exc:
                    self._l2_failed(exc)
            raise
        meta = self._meta(value, policy, self._monotonic() - started)
        try:
            raw = self._encode(pkey, value, meta, codec)
        except SerializationError as exc:
            self.stats.loader.not_cached += 1
            log.warning("cache %s: loaded value of %s not cached: %s", self.stats.name, pkey, exc)
            if token is not None and self.backend is not None:
                try:
                    await self.backend.release(pkey, token)
                except CacheUnavailableError as release_exc:
                    self._l2_failed(release_exc)
            return value
        await self._store(pkey, value, meta, raw, policy, token)
        return value

    # -- internals: background refresh -----------------------------------------------------

    def _refresh_soon(self, pkey: str, loader: Callable[[], Awaitable[Any]], policy: CachePolicy, codec: Codec) -> None:
        async def refresh() -> None:
            await self._refresh(pkey, loader, policy, codec)

        self._background.spawn(pkey, refresh)

    async def _refresh(
        self, pkey: str, loader: Callable[[], Awaitable[Any]], policy: CachePolicy, codec: Codec
    ) -> None:
        """One background refresh; across processes, a refresh lease lets only one run."""
        token: str | None = None
        backend = self.backend
        if backend is not None and backend.supports_leases and policy.uses_l2 and self._l2_allowed():
            try:
                token = await backend.refresh_lease(pkey, policy.lease_ttl)
            except CacheUnavailableError as exc:
                self._l2_failed(exc)
            else:
                if token is None:
                    return  # another process is refreshing it
        self.stats.loader.refreshes += 1
        await self._load_and_store(pkey, loader, policy, codec, token)

    def _refresh_failed(self, key: str, exc: BaseException) -> None:
        self.stats.loader.refresh_errors += 1

    async def drain(self) -> None:
        """Wait for background refreshes to finish (tests, shutdown)."""
        await self._background.drain()

    async def aclose(self) -> None:
        """Stop background work and close the backend."""
        await self._background.close()
        if self.backend is not None:
            await self.backend.close()
