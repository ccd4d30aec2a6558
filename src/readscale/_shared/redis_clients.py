"""The one place readscale makes a redis-py connection pool from :class:`RedisSettings`,
as twins (asyncio and sync): a plain server's, or, for a ``redis+sentinel://`` URL, a
``SentinelConnectionPool`` that asks the sentinels for the current master on every new
connection, so the cache backend, the write-behind queue and flusher and the invalidation
bus all follow a failover (a connection to the old master fails once, the retry or the
next connection reaches the new one).
"""

from __future__ import annotations

from typing import Any

from readscale.settings import RedisSettings


def async_redis_pool(settings: RedisSettings, **overrides: Any) -> Any:
    """An asyncio connection pool for ``settings`` (``overrides`` win over its kwargs)."""
    import redis.asyncio as redis_asyncio

    kwargs = {**settings.client_kwargs(), **overrides}
    if settings.sentinel:
        from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool

        class Pool(SentinelConnectionPool):
            """Closing the pool also closes its connections to the sentinels."""

            async def disconnect(self, inuse_connections: bool = True) -> None:
                await super().disconnect(inuse_connections)
                for sentinel in self.sentinel_manager.sentinels:
                    await sentinel.aclose()

        manager = Sentinel(settings.sentinels, sentinel_kwargs=settings.sentinel_kwargs())
        return Pool(settings.service_name, manager, **kwargs)  # type: ignore[no-untyped-call]
    return redis_asyncio.ConnectionPool.from_url(settings.url, **kwargs)


def sync_redis_pool(settings: RedisSettings, **overrides: Any) -> Any:
    """The sync twin of :func:`async_redis_pool`."""
    import redis

    kwargs = {**settings.client_kwargs(), **overrides}
    if settings.sentinel:
        from redis.sentinel import Sentinel, SentinelConnectionPool

        class Pool(SentinelConnectionPool):
            """Closing the pool also closes its connections to the sentinels."""

            def disconnect(self, inuse_connections: bool = True) -> None:
                super().disconnect(inuse_connections)
                for sentinel in self.sentinel_manager.sentinels:
                    sentinel.close()

        manager = Sentinel(settings.sentinels, sentinel_kwargs=settings.sentinel_kwargs())
        return Pool(settings.service_name, manager, **kwargs)  # type: ignore[no-untyped-call]
    return redis.ConnectionPool.from_url(settings.url, **kwargs)


def async_redis_client(settings: RedisSettings, *, retry: Any = None, **overrides: Any) -> Any:
    """An asyncio client on its own pool (:func:`async_redis_pool`)."""
    import redis.asyncio as redis_asyncio

    # from_pool: closing the client closes its pool (as from_url's does).
    return redis_asyncio.Redis.from_pool(
        async_redis_pool(settings, **overrides, **({} if retry is None else {"retry": retry}))
    )


def sync_redis_client(settings: RedisSettings, *, retry: Any = None, **overrides: Any) -> Any:
    """The sync twin of :func:`async_redis_client`."""
    import redis

    return redis.Redis.from_pool(sync_redis_pool(settings, **overrides, **({} if retry is None else {"retry": retry})))
