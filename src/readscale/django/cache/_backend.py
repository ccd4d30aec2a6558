"""Django's cache API (``django.core.cache.backends.base.BaseCache``) over readscale's own
cache, so ``cache_page``, ``{% cache %}``, cached sessions and apps built on
``django.core.cache`` (django-cachalot) read through readscale's tiers, and the same
object offers readscale's extras (``get_or_load`` with stampede protection, tags,
``invalidate_tags``).

How Django's semantics map (docs/django-cache.md has the table):

- ``timeout``: ``DEFAULT_TIMEOUT`` is the entry's ``TIMEOUT``; ``None`` keeps the value
  for :data:`FOREVER`; 0 or less expires it now (the key is deleted).
- ``get`` / ``set`` / ``get_many`` / ``delete`` / ``delete_many`` go through the
  readscale cache (its L1, its breaker: a read or a write the server misses fails open,
  logged and counted; a lost delete raises, as stale data would outlive it).
- ``add``, ``incr`` / ``decr`` and ``touch`` are atomic on the server: ``add`` is the
  server's own add (``SET NX``, memcached's ``ms MA``); ``incr``, ``decr`` and ``touch``
  read the entry and replace it only if it is still the bytes read (a compare and set),
  retried on a race. Entries keep readscale's envelope, so a value written by ``incr``
  reads back through every tier like any other.
- ``clear`` removes this cache's keys (Redis: every key under the readscale prefix and
  ``KEY_PREFIX``; memcached: ``flush_all``, as Django's memcached backends do) and this
  process's L1.
- ``close`` keeps the pooled connections (like Django's own Redis backend): the pool is
  the process's, shared by every thread's backend object.
- the async methods (``aget``...) are Django's: the sync method in a thread.
"""

from __future__ import annotations

import logging
import re
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, ClassVar, TypeVar

from django.core.cache.backends.base import (
    DEFAULT_TIMEOUT,
    BaseCache,
    CacheKeyWarning,
    InvalidCacheKey,
    memcache_key_warnings,
)
from django.core.exceptions import ImproperlyConfigured

from readscale import NO_VALUE, Cache, CachePolicy
from readscale._core.cache.freshness import storage_ttl
from readscale.django.cache._options import Options, make_codec, parse_options, shared_cache
from readscale.errors import CacheUnavailableError

log = logging.getLogger("readscale.django.cache")

#: What Django's ``memcache_key_warnings`` looks for, in one C-speed search: a key
#: without any of these (and short enough) needs no Python loop over its characters.
_KEY_TROUBLE = re.compile(r"[\x00-\x20\x7f]")
_KEY_MAX = 250

T = TypeVar("T")

#: How long ``timeout=None`` keeps a value: five years (memcached takes a longer TTL as a
#: Unix time, and readscale's entries carry a finite freshness).
FOREVER = 5 * 365 * 24 * 3600.0

#: How many times ``incr`` / ``touch`` retry a compare and set another writer beat.
SWAP_ATTEMPTS = 100


