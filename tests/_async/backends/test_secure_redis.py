"""The Redis paths against a Redis that only speaks TLS and needs credentials (ACL user)."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator

import pytest

from readscale import MemoryStore, RedisSettings
from readscale._async.backends.redis import AsyncRedisBackend
from readscale._async.cache.bus import AsyncInvalidationBus
from readscale._async.cache.cache import AsyncCache
from readscale._core.cache.policy import CachePolicy
from readscale._shared.primitives.locks import async_sleep
from readscale.errors import CacheUnavailableError
from readscale.testing.contract import AsyncBackendContract

pytestmark = pytest.mark.stack


class TestAsyncSecureRedis(AsyncBackendContract):
    short_ttl = 0.2
    expiry_wait = 0.5

    @pytest.fixture
    async def backend(self, secure_redis_settings: RedisSettings) -> AsyncIterator[AsyncRedisBackend]:
        backend = AsyncRedisBackend(secure_redis_settings, max_value_size=64 * 1024)
        yield backend
        await backend.close()


@pytest.mark.anyio
async def test_cache_and_bus_work_over_tls_with_an_acl_user(secure_redis_settings: RedisSettings) -> None:
    prefix = f"tls{uuid.uuid4().hex[:6]}:"
    policy = CachePolicy(name="tls", ttl=60.0, l1_ttl=60.0)
    writer_bus = AsyncInvalidationBus(secure_redis_settings)
    reader_bus = AsyncInvalidationBus(secure_redis_settings)
    writer = AsyncCache(AsyncRedisBackend(secure_redis_settings), bus=writer_bus, policy=policy, prefix=prefix)
    reader = AsyncCache(
        AsyncRedisBackend(secure_redis_settings), l1=MemoryStore(10), bus=reader_bus, policy=policy, prefix=prefix
    )
    versions = iter(["v1", "v2"])

    async def load() -> str:
        return next(versions)

    assert await reader.get_or_load("k", load) == "v1"
    await writer.invalidate("k")
    for _ in range(200):
        if reader_bus.stats.received:
            break
        await async_sleep(0.005)
    assert await reader.get_or_load("k", load) == "v2"
    assert reader.stats.l2.errors == 0
    await writer.aclose()
    await reader.aclose()


@pytest.mark.anyio
async def test_wrong_credentials_and_plain_text_are_refused_clearly(secure_redis_settings: RedisSettings) -> None:
    for settings in (
        dataclasses.replace(secure_redis_settings, password="wrong"),
        dataclasses.replace(secure_redis_settings, url=secure_redis_settings.url.replace("rediss://", "redis://")),
    ):
        backend = AsyncRedisBackend(settings)
        with pytest.raises(CacheUnavailableError) as info:
            await backend.ping()
        assert "wrong" not in str(info.value)  # the secret never appears in the error
        await backend.close()


def test_settings_never_show_the_password(secure_redis_settings: RedisSettings) -> None:
    assert secure_redis_settings.password not in repr(secure_redis_settings)
    with_url_password = RedisSettings(url="redis://:topsecret@127.0.0.1:6379/0")
    assert "topsecret" not in with_url_password.safe_url
    assert "topsecret" not in repr(with_url_password)
