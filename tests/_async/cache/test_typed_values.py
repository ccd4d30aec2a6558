"""Typed values (issue 15): a value comes back as the type the loader returned or the caller
declared, from the L1 and from every L2 backend alike; a value the codec cannot bring back
as itself is refused when it is stored, never changed on a later hit.

Written async; ``scripts/unasync.py`` generates the sync twin in ``tests/_sync``.
"""

from __future__ import annotations

import dataclasses
import datetime
import uuid
from collections.abc import AsyncIterator
from typing import Any

import attrs
import msgspec
import pydantic
import pytest

from readscale import MemoryStore, RedisSettings
from readscale._async.backends.memcached import AsyncMemcachedBackend
from readscale._async.backends.memory import AsyncMemoryBackend
from readscale._async.backends.redis import AsyncRedisBackend, AsyncRedisClusterBackend
from readscale._async.cache.cache import AsyncCache
from readscale._core.cache.novalue import NO_VALUE
from readscale._core.cache.policy import CachePolicy
from readscale.codecs import MsgpackCodec
from readscale.errors import UnserializableValueError
from readscale.testing.clock import FakeClock

POLICY = CachePolicy(name="typed", ttl=60.0, jitter=0.0, swr=0.0, sie=0.0, early_refresh=0.0, l1_ttl=10.0)
WHEN = datetime.datetime(2026, 12, 6, 1, 0, tzinfo=datetime.UTC)


class PUser(pydantic.BaseModel):
    id: int
    name: str
    joined: datetime.datetime
    roles: set[str]


@dataclasses.dataclass
class DLine:
    sku: str
    qty: int


class SOrder(msgspec.Struct):
    id: int
    lines: tuple[DLine, ...]
    tags: frozenset[str]


@attrs.define
class AProfile:
    id: int
    name: str
    seen: datetime.datetime


# (kind, value, declared type): every kind the issue names.
KINDS: list[tuple[str, Any, Any]] = [
    ("pydantic", PUser(id=1, name="Ada", joined=WHEN, roles={"admin"}), PUser),
    ("dataclass", DLine("a-1", 2), DLine),
    ("struct", SOrder(7, (DLine("a-1", 2),), frozenset({"gift"})), SOrder),
    ("attrs", AProfile(3, "Grace", WHEN), AProfile),
    ("int-keys", {1: "a", 2: "b"}, dict[int, str]),
    ("set", {1, 2, 3}, set[int]),
    ("tuple", (1, "a", None), tuple[int, str, None]),
    (
        "nested",
        {"orders": [SOrder(1, (DLine("b", 1),), frozenset())], "by_id": {4: (AProfile(4, "Lin", WHEN),)}},
        dict[str, list[SOrder] | dict[int, tuple[AProfile, ...]]],
    ),
    ("pydantic-list", [PUser(id=2, name="Bo", joined=WHEN, roles=set())], list[PUser]),
]


def shape(value: Any) -> Any:
    """The value's types all the way down (``==`` alone takes ``{"1": ...}`` for nothing
    and a tuple for a list only sometimes)."""
    if isinstance(value, dict):
        return (dict, [(shape(k), shape(v)) for k, v in value.items()])
    if isinstance(value, list | tuple):
        return (type(value), [shape(v) for v in value])
    if isinstance(value, set | frozenset):
        return (type(value), sorted(repr(shape(v)) for v in value))
    if isinstance(value, msgspec.Struct):
        return (type(value), shape(msgspec.structs.asdict(value)))
    if isinstance(value, pydantic.BaseModel):
        return (type(value), shape(dict(value)))
    if attrs.has(type(value)):
        return (type(value), shape(attrs.asdict(value, recurse=False)))
    if dataclasses.is_dataclass(value):
        return (type(value), shape(dict(vars(value))))
    return type(value)


