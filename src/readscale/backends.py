"""Cache backends, async and sync: pick the one for your cache server.

    from readscale.backends import AsyncRedisBackend, RedisBackend
    backend = AsyncRedisBackend(RedisSettings(url="redis://127.0.0.1:6379/0"))

Each speaks the protocol in ``readscale._async.backends.base`` and passes the contract
suite in ``readscale.testing.contract`` against a real server. Each backend's module is
imported when its name is first asked for, so the Memcached and in-process backends need
no redis-py (``readscale._shared.lazy``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from readscale._shared.lazy import lazy_exports

if TYPE_CHECKING:
    from readscale._async.backends.base import AsyncBackend
    from readscale._async.backends.counting import AsyncCountingBackend
    from readscale._async.backends.memcached import AsyncMemcachedBackend
    from readscale._async.backends.memory import AsyncMemoryBackend
    from readscale._async.backends.redis import AsyncRedisBackend, AsyncRedisClusterBackend
    from readscale._core.cache.lease import LeaseResult
    from readscale._sync.backends.base import Backend
    from readscale._sync.backends.counting import CountingBackend
    from readscale._sync.backends.memcached import MemcachedBackend
    from readscale._sync.backends.memory import MemoryBackend
    from readscale._sync.backends.redis import RedisBackend, RedisClusterBackend

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "AsyncBackend": "readscale._async.backends.base",
        "AsyncCountingBackend": "readscale._async.backends.counting",
        "AsyncMemcachedBackend": "readscale._async.backends.memcached",
        "AsyncMemoryBackend": "readscale._async.backends.memory",
        "AsyncRedisBackend": "readscale._async.backends.redis",
        "AsyncRedisClusterBackend": "readscale._async.backends.redis",
        "LeaseResult": "readscale._core.cache.lease",
        "Backend": "readscale._sync.backends.base",
        "CountingBackend": "readscale._sync.backends.counting",
        "MemcachedBackend": "readscale._sync.backends.memcached",
        "MemoryBackend": "readscale._sync.backends.memory",
        "RedisBackend": "readscale._sync.backends.redis",
        "RedisClusterBackend": "readscale._sync.backends.redis",
    },
)

__all__ = [
    "AsyncBackend",
    "AsyncCountingBackend",
    "AsyncMemcachedBackend",
    "AsyncMemoryBackend",
    "AsyncRedisBackend",
    "AsyncRedisClusterBackend",
    "Backend",
    "CountingBackend",
    "LeaseResult",
    "MemcachedBackend",
    "MemoryBackend",
    "RedisBackend",
    "RedisClusterBackend",
]