class ReadscaleCache(BaseCache):  # type: ignore[misc]  # django has no types
    """The common part of :class:`RedisCache`, :class:`RedisClusterCache` and
    :class:`MemcachedCache` (Django instantiates those, never this one)."""

    kind: ClassVar[str] = ""

    def __init__(self, server: str | Sequence[str], params: dict[str, Any]) -> None:
        super().__init__(params)
        name = f"readscale.django.cache.{type(self).__name__}"
        if isinstance(server, str):
            servers = tuple(s.strip() for s in server.replace(",", ";").split(";") if s.strip())
        else:
            servers = tuple(server)
        if not servers:
            raise ImproperlyConfigured(f"{name}: LOCATION names no server")
        self._servers = servers
        self.options: Options = parse_options(name, params.get("OPTIONS"))
        self._codec = make_codec(name, self.options)
        self._shared: Cache | None = None
        self._policies: dict[float, CachePolicy] = {}
        self._base_policy = CachePolicy(name="django", jitter=0.0, on_miss=self.options.on_miss)

    # -- the readscale cache underneath ----------------------------------------------------

    @property
    def readscale(self) -> Cache:
        """The readscale cache this backend reads and writes through (one per process and
        configuration): its ``stats``, ``l1``, ``l2_available``..."""
        cache = self._shared
        if cache is None:
            cache = self._shared = shared_cache(self.kind, self._servers, self.options, self.build_backend)
        return cache

    def build_backend(self, servers: tuple[str, ...], client: dict[str, Any]) -> Any:
        """The sync readscale backend for ``LOCATION`` (``OPTIONS['CLIENT']``: its settings)."""
        raise NotImplementedError

    def _policy(self, ttl: float) -> CachePolicy:
        policy = self._policies.get(ttl)
        if policy is None:
            policy = self._policies[ttl] = self._base_policy.with_(ttl=ttl)
        return policy

    def _ttl(self, timeout: Any) -> float | None:
        """Seconds to keep a value for Django's ``timeout``; None: expire it now."""
        if timeout is DEFAULT_TIMEOUT:
            timeout = self.default_timeout
        if timeout is None:
            return FOREVER
        if timeout <= 0:
            return None
        return float(timeout)

    # -- Django's cache API ------------------------------------------------------------------

    def validate_key(self, key: str) -> None:
        """Django's key warnings (``CacheKeyWarning``), checked at C speed first: the
        per-character loop runs only for a key that has something to warn about."""
        if len(key) > _KEY_MAX or _KEY_TROUBLE.search(key) is not None:
            for warning in memcache_key_warnings(key):
                warnings.warn(warning, CacheKeyWarning, stacklevel=2)

    def get(self, key: Any, default: Any = None, version: int | None = None) -> Any:
        key = self.make_and_validate_key(key, version=version)
        value = self.readscale.get(key, policy=self._base_policy, codec=self._codec)
        return default if value is NO_VALUE else value

    def set(
        self,
        key: Any,
        value: Any,
        timeout: Any = DEFAULT_TIMEOUT,
        version: int | None = None,
        *,
        tags: Sequence[str] = (),
    ) -> None:
        """Django's ``set``; ``tags``: readscale tags (``invalidate_tags`` makes it stale)."""
        key = self.make_and_validate_key(key, version=version)
        ttl = self._ttl(timeout)
        if ttl is None:
            self.readscale.delete(key)
            return
        self.readscale.set(key, value, policy=self._policy(ttl), codec=self._codec, tags=tags)

    def add(self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None) -> bool:
        key = self.make_and_validate_key(key, version=version)
        ttl = self._ttl(timeout)
        cache = self.readscale
        pkey, raw, keep = cache.prepare_entry(key, value, policy=self._policy(ttl or 1.0), codec=self._codec)
        try:
            added = bool(cache.backend.add(pkey, raw, keep)) or self._replace_dead(pkey, raw, keep)  # type: ignore[union-attr]
        except CacheUnavailableError as exc:  # fail open: as if another process had added it
            log.warning(
                "django cache %s: add of %s failed open: %s",
                self.kind,
                key,
                exc,
                extra={"event": "django_cache_failed_open", "backend": self.kind, "key": str(key), "reason": str(exc)},
            )
            return False
        if added:
            cache.drop_copies(key)
            if ttl is None:
                cache.delete(key)
        return added

    def _replace_dead(self, pkey: str, raw: bytes, keep: float) -> bool:
        """``add`` found an item: store ``raw`` anyway if that item is no value for a
        reader (expired by its entry's own clock while the server still keeps it, as
        memcached does for up to a second, or unreadable), by a compare and set."""
        backend: Any = self.readscale.backend
        old = backend.get(pkey)
        if old is None:
            return bool(backend.add(pkey, raw, keep))
        found = self.readscale.entries.decode(pkey, old, self._base_policy, self._codec)
        if found is not None and found[1].created_at + found[1].fresh_ttl > time.time():
            return False
        return bool(backend.swap(pkey, old, raw, keep))

    def get_many(self, keys: Iterable[Any], version: int | None = None) -> dict[Any, Any]:
        names = {self.make_and_validate_key(key, version=version): key for key in keys}
        if not names:
            return {}
        found = self.readscale.get_many(list(names), policy=self._base_policy, codec=self._codec)
        return {names[k]: v for k, v in found.items()}

    def set_many(
        self, data: Mapping[Any, Any], timeout: Any = DEFAULT_TIMEOUT, version: int | None = None
    ) -> list[Any]:
        """Django's ``set_many``, in one round trip per server. Returns the keys not stored
        (every key when the server cannot be reached: the failure is logged, not raised)."""
        keys = {self.make_and_validate_key(key, version=version): key for key in data}
        if not keys:
            return []
        ttl = self._ttl(timeout)
        cache = self.readscale
        if ttl is None:
            cache.delete_many(list(keys))
            return []
        policy = self._policy(ttl)
        codec = self._codec
        items = [cache.prepare_entry(k, data[name], policy=policy, codec=codec) for k, name in keys.items()]
        try:
            cache.backend.set_many(items)  # type: ignore[union-attr]
        except CacheUnavailableError as exc:
            log.warning(
                "django cache %s: set_many of %d keys failed open: %s",
                self.kind,
                len(items),
                exc,
                extra={
                    "event": "django_cache_failed_open",
                    "backend": self.kind,
                    "count": len(items),
                    "reason": str(exc),
                },
            )
            return list(keys.values())
        finally:
            for k in keys:
                cache.drop_copies(k)
        return []

    def delete(self, key: Any, version: int | None = None) -> bool:
        return self.readscale.delete(self.make_and_validate_key(key, version=version))

    def delete_many(self, keys: Iterable[Any], version: int | None = None) -> None:
        names = [self.make_and_validate_key(key, version=version) for key in keys]
        if names:
            self.readscale.delete_many(names)

    def incr(self, key: Any, delta: int = 1, version: int | None = None) -> Any:
        """Add ``delta`` to the stored number, atomically (a compare and set on the
        server, retried on a race). ``ValueError`` when the key is missing."""
        key = self.make_and_validate_key(key, version=version)
        return self._swap(key, lambda value, meta: (value + delta, meta), missing=ValueError(f"Key '{key}' not found"))

    def touch(self, key: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None) -> bool:
        key = self.make_and_validate_key(key, version=version)
        ttl = self._ttl(timeout)
        if ttl is None:
            return self.readscale.delete(key)
        entries = self.readscale.entries
        policy = self._policy(ttl)

        def renew(value: Any, meta: Any) -> tuple[Any, Any]:
            return value, entries.meta(value, policy, 0.0, meta.tags)

        return self._swap(key, renew, missing=None) is not NO_VALUE

    def _swap(self, key: str, change: Callable[[Any, Any], tuple[Any, Any]], missing: Exception | None) -> Any:
        """Replace ``key``'s value with ``change(value, meta)`` if nobody wrote it meanwhile.
        A missing key raises ``missing`` (or is ``NO_VALUE`` when None)."""
        cache = self.readscale
        backend: Any = cache.backend
        entries = cache.entries
        pkey = cache.key(key)
        for _ in range(SWAP_ATTEMPTS):
            raw = backend.get(pkey)
            found = entries.decode(pkey, raw, self._base_policy, self._codec) if raw is not None else None
            now = time.time()
            if found is None or found[1].created_at + found[1].fresh_ttl <= now:
                if missing is not None:
                    raise missing
                return NO_VALUE
            value, meta = change(*found)
            new = entries.encode(pkey, value, meta, self._codec)
            if backend.swap(pkey, raw, new, storage_ttl(meta, now)):
                cache.drop_copies(key)
                return value
        raise CacheUnavailableError(
            f"django cache {self.kind}: {key} changed {SWAP_ATTEMPTS} times while being updated", backend=self.kind
        )

    def clear(self) -> None:
        cache = self.readscale
        self._clear_server(cache)
        cache.flush_everywhere() if cache.bus is not None else cache.flush_local()

    def _clear_server(self, cache: Cache) -> None:
        raise NotImplementedError

    def close(self, **kwargs: Any) -> None:
        """Kept open: the connections are pooled for the whole process (Django calls this
        at the end of every request)."""

    # -- readscale's extras -----------------------------------------------------------------

    def get_or_load(
        self,
        key: Any,
        loader: Callable[[], T],
        timeout: Any = DEFAULT_TIMEOUT,
        version: int | None = None,
        *,
        tags: Sequence[str] = (),
    ) -> T:
        """The cached value of ``key``, or ``loader()``'s, stored; concurrent misses share
        one load (in this process, and across processes with ``ON_MISS`` ``"wait"``).
        Unlike Django's ``get_or_set``, a dead cache server never reaches the caller."""
        key = self.make_and_validate_key(key, version=version)
        ttl = self._ttl(timeout)
        if ttl is None:
            self.readscale.delete(key)
            return loader()
        return self.readscale.get_or_load(key, loader, policy=self._policy(ttl), codec=self._codec, tags=tags)

    def invalidate_tags(self, *tags: str) -> dict[str, int]:
        """Make every entry stored with one of ``tags`` stale, in every process."""
        return self.readscale.invalidate_tags(*tags)