class Loader:
    def __init__(self, value: Any) -> None:
        self.value = value
        self.calls = 0

    async def __call__(self) -> Any:
        self.calls += 1
        return self.value


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=["memory", "redis", "cluster", "memcached"])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    if request.param == "memory":
        inner: Any = AsyncMemoryBackend(max_entries=1_000)
    elif request.param == "redis":
        inner = AsyncRedisBackend(RedisSettings(url=request.getfixturevalue("redis_url")))
    elif request.param == "cluster":
        nodes = request.getfixturevalue("redis_cluster_nodes")
        inner = AsyncRedisClusterBackend(RedisSettings(url=f"redis://{nodes[0]}/0"))
    else:
        inner = AsyncMemcachedBackend(request.getfixturevalue("memcached_address"))
    yield inner
    await inner.close()


def make_cache(backend: Any, clock: FakeClock) -> AsyncCache:
    return AsyncCache(
        backend,
        l1=MemoryStore(1000, clock=clock),
        policy=POLICY,
        prefix=f"t{uuid.uuid4().hex[:8]}:",
        clock=clock,
        monotonic=clock,
        rng=lambda: 0.5,
    )


@pytest.fixture
def cache(backend: Any, clock: FakeClock) -> AsyncCache:
    return make_cache(backend, clock)


@pytest.fixture
def local_cache(clock: FakeClock) -> AsyncCache:
    """A cache whose L2 is in-process: for what is decided before anything is sent."""
    return make_cache(AsyncMemoryBackend(max_entries=1_000), clock)


def drop_l1(cache: AsyncCache) -> None:
    assert cache.l1 is not None
    cache.l1.clear()


@pytest.mark.stack
@pytest.mark.anyio
async def test_every_kind_comes_back_as_its_type_from_the_l1_and_the_l2(cache: AsyncCache) -> None:
    for kind, value, declared in KINDS:
        loader = Loader(value)
        missed = await cache.get_or_load(f"load:{kind}", loader, type=declared)
        from_l1 = await cache.get_or_load(f"load:{kind}", loader, type=declared)
        drop_l1(cache)
        from_l2 = await cache.get_or_load(f"load:{kind}", loader, type=declared)
        assert loader.calls == 1, kind
        for hit in (from_l1, from_l2):
            assert hit == missed, kind
            assert shape(hit) == shape(missed), kind

        await cache.set(f"set:{kind}", value, type=declared)
        drop_l1(cache)
        got = await cache.get(f"set:{kind}", type=declared)
        assert got == value, kind
        assert shape(got) == shape(value), kind


@pytest.mark.stack
@pytest.mark.anyio
async def test_cached_functions_decode_into_their_return_annotation(cache: AsyncCache) -> None:
    calls: list[int] = []

    @cache.cached("puser:{user_id}")
    async def load_user(user_id: int) -> PUser:
        calls.append(user_id)
        return PUser(id=user_id, name="Ada", joined=WHEN, roles={"a"})

    @cache.cached("ids:{n}")
    async def load_ids(n: int) -> dict[int, tuple[str, ...]]:
        calls.append(n)
        return {i: ("x",) * i for i in range(n)}

    for call in (lambda: load_user(5), lambda: load_ids(3)):
        first = await call()
        second = await call()
        drop_l1(cache)
        third = await call()
        assert shape(first) == shape(second) == shape(third)
    assert calls == [5, 3], "three calls, one load each"


@pytest.mark.anyio
async def test_a_pydantic_model_is_loaded_once_not_on_every_call(local_cache: AsyncCache) -> None:
    # Issue 15: the default codec refused pydantic models, so each call loaded (3 calls, 3 loads).
    loader = Loader(PUser(id=1, name="Ada", joined=WHEN, roles=set()))
    for _ in range(3):
        drop_l1(local_cache)
        assert isinstance(await local_cache.get_or_load("u:1", loader, type=PUser), PUser)
    assert loader.calls == 1
    assert local_cache.stats.loader.not_cached == 0


