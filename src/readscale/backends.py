"""Cache backends, async and sync: pick the one for your cache server.

    from readscale.backends import AsyncRedisBackend, RedisBackend
    backend = AsyncRedisBackend(RedisSettings(url="redis://127.0.0.1:6379/0"))

Each speaks the protocol in ``readscale._async.backends.base`` and passes the contract
suite in ``readscale.testing.contract`` against a real server.
"""

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
