"""readscale: the whole layered read path for Python services.

browser cache -> edge cache -> application cache (in-process + Redis / Redis Cluster /
Memcached) -> read replicas (read-your-writes by WAL position) -> primary.

``import readscale`` works with no extras installed (each backend and the routers import
their client library when first asked for, ``readscale._shared.lazy``); each integration
imports its framework only when used.

The application cache::

    from readscale import AsyncCache, CATALOG, MemoryStore
    from readscale.backends import AsyncRedisBackend

    cache = AsyncCache(AsyncRedisBackend(), l1=MemoryStore(10_000), policy=CATALOG)
    product = await cache.get_or_load(f"product:{pid}", lambda: load_product(pid))
"""

from typing import TYPE_CHECKING

from readscale._async.cache.bus import AsyncInvalidationBus
from readscale._async.cache.cache import AsyncCache
from readscale._async.cache.cached import AsyncCachedFunction
from readscale._build import build_info
from readscale._core.cache.breaker import BreakerSettings
from readscale._core.cache.novalue import NO_VALUE
from readscale._core.cache.policy import (
    BALANCE,
    CATALOG,
    PROFILE,
    STATIC_ASSETS,
    TRENDING,
    CachePolicy,
    OnMiss,
    Tier,
)
from readscale._core.replicas.causal import TokenSigner
from readscale._core.replicas.settings import LATEST, SESSION, BoundedStaleness, ReplicaSettings, TimeWindow
from readscale._shared.cache.stats import CacheStats
from readscale._shared.lazy import lazy_exports
from readscale._shared.replicas.causal_context import causal_context, dump_token, load_token
from readscale._sync.cache.bus import InvalidationBus
from readscale._sync.cache.cache import Cache
from readscale._sync.cache.cached import CachedFunction
from readscale.l1 import MemoryStore
from readscale.settings import PostgresSettings, RedisSettings

if TYPE_CHECKING:
    from readscale._async.replicas.router import AsyncReplicaRouter
    from readscale._sync.replicas.router import ReplicaRouter

__version__ = "0.1.0"

# What a user needs on day one (docs/architecture.md §7.5); every other public name has
# one home in its feature's module: errors in readscale.errors, codecs in
# readscale.codecs, HTTP policies in readscale.http, collectors in readscale.metrics.
__all__ = [
    "BALANCE",
    "CATALOG",
    "LATEST",
    "NO_VALUE",
    "PROFILE",
    "SESSION",
    "STATIC_ASSETS",
    "TRENDING",
    "AsyncCache",
    "AsyncCachedFunction",
    "AsyncInvalidationBus",
    "AsyncReplicaRouter",
    "BoundedStaleness",
    "BreakerSettings",
    "Cache",
    "CachePolicy",
    "CacheStats",
    "CachedFunction",
    "InvalidationBus",
    "MemoryStore",
    "OnMiss",
    "PostgresSettings",
    "RedisSettings",
    "ReplicaRouter",
    "ReplicaSettings",
    "Tier",
    "TimeWindow",
    "TokenSigner",
    "__version__",
    "build_info",
    "causal_context",
    "dump_token",
    "load_token",
]


# The routers need psycopg: loaded only when asked for.
__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "AsyncReplicaRouter": "readscale._async.replicas.router",
        "ReplicaRouter": "readscale._sync.replicas.router",
    },
)