class RedisCache(ReadscaleCache):
    """``BACKEND: "readscale.django.cache.RedisCache"``, ``LOCATION``: one Redis URL."""

    kind = "redis"

    def build_backend(self, servers: tuple[str, ...], client: dict[str, Any]) -> Any:
        from readscale.backends import RedisBackend, RedisClusterBackend
        from readscale.settings import RedisSettings

        cls = RedisClusterBackend if self.kind == "redis-cluster" else RedisBackend
        return cls(RedisSettings(url=servers[0], **client))

    def _clear_server(self, cache: Cache) -> None:
        cache.backend.clear(cache.prefix + self.key_prefix)  # type: ignore[union-attr]


class RedisClusterCache(RedisCache):
    """``BACKEND: "readscale.django.cache.RedisClusterCache"``, ``LOCATION``: the URL of
    one node of the cluster (the others are discovered)."""

    kind = "redis-cluster"


class MemcachedCache(ReadscaleCache):
    """``BACKEND: "readscale.django.cache.MemcachedCache"``, ``LOCATION``: ``host:port``,
    or several (a list, or separated by ``;`` or ``,``). Keys memcached cannot hold raise
    ``InvalidCacheKey``, as with Django's memcached backends."""

    kind = "memcached"

    def build_backend(self, servers: tuple[str, ...], client: dict[str, Any]) -> Any:
        from readscale.backends import MemcachedBackend

        return MemcachedBackend(addresses=list(servers), **client)

    def validate_key(self, key: str) -> None:
        full = self.readscale.prefix + key
        if len(full) > _KEY_MAX or _KEY_TROUBLE.search(full) is not None:
            for warning in memcache_key_warnings(full):
                raise InvalidCacheKey(warning)

    def _clear_server(self, cache: Cache) -> None:
        cache.backend.flush_all()  # type: ignore[union-attr]
