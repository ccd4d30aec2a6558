"""A read that declares a type never returns a value of another class (issue 15): a value
put under the key untyped (or as another type) is a miss to it, from the L1 and from the
L2 alike, and so is one a codec that cannot validate (signed pickle) brings back.

Written async; ``scripts/unasync.py`` generates the sync twin in ``tests/_sync``.
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from readscale import MemoryStore, RedisSettings
from readscale._async.backends.memory import AsyncMemoryBackend
from readscale._async.backends.redis import AsyncRedisBackend
from readscale._async.cache.cache import AsyncCache
from readscale._core.cache.novalue import NO_VALUE
from readscale._core.cache.policy import CachePolicy
from readscale.codecs import Codec, JsonCodec, SignedPickleCodec
from readscale.errors import UnserializableValueError
from readscale.testing.clock import FakeClock

POLICY = CachePolicy(name="typed", ttl=60.0, jitter=0.0, swr=0.0, sie=0.0, early_refresh=0.0, l1_ttl=10.0)
SECRET = "s" * 32


@dataclasses.dataclass
class User:
    id: int
    name: str


class Loader:
    def __init__(self, value: Any) -> None:
        self.value = value
        self.calls = 0

    async def __call__(self) -> Any:
        self.calls += 1
        return self.value


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.stack)])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    if request.param == "memory":
        inner: Any = AsyncMemoryBackend(max_entries=1_000)
    else:
        inner = AsyncRedisBackend(RedisSettings(url=request.getfixturevalue("redis_url")))
    yield inner
    await inner.close()


def make_cache(backend: Any, *, l1: bool, codec: Codec | None = None) -> AsyncCache:
    clock = FakeClock()
    return AsyncCache(
        backend,
        l1=MemoryStore(1000, clock=clock) if l1 else None,
        policy=POLICY,
        codec=codec or JsonCodec(),
        prefix=f"t{uuid.uuid4().hex[:8]}:",
        clock=clock,
        monotonic=clock,
        rng=lambda: 0.5,
    )


@pytest.mark.anyio
@pytest.mark.parametrize("l1", [True, False], ids=["l1", "l2-only"])
@pytest.mark.parametrize("codec", ["json", "pickle"])
async def test_a_value_of_another_class_is_a_miss_under_a_declared_type(backend: Any, l1: bool, codec: str) -> None:
    cache = make_cache(backend, l1=l1, codec=SignedPickleCodec(SECRET) if codec == "pickle" else None)
    for key, value in {"n": 5, "m": 7, "l": {"a": 1}, "d": {"id": 1, "name": "Ada"}}.items():
        await cache.set(key, value)

    assert await cache.get("n", type=User) is NO_VALUE
    assert await cache.get("m", type=User) is NO_VALUE
    assert await cache.get("l", type=list[User]) is NO_VALUE
    if codec == "pickle":  # JSON decodes the dict's bytes into a User; pickle brings back the dict
        assert await cache.get("d", type=User) is NO_VALUE
    assert await cache.get_many(["n", "l"], type=User) == {}
    load = Loader(User(2, "Bo"))
    assert await cache.get_or_load("n", load, type=User) == User(2, "Bo")
    assert load.calls == 1
    assert await cache.get_or_load_many(["l"], _users, type=User) == {"l": User(0, "l")}
    # An untyped reader still sees what was put (the L1 and the L2 agree).
    assert await cache.get("m") == 7


async def _users(keys: list[str]) -> dict[str, User]:
    return {k: User(0, k) for k in keys}


@pytest.mark.anyio
async def test_an_l1_copy_of_another_class_is_counted_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    cache = make_cache(AsyncMemoryBackend(max_entries=1_000), l1=True)
    await cache.set("n", 5)
    with caplog.at_level(logging.WARNING, logger="readscale.cache"):
        for _ in range(3):
            assert await cache.get("n", type=User) is NO_VALUE
    assert cache.stats.l1.wrong_type == 3
    events = [r for r in caplog.records if getattr(r, "event", None) == "cache_wrong_type"]
    assert len(events) == 1
    assert (events[0].found, events[0].declared) == ("int", "User")  # type: ignore[attr-defined]
    assert await cache.get("n") == 5  # an untyped read is not checked


@pytest.mark.anyio
async def test_a_typed_pickle_set_refuses_a_value_of_another_class() -> None:
    cache = make_cache(AsyncMemoryBackend(max_entries=1_000), l1=True, codec=SignedPickleCodec(SECRET))
    with pytest.raises(UnserializableValueError):
        await cache.set("k", {"evil": 1}, type=User)
    await cache.set("k", User(1, "Ada"), type=User)
    assert await cache.get("k", type=User) == User(1, "Ada")
