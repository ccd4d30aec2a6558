"""Tags and versioned namespaces as version counters, and the bus that keeps every
process's L1 and version cache right. A mixin of :class:`AsyncCache` (internal).

- A tag is a counter in the L2 (``<prefix>ver:tag:<name>``). An entry records the
  versions of its tags when its fill starts; bumping a tag makes every entry filled under
  an older version stale. No set of keys per tag is kept, and counters are single keys,
  so this works the same on Redis Cluster.
- A versioned namespace puts its counter's value in every physical key
  (``<prefix><ns>:v<n>:<key>``): bumping it makes all old keys unreachable at once; they
  die by their TTL.
- Each process caches the counters it has read. Bumps are published on the bus, which
  updates other processes' copies and drops their L1 entries; when the bus reconnects
  (messages may have been missed) everything local is flushed. Without a bus, counters
  are re-read after ``version_ttl`` seconds (0: on every read).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from readscale._async.backends.base import AsyncBackend
from readscale._async.cache.bus import INVALIDATE, AsyncInvalidationBus
from readscale._core.cache.keys import physical_key, validate_key
from readscale._core.cache.local_invalidations import LocalInvalidations
from readscale._core.cache.policy import CachePolicy
from readscale._shared.cache.stats import CacheStats
from readscale.errors import CacheUnavailableError, ConfigurationError
from readscale.l1 import MemoryStore

log = logging.getLogger("readscale.cache")


class AsyncVersionAccess:
    backend: AsyncBackend | None
    bus: AsyncInvalidationBus | None
    l1: MemoryStore[str, Any] | None
    _l1_suspended: MemoryStore[str, Any] | None
    prefix: str
    stats: CacheStats
    version_ttl: float
    tombstone_ttl: float
    _local: LocalInvalidations
    _monotonic: Callable[[], float]
    _versions: dict[str, tuple[int, float]]
    _bus_pending: bool

    # -- names -----------------------------------------------------------------------------

    def _tag_counter(self, tag: str) -> str:
        return f"{self.prefix}ver:tag:{tag}"

    def _namespace_counter(self, namespace: str) -> str:
        return f"{self.prefix}ver:ns:{namespace}"

    def _physical(self, key: str, policy: CachePolicy) -> str:
        """The stored key; for a versioned namespace its version must be known locally."""
        key = validate_key(key)
        if not policy.versioned:
            return physical_key(self.prefix, policy.namespace, key)
        counter = self._namespace_counter(policy.namespace)
        local = self._versions.get(counter)
        if local is None:
            raise ConfigurationError(
                f"the version of namespace {policy.namespace!r} is not loaded yet; use the async "
                "cache methods (they load it) before building its keys"
            )
        return f"{self.prefix}{policy.namespace}:v{local[0]}:{key}"

    async def _pkey(self, key: str, policy: CachePolicy) -> str:
        if policy.versioned:
            await self._load_versions([self._namespace_counter(policy.namespace)], force=False)
        return self._physical(key, policy)

    # -- the local version cache ---------------------------------------------------------

    def _local_versions(self, counters: Iterable[str]) -> list[int] | None:
        """Versions known locally and still valid, or None if any is missing or too old."""
        now = self._monotonic()
        out = []
        for counter in counters:
            found = self._versions.get(counter)
            if found is None or now - found[1] > self.version_ttl:
                return None
            out.append(found[0])
        return out

    async def _load_versions(self, counters: Sequence[str], *, force: bool) -> list[int]:
        if not force:
            local = self._local_versions(counters)
            if local is not None:
                return local
        if self.backend is None:
            return [0] * len(counters)
        await self._ensure_bus()
        values = await self.backend.get_counters(counters)
        now = self._monotonic()
        for counter, value in zip(counters, values, strict=True):
            self._remember_version(counter, value, now)
        return values

    def _remember_version(self, counter: str, value: int, now: float) -> None:
        known = self._versions.get(counter)
        # Never step back: a late reply must not undo a newer bump seen on the bus.
        if known is None or value >= known[0]:
            self._versions[counter] = (value, now)
        else:
            self._versions[counter] = (known[0], now)

    async def _tag_versions(self, tags: Sequence[str]) -> tuple[tuple[str, int], ...]:
        """The current versions of ``tags``, recorded in an entry when its fill starts."""
        if not tags:
            return ()
        values = await self._load_versions([self._tag_counter(t) for t in tags], force=False)
        return tuple(zip(tags, values, strict=True))

    def _tags_current_locally(self, tags: tuple[tuple[str, int], ...]) -> bool:
        """True when every tag still has the version the entry was filled under, as known
        locally; an unknown version counts as changed (the caller rechecks in L2)."""
        current = self._local_versions(self._tag_counter(name) for name, _ in tags)
        return current is not None and all(c == v for c, (_, v) in zip(current, tags, strict=True))

    async def _tags_current(self, tags: tuple[tuple[str, int], ...]) -> bool:
        if not tags:
            return True
        if self._tags_current_locally(tags):
            return True
        try:
            current = await self._load_versions([self._tag_counter(name) for name, _ in tags], force=True)
        except CacheUnavailableError:
            return False
        return all(c == v for c, (_, v) in zip(current, tags, strict=True))

    async def _bump(self, counters: list[str], lsn: int | None) -> dict[str, int]:
        """Bump version counters and raise their floors to the change's ``lsn`` (None:
        unknown), so a fill under them reads at or past it (readscale._core.cache.fill)."""
        assert self.backend is not None
        before = {c: self._versions[c][0] for c in counters if c in self._versions}
        values = await self.backend.bump_counters(counters, lsn=lsn, floor_ttl=self.tombstone_ttl)
        now = self._monotonic()
        bumped = dict(zip(counters, values, strict=True))
        self._heard_bumps(bumped, now, before)
        await self._announce([], bumped, lsn)
        return bumped

    def _heard_bumps(self, bumped: dict[str, int], now: float, before: dict[str, int] | None = None) -> None:
        """New values of bumped counters (this process's bump, or one heard on the bus).

        A bump yields a value above every earlier one, unless the server lost the counter
        (a restart without persistence, an eviction): then the versions known here are
        ahead of the server's, a "never step back" version would hide every later bump,
        and entries judged by it would stay current. So the local state goes, as after a
        bus gap (found by the consistency harness: a tag-invalidated entry was served
        after the cache's Redis restarted empty). ``before``: what this process knew when
        it sent its own bump (a bump heard on the bus meanwhile is not a loss); a bump
        heard from another process that is not above the known version is taken as one
        (two processes' bumps crossing on the bus cost a flush, never a stale read)."""
        known = before if before is not None else {c: v for c, (v, _) in self._versions.items() if c in bumped}
        if any(c in known and value <= known[c] for c, value in bumped.items()):
            log.warning(
                "cache %s: a version counter went back (%s): the cache server lost it; local copies flushed",
                self.stats.name,
                ", ".join(sorted(bumped)),
            )
            self.flush_local()  # counted in stats.l1.flushes
        for counter, value in bumped.items():
            self._remember_version(counter, value, now)
        self._local.tags_bumped()

    # -- the bus -----------------------------------------------------------------------------

    def _attach_bus(self, bus: AsyncInvalidationBus | None) -> None:
        self.bus = bus
        self._bus_pending = bus is not None
        if bus is not None:
            bus.subscribe(INVALIDATE, self._on_invalidation)
            bus.on_disconnect(self._suspend_l1)
            bus.on_reconnect(self.flush_local)

    async def _ensure_bus(self) -> None:
        if self._bus_pending and self.bus is not None:
            self._bus_pending = False
            try:
                await self.bus.start()
            except CacheUnavailableError as exc:
                self._bus_pending = True
                log.warning("cache %s: the invalidation bus is not available yet: %s", self.stats.name, exc)

    async def _announce(self, keys: list[str], versions: dict[str, int], lsn: int | None = None) -> None:
        """Tell every process: drop these keys' L1 copies (their change's ``lsn`` is the
        floor of an L1-only cache's fills), take these versions."""
        if self.bus is None:
            return
        await self._ensure_bus()
        message: dict[str, Any] = {"keys": keys, "versions": versions}
        if keys:
            message["lsn"] = lsn
            message["ttl"] = self.tombstone_ttl
        try:
            await self.bus.publish(INVALIDATE, message)
        except CacheUnavailableError as exc:
            # The L2 change happened; other processes' L1 copies live at most their l1_ttl.
            log.warning("cache %s: invalidation not announced on the bus: %s", self.stats.name, exc)

    def _on_invalidation(self, event: str, payload: Any) -> None:
        if isinstance(payload, dict) and payload.get("flush"):
            self.flush_local()
            return
        keys = payload.get("keys", []) if isinstance(payload, dict) else []
        versions = payload.get("versions", {}) if isinstance(payload, dict) else {}
        if keys:
            lsn = payload.get("lsn")
            ttl = payload.get("ttl")
            now = self._monotonic()
            until = now + (float(ttl) if isinstance(ttl, int | float) else self.tombstone_ttl)
            self._local.mark(list(keys), lsn if isinstance(lsn, int) else None, until, now)
        if self.l1 is not None and keys:
            self.l1.delete_many(keys)
        if versions:
            self._heard_bumps({str(c): int(v) for c, v in versions.items()}, self._monotonic())

    async def flush_everywhere(self) -> None:
        """Drop every process's L1 copies and cached versions (this one now, the others
        when the bus delivers). L2 entries are not touched."""
        self.flush_local()
        if self.bus is not None:
            await self._ensure_bus()
            try:
                await self.bus.publish(INVALIDATE, {"flush": True})
            except CacheUnavailableError as exc:
                log.warning("cache %s: flush not announced on the bus: %s", self.stats.name, exc)

    def flush_local(self) -> None:
        """Drop every L1 copy and cached version of this process (after a bus gap), and
        use the L1 again if a lost subscription had set it aside."""
        if self._l1_suspended is not None:
            self.l1, self._l1_suspended = self._l1_suspended, None
            log.warning("cache %s: the invalidation bus is back: the in-process tier is used again", self.stats.name)
        self._local.flush()
        if self.l1 is not None:
            self.l1.clear()
        self._versions.clear()
        self.stats.l1.flushes += 1

    def _suspend_l1(self) -> None:
        """The bus is lost: this process would not hear another's invalidation, so an L1
        copy could stay stale for its whole L1 TTL. Until the bus is back the cache runs
        without its L1 (``cache.l1`` is None meanwhile) and reads go to the L2 or loader."""
        self._local.flush()
        if self.l1 is None:
            return
        self.l1.clear()
        self._l1_suspended, self.l1 = self.l1, None
        self.stats.l1.flushes += 1
        log.warning("cache %s: the invalidation bus is lost: the in-process tier is set aside", self.stats.name)
