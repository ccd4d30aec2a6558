"""The cache's versions: tags and versioned namespaces as version counters in the L2.

A part of :class:`AsyncCache` (internal; docs/architecture.md §5). It owns the version
cache of this process (``{counter: (value, seen_at)}``), the key prefix and how long a
version read from the L2 is trusted.

- A tag is a counter in the L2 (``<prefix>ver:tag:<name>``). An entry records the
  versions of its tags when its fill starts; bumping a tag makes every entry filled under
  an older version stale. No set of keys per tag is kept, and counters are single keys,
  so this works the same on Redis Cluster.
- A versioned namespace puts its counter's value in every physical key
  (``<prefix><ns>:v<n>:<key>``): bumping it makes all old keys unreachable at once; they
  die by their TTL.
- Each process caches the counters it has read. Bumps are published on the bus (the
  coherence part), which updates other processes' copies; when the bus reconnects
  everything local is flushed. Without a bus, counters are re-read after
  ``version_ttl`` seconds (0: on every read). Counters are read only after the bus is
  subscribed (``before_read``): a bump between the read and the subscription would be
  missed otherwise.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence

from readscale._async.cache.l2 import AsyncL2Gate
from readscale._core.cache.keys import physical_key, validate_key
from readscale._core.cache.policy import CachePolicy
from readscale.errors import CacheUnavailableError, ConfigurationError


class AsyncVersions:
    """The version counters of tags and namespaces, and this process's copies of them."""

    def __init__(
        self,
        l2: AsyncL2Gate,
        *,
        prefix: str,
        version_ttl: float,
        tombstone_ttl: float,
        monotonic: Callable[[], float],
        before_read: Callable[[], Awaitable[None]],
    ) -> None:
        self.l2 = l2
        #: Prepended to every key and counter the cache stores.
        self.prefix = prefix
        #: How long a version read from the L2 is trusted here (the bus updates it sooner).
        self.version_ttl = version_ttl
        #: False while the bus is lost: local copies are not used (see ``distrust``).
        self.trusted = True
        #: A bump raises its counter's floor for this long (the tombstones' life).
        self.tombstone_ttl = tombstone_ttl
        self._monotonic = monotonic
        self._before_read = before_read
        #: The versions this process knows: ``{counter: (value, seen_at)}``.
        self.known: dict[str, tuple[int, float]] = {}

    # -- names -----------------------------------------------------------------------------

    def tag_counter(self, tag: str) -> str:
        return f"{self.prefix}ver:tag:{tag}"

    def namespace_counter(self, namespace: str) -> str:
        return f"{self.prefix}ver:ns:{namespace}"

    def physical(self, key: str, policy: CachePolicy) -> str:
        """The stored key; for a versioned namespace its version must be known locally."""
        key = validate_key(key)
        if not policy.versioned:
            return physical_key(self.prefix, policy.namespace, key)
        counter = self.namespace_counter(policy.namespace)
        local = self.known.get(counter)
        if local is None:
            raise ConfigurationError(
                f"the version of namespace {policy.namespace!r} is not loaded yet; use the async "
                "cache methods (they load it) before building its keys"
            )
        return f"{self.prefix}{policy.namespace}:v{local[0]}:{key}"

    async def pkey(self, key: str, policy: CachePolicy) -> str:
        """The stored key, loading the namespace's version first if it is versioned."""
        if policy.versioned:
            await self.load([self.namespace_counter(policy.namespace)], force=False)
        return self.physical(key, policy)

    # -- the local version cache ---------------------------------------------------------

    def local(self, counters: Iterable[str]) -> list[int] | None:
        """Versions known locally and still valid, or None if any is missing or too old
        (or while the bus is lost: no bump from another process would reach them)."""
        if not self.trusted:
            return None
        now = self._monotonic()
        out = []
        for counter in counters:
            found = self.known.get(counter)
            if found is None or now - found[1] > self.version_ttl:
                return None
            out.append(found[0])
        return out

    async def load(self, counters: Sequence[str], *, force: bool) -> list[int]:
        """The current values of ``counters`` (from the local copies unless ``force``)."""
        if not force:
            local = self.local(counters)
            if local is not None:
                return local
        backend = self.l2.backend
        if backend is None:
            return [0] * len(counters)
        await self._before_read()
        values = await backend.get_counters(counters)
        now = self._monotonic()
        for counter, value in zip(counters, values, strict=True):
            self.remember(counter, value, now)
        return values

    def remember(self, counter: str, value: int, now: float) -> None:
        known = self.known.get(counter)
        # Never step back: a late reply must not undo a newer bump seen on the bus.
        if known is None or value >= known[0]:
            self.known[counter] = (value, now)
        else:
            self.known[counter] = (known[0], now)

    def clear(self) -> None:
        """Forget every version (after a bus gap, or a counter the server lost)."""
        self.known.clear()

    def distrust(self) -> None:
        """The bus is lost: versions are read from the L2 on every read until it is back.
        A copy kept for ``version_ttl`` would otherwise hide a bump made meanwhile by a
        process whose message cannot arrive, and a tagged L2 entry would be served as
        current (found by the consistency harness, seed 4, the bus down)."""
        self.trusted = False
        self.known.clear()

    def trust(self) -> None:
        """The bus is back (everything local was flushed): local copies may be used again."""
        self.known.clear()
        self.trusted = True

    # -- tags ------------------------------------------------------------------------------

    async def tag_versions(self, tags: Sequence[str]) -> tuple[tuple[str, int], ...]:
        """The current versions of ``tags``, recorded in an entry when its fill starts."""
        if not tags:
            return ()
        values = await self.load([self.tag_counter(t) for t in tags], force=False)
        return tuple(zip(tags, values, strict=True))

    def tags_current_locally(self, tags: tuple[tuple[str, int], ...]) -> bool:
        """True when every tag still has the version the entry was filled under, as known
        locally; an unknown version counts as changed (the caller rechecks in L2)."""
        current = self.local(self.tag_counter(name) for name, _ in tags)
        return current is not None and all(c == v for c, (_, v) in zip(current, tags, strict=True))

    async def tags_current(self, tags: tuple[tuple[str, int], ...]) -> bool:
        """Whether every tag still has the entry's version (read from the L2 if unsure)."""
        if not tags:
            return True
        if self.tags_current_locally(tags):
            return True
        try:
            current = await self.load([self.tag_counter(name) for name, _ in tags], force=True)
        except CacheUnavailableError:
            return False
        return all(c == v for c, (_, v) in zip(current, tags, strict=True))

    # -- bumps -----------------------------------------------------------------------------

    async def bump(self, counters: list[str], lsn: int | None) -> tuple[dict[str, int], dict[str, int]]:
        """Bump version counters and raise their floors to the change's ``lsn`` (None:
        unknown), so a fill under them reads at or past it (readscale._core.cache.fill).
        Returns the new values and the ones known here before the bump (for
        :meth:`went_back`); the caller remembers and announces them."""
        backend = self.l2.backend
        assert backend is not None
        before = {c: self.known[c][0] for c in counters if c in self.known}
        values = await backend.bump_counters(counters, lsn=lsn, floor_ttl=self.tombstone_ttl)
        return dict(zip(counters, values, strict=True)), before

    def went_back(self, bumped: dict[str, int], before: dict[str, int] | None = None) -> bool:
        """Whether a bumped counter is not above the version known here: the server lost
        it (a restart without persistence, an eviction). ``before``: what this process
        knew when it sent its own bump (a bump heard on the bus meanwhile is not a loss);
        None for a bump heard from another process, judged against the versions known
        now (two processes' bumps crossing on the bus cost a flush, never a stale read)."""
        known = before if before is not None else {c: v for c, (v, _) in self.known.items() if c in bumped}
        return any(c in known and value <= known[c] for c, value in bumped.items())