@pytest.mark.anyio
@pytest.mark.parametrize(("kind", "value", "declared"), [k for k in KINDS if k[0] != "pydantic-list"])
async def test_an_undeclared_value_that_would_come_back_changed_is_refused_at_set(
    local_cache: AsyncCache, kind: str, value: Any, declared: Any
) -> None:
    with pytest.raises(UnserializableValueError) as info:
        await local_cache.set("item", value)
    assert info.value.key == local_cache.key("item")
    assert info.value.type_name == type(value).__name__
    assert "type=" in str(info.value), "the error says how to declare the type"
    assert await local_cache.get("item") is NO_VALUE

    # A fill too: the loader's value is not stored (and the caller hears why) rather
    # than served as a different type on the next hit.
    loader = Loader(value)
    with pytest.raises(UnserializableValueError):
        await local_cache.get_or_load("loaded", loader)
    assert await local_cache.get("loaded") is NO_VALUE
    assert local_cache.stats.loader.not_cached == 1


@pytest.mark.anyio
@pytest.mark.parametrize(
    "value",
    [[datetime.date(2026, 1, 1)], {"id": uuid.UUID(int=1)}, {"b": b"raw"}, {"nested": [{"deep": (1, 2)}]}, {1.5: "k"}],
)
async def test_an_undeclared_value_must_be_json_native(local_cache: AsyncCache, value: Any) -> None:
    with pytest.raises(UnserializableValueError):
        await local_cache.set("native", value)


@pytest.mark.anyio
async def test_json_native_values_are_stored_undeclared(local_cache: AsyncCache) -> None:
    value = [True, 1, 1.0, None, "s", {"k": [{}], "n": -(2**70)}]
    await local_cache.set("native", value)
    drop_l1(local_cache)
    got = await local_cache.get("native")
    assert got == value
    assert shape(got) == shape(value)


@pytest.mark.anyio
async def test_a_declared_type_the_value_is_not_is_refused(local_cache: AsyncCache) -> None:
    with pytest.raises(UnserializableValueError, match="DLine"):
        await local_cache.set("line", {"sku": "a", "qty": 1}, type=DLine)


@pytest.mark.anyio
async def test_msgpack_keeps_the_declared_types_too(local_cache: AsyncCache) -> None:
    codec = MsgpackCodec()
    for kind, value, declared in KINDS:
        await local_cache.set(f"mp:{kind}", value, type=declared, codec=codec)
        drop_l1(local_cache)
        got = await local_cache.get(f"mp:{kind}", type=declared, codec=codec)
        assert shape(got) == shape(value), kind
    # msgpack keeps int keys and bytes undeclared; a tuple it does not.
    await local_cache.set("mp:native", {1: b"x"}, codec=codec)
    drop_l1(local_cache)
    assert await local_cache.get("mp:native", codec=codec) == {1: b"x"}
    with pytest.raises(UnserializableValueError):
        await local_cache.set("mp:tuple", (1, 2), codec=codec)


@pytest.mark.anyio
async def test_cached_methods_and_classmethods_bind_and_keep_their_helpers(local_cache: AsyncCache) -> None:
    class Users:
        loads = 0

        def __init__(self, factor: int) -> None:
            self.factor = factor

        @local_cache.cached("users:{user_id}")
        async def get(self, user_id: int) -> DLine:
            type(self).loads += 1
            return DLine(f"u{user_id}", user_id * self.factor)

        @local_cache.cached("users:class:{user_id}")
        @classmethod
        async def get_cls(cls, user_id: int) -> DLine:
            cls.loads += 1
            return DLine(f"c{user_id}", user_id)

    users = Users(2)
    assert await users.get(3) == DLine("u3", 6)
    drop_l1(local_cache)
    again = await users.get(user_id=3)
    assert isinstance(again, DLine) and again == DLine("u3", 6)
    assert users.get.key(3) == "users:3"
    assert await users.get.invalidate(3) is True
    assert await Users.get_cls(4) == DLine("c4", 4)
    drop_l1(local_cache)
    assert isinstance(await users.get_cls(4), DLine)
    assert Users.get_cls.key(4) == "users:class:4"
    assert Users.loads == 2
    assert await Users.get_cls.invalidate(4) is True
    assert await users.get_cls(4) == DLine("c4", 4)
    assert Users.loads == 3
