"""The L2 hit path's fast lanes (issue 17): a fresh plain entry decoded straight from its
payload by the codec's compiled decoder, single and batch, counts and behaves as the full
path does. Written async; ``scripts/unasync.py`` generates the sync twin in ``tests/_sync``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from readscale import RedisSettings
from readscale._async.backends.redis import AsyncRedisBackend
from readscale._async.cache.cache import AsyncCache
from readscale._core.cache.entry import EntryMeta, encode_envelope
from readscale._core.cache.novalue import NO_VALUE
from readscale._core.cache.policy import CachePolicy, Tier
from readscale.codecs import JsonCodec, MsgpackCodec
from readscale.testing.clock import FakeClock

pytestmark = [pytest.mark.stack, pytest.mark.anyio]

POLICY = CachePolicy(name="hit", ttl=60.0, jitter=0.0, swr=0.0, sie=0.0, early_refresh=0.0, tiers=frozenset({Tier.L2}))


class UpperCodec(JsonCodec):
    """A codec that decodes otherwise: its own ``decode`` must be the one called."""

    def decode(self, data: bytes | memoryview) -> Any:
        value = super().decode(data)
        return value.upper() if isinstance(value, str) else value


@pytest.fixture
async def backend(redis_url: str) -> AsyncIterator[AsyncRedisBackend]:
    backend = AsyncRedisBackend(RedisSettings(url=redis_url))
    yield backend
    await backend.close()


def make(backend: AsyncRedisBackend, codec: Any = None) -> AsyncCache:
    clock = FakeClock(1_000_000.0)
    return AsyncCache(backend, codec=codec, policy=POLICY, prefix="hitpath:", clock=clock, rng=lambda: 0.5)


async def test_a_hit_and_a_batch_of_hits_count_as_hits(backend: AsyncRedisBackend) -> None:
    cache = make(backend)
    await cache.set("a", {"x": 1})
    await cache.set("b", [1, 2])
    assert await cache.get("a") == {"x": 1}
    assert await cache.get_many(["a", "b", "absent"]) == {"a": {"x": 1}, "b": [1, 2]}
    assert (cache.stats.l2.hits, cache.stats.l2.misses, cache.stats.l2.corrupt) == (3, 1, 0)


@pytest.mark.parametrize("codec_class", [JsonCodec, MsgpackCodec])
async def test_a_payload_that_does_not_decode_is_one_corrupt_miss(
    backend: AsyncRedisBackend, codec_class: type[JsonCodec]
) -> None:
    cache = make(backend, codec_class())
    meta = EntryMeta(1_000_000.0, 60.0, schema=POLICY.schema)
    bad = encode_envelope(meta, cache.codec.id, b"\xc1{not a value")
    await backend.set(cache.key("bad"), bad, 60)
    assert await cache.get("bad") is NO_VALUE
    assert await cache.get_many(["bad"]) == {}
    assert (cache.stats.l2.hits, cache.stats.l2.misses, cache.stats.l2.corrupt) == (0, 2, 2)


async def test_a_codec_that_decodes_otherwise_is_honoured_on_the_hit_paths(backend: AsyncRedisBackend) -> None:
    cache = make(backend, UpperCodec())
    await cache.set("s", "quiet")
    assert await cache.get("s") == "QUIET"
    assert await cache.get_many(["s"]) == {"s": "QUIET"}


async def test_a_msgpack_hit_is_decoded_by_msgpack(backend: AsyncRedisBackend) -> None:
    cache = make(backend, MsgpackCodec())
    await cache.set("m", {"n": [1, 2.5, "x"]})
    assert await cache.get("m") == {"n": [1, 2.5, "x"]}
    assert await cache.get_many(["m"]) == {"m": {"n": [1, 2.5, "x"]}}


async def test_a_batch_of_hits_with_one_bad_payload_counts_each_key(backend: AsyncRedisBackend) -> None:
    # All fresh and plain but one that does not decode: the batch's one-pass decode gives
    # way to the key-by-key path, which serves the others and counts the bad one.
    cache = make(backend)
    await cache.set("a", {"x": 1})
    await cache.set("b", [1, 2])
    meta = EntryMeta(1_000_000.0, 60.0, schema=POLICY.schema)
    await backend.set(cache.key("bad"), encode_envelope(meta, cache.codec.id, b"{not json"), 60)
    assert await cache.get_many(["a", "bad", "b", "a"]) == {"a": {"x": 1}, "b": [1, 2]}
    assert (cache.stats.l2.hits, cache.stats.l2.misses, cache.stats.l2.corrupt) == (3, 1, 1)
    assert await cache.get_many(["b", "a", "b"]) == {"a": {"x": 1}, "b": [1, 2]}
    assert (cache.stats.l2.hits, cache.stats.l2.misses, cache.stats.l2.corrupt) == (6, 1, 1)
