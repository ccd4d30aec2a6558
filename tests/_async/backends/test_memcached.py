"""The Memcached backend against real memcached servers: the shipped contract suite, then
what is specific to memcached (keys, limits, stale items, pipelining, dead servers).

Round trips are counted by wrapping the stream's ``write``; server work by memcached's own
``stats``. Nothing here measures time: a timeout shows in the error it raises.
"""

from __future__ import annotations

import socket
import sys
import uuid
from collections.abc import AsyncIterator, Callable

import pytest

from readscale._async.backends.memcached import AsyncMemcachedBackend
from readscale._core.memcached.replies import AnyReply, MetaParser, Reply, StatReply, Status
from readscale._core.memcached.requests import MetaDelete, MetaGet, Stats
from readscale._shared.transport import AsyncTcpStream
from readscale.errors import CacheUnavailableError, InvalidKeyError, ValueTooLargeError
from readscale.stack import Stack, StackConfig
from readscale.testing.concurrency import async_gather
from readscale.testing.contract import AsyncBackendContract


def fresh(n: int) -> list[str]:
    prefix = uuid.uuid4().hex[:12]
    return [f"mc:{prefix}:{i}" for i in range(n)]


def raw(address: str, payload: bytes, until: Status | None = None) -> list[AnyReply]:
    """One exchange on a plain socket, outside the backend under test."""
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(payload)
        parser = MetaParser()
        replies: list[AnyReply] = []
        while True:
            reply = parser.next_reply()
            if reply is None:
                parser.feed(sock.recv(65536))
            elif until is None or (isinstance(reply, Reply) and reply.status is until):
                return [*replies, reply] if until is None else replies
            else:
                replies.append(reply)


def raw_gets(address: str, keys: list[str]) -> list[AnyReply]:
    return [raw(address, MetaGet(key).encode())[0] for key in keys]


def server_stats(address: str) -> dict[str, int]:
    return {
        r.name: int(r.value)
        for r in raw(address, Stats().encode(), Status.END)
        if isinstance(r, StatReply) and r.value.isdigit()
    }


@pytest.fixture
def writes(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Every payload the backend writes: one per round trip."""
    sent: list[bytes] = []
    original = AsyncTcpStream.write

    async def counting_write(self: AsyncTcpStream, data: bytes) -> None:
        sent.append(data)
        await original(self, data)

    monkeypatch.setattr(AsyncTcpStream, "write", counting_write)
    return sent


@pytest.fixture
def connects(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    made: list[str] = []
    original = AsyncTcpStream.connect.__func__  # type: ignore[attr-defined]

    async def counting_connect(cls: type[AsyncTcpStream], endpoint: object) -> AsyncTcpStream:
        made.append(str(endpoint))
        return await original(cls, endpoint)  # type: ignore[no-any-return]

    monkeypatch.setattr(AsyncTcpStream, "connect", classmethod(counting_connect))
    return made


@pytest.mark.stack
class TestAsyncMemcached(AsyncBackendContract):
    @pytest.fixture
    async def backend(self, memcached_address: str) -> AsyncIterator[AsyncMemcachedBackend]:
        backend = AsyncMemcachedBackend(memcached_address)
        yield backend
        await backend.close()


@pytest.fixture
async def backend(memcached_address: str) -> AsyncIterator[AsyncMemcachedBackend]:
    backend = AsyncMemcachedBackend(memcached_address)
    await backend.ping()  # connected, and the server's item_size_max is known
    yield backend
    await backend.close()


# -- keys ------------------------------------------------------------------------------------


@pytest.mark.stack
@pytest.mark.anyio
@pytest.mark.parametrize("bad", ["has space", "tab\t", "line\nbreak", "cr\r", "nul\x00", "bell\x07", "x" * 251, ""])
async def test_bad_keys_raise_invalid_key_error_and_nothing_else_is_lost(
    backend: AsyncMemcachedBackend, writes: list[bytes], bad: str
) -> None:
    keep, other = fresh(2)
    await backend.set(keep, b"keep me", 60)
    sent = len(writes)
    calls: list[Callable[[], object]] = [
        lambda: backend.get(bad),
        lambda: backend.set(bad, b"v", 60),
        lambda: backend.delete(bad),
        lambda: backend.lease(bad, 5),
        lambda: backend.get_many([other, bad]),
        lambda: backend.set_many([(other, b"v", 60), (bad, b"v", 60)]),
        lambda: backend.delete_many([keep, bad]),
    ]
    for call in calls:
        with pytest.raises(InvalidKeyError) as info:
            await call()  # type: ignore[misc]
        assert info.value.key == bad
        assert info.value.backend == "memcached"
    assert len(writes) == sent  # refused before a byte went out
    assert await backend.get_many([keep, other]) == [b"keep me", None]


@pytest.mark.stack
@pytest.mark.anyio
async def test_key_length_limits(backend: AsyncMemcachedBackend) -> None:
    (prefix,) = fresh(1)
    longest = (prefix + "x" * 250)[:250]
    await backend.set(longest, b"250 bytes", 60)
    assert await backend.get(longest) == b"250 bytes"
    with pytest.raises(InvalidKeyError, match="251 bytes"):
        await backend.get(longest + "x")
    # Non-ASCII keys travel base64 (b flag), whose text memcached also bounds by 250.
    wide = (prefix + "é" * 100).encode()[:184].decode(errors="ignore")
    wide += "x" * (186 - len(wide.encode()))
    assert len(wide.encode()) == 186
    await backend.set(wide, b"186 bytes", 60)
    assert await backend.get(wide) == b"186 bytes"
    with pytest.raises(InvalidKeyError, match="at most 186 bytes"):
        await backend.get(wide + "é")


# -- values ------------------------------------------------------------------------------------


@pytest.mark.stack
@pytest.mark.anyio
async def test_the_largest_value_fits_under_the_longest_key(
    backend: AsyncMemcachedBackend, writes: list[bytes]
) -> None:
    assert backend.max_value_size == (1 << 20) - 313  # the stack runs memcached -I 1m
    (prefix,) = fresh(1)
    key = (prefix + "k" * 250)[:250]
    value = b"v" * backend.max_value_size
    await backend.set(key, value, 60)
    assert await backend.get(key) == value
    sent = len(writes)
    for call in (
        lambda: backend.set(key, value + b"v", 60),
        lambda: backend.set_many([(prefix, b"small", 60), (key, value + b"v", 60)]),
        lambda: backend.fill(key, value + b"v", 60, "1"),
    ):
        with pytest.raises(ValueTooLargeError) as info:
            await call()
        assert info.value.size == len(value) + 1
        assert info.value.limit == backend.max_value_size
    assert len(writes) == sent
    assert await backend.get_many([key, prefix]) == [value, None]


@pytest.mark.stack
@pytest.mark.anyio
async def test_a_value_the_server_refuses_is_value_too_large_and_the_connection_survives(
    memcached_address: str, connects: list[str]
) -> None:
    backend = AsyncMemcachedBackend(memcached_address, item_size_max=4 << 20, pool_size=1)  # the server says 1m
    try:
        keep, big = fresh(2)
        await backend.set(keep, b"keep", 60)
        with pytest.raises(ValueTooLargeError):
            await backend.set(big, b"x" * (2 << 20), 60)
        assert await backend.get_many([keep, big]) == [b"keep", None]
        assert len(connects) == 1  # memcached swallowed the value and stayed in step
    finally:
        await backend.close()


@pytest.mark.stack
@pytest.mark.anyio
async def test_ttls_past_30_days_are_sent_as_unix_times(backend: AsyncMemcachedBackend) -> None:
    (key,) = fresh(1)
    await backend.set(key, b"long-lived", 40 * 86400)  # as a relative 3456000 memcached would expire it in 1970
    assert await backend.get(key) == b"long-lived"


# -- pipelining ----------------------------------------------------------------------------


@pytest.mark.stack
@pytest.mark.anyio
async def test_batches_of_100_keys_take_one_round_trip_each(
    backend: AsyncMemcachedBackend, memcached_address: str, writes: list[bytes]
) -> None:
    keys = fresh(100)
    await backend.set_many([(k, k.encode(), 60) for k in keys[::2]])
    assert len(writes) == 1
    before = server_stats(memcached_address)
    values = await backend.get_many(keys)
    after = server_stats(memcached_address)
    assert values == [k.encode() if i % 2 == 0 else None for i, k in enumerate(keys)]
    assert len(writes) == 2
    assert after["cmd_get"] - before["cmd_get"] == 100
    assert after["get_hits"] - before["get_hits"] == 50
    assert await backend.delete_many(keys) == 50
    assert len(writes) == 3


async def calls_in_get_many(backend: AsyncMemcachedBackend, keys: list[str]) -> int:
    """Python and C function calls made while ``get_many(keys)`` runs (sys.setprofile)."""
    calls = 0

    def count(frame: object, event: str, arg: object) -> None:
        nonlocal calls
        calls += event in ("call", "c_call")

    sys.setprofile(count)
    try:
        values = await backend.get_many(keys)
    finally:
        sys.setprofile(None)
    assert values == [k.encode() * 10 for k in keys]
    return calls


@pytest.mark.stack
@pytest.mark.anyio
async def test_a_batch_of_plain_hits_costs_at_most_six_calls_per_key(backend: AsyncMemcachedBackend) -> None:
    # The marginal cost of a key (calls for 200 keys less calls for 100, the fewest of three
    # tries each: a reply that comes in more reads adds calls of the event loop): no Python step per
    # key to pick its server (one server) or build its request, and one regex match (with
    # the CRLF closing the value before it), its groups, its end and two small-number
    # lookups to read its reply. It was 9 (``group`` hashed nothing but still did a
    # setdefault and an append per key; the reply took two int() calls and a startswith).
    keys = fresh(200)
    await backend.set_many([(k, k.encode() * 10, 60) for k in keys])
    await backend.get_many(keys)  # connected, tables built
    calls = {n: min([await calls_in_get_many(backend, keys[:n]) for _ in range(3)]) for n in (100, 200)}
    assert (calls[200] - calls[100]) / 100 <= 6, calls


@pytest.mark.stack
@pytest.mark.anyio
async def test_concurrent_callers_share_a_bounded_pool(memcached_address: str, connects: list[str]) -> None:
    backend = AsyncMemcachedBackend(memcached_address, pool_size=3)
    try:
        keys = fresh(40)
        await backend.set_many([(k, k.encode(), 60) for k in keys])
        results = await async_gather([lambda k=k: backend.get(k) for k in keys])  # type: ignore[misc]
        assert results == [k.encode() for k in keys]
        assert 1 <= len(connects) <= 3
    finally:
        await backend.close()


@pytest.mark.stack
@pytest.mark.anyio
async def test_keys_spread_over_servers_with_one_round_trip_per_server(
    memcached_address: str, readscale_stack_factory: Callable[..., Stack], writes: list[bytes]
) -> None:
    other = readscale_stack_factory(StackConfig(postgres=False, redis=False, memcached=True)).memcached.address
    backend = AsyncMemcachedBackend(addresses=[memcached_address, other])
    try:
        await backend.ping()
        sent = len(writes)
        keys = fresh(100)
        await backend.set_many([(k, k.encode(), 60) for k in keys])
        assert await backend.get_many(keys) == [k.encode() for k in keys]
        assert await backend.delete_many(keys[:10]) == 10
        assert len(writes) - sent == 6  # three batches, two servers each
        on_first = [isinstance(r, Reply) and r.status is Status.VA for r in raw_gets(memcached_address, keys[10:])]
        on_other = [isinstance(r, Reply) and r.status is Status.VA for r in raw_gets(other, keys[10:])]
        assert [a != b for a, b in zip(on_first, on_other, strict=True)] == [True] * 90  # each key on one server
        assert 20 < sum(on_first) < 70
    finally:
        await backend.close()


# -- leases and stale items ------------------------------------------------------------------


@pytest.mark.stack
@pytest.mark.anyio
async def test_a_stale_item_is_a_miss_and_exactly_one_lease_taker_refills_it(
    backend: AsyncMemcachedBackend, memcached_address: str
) -> None:
    key, other = fresh(2)
    await backend.set_many([(key, b"old", 60), (other, b"old", 60)])
    raw(memcached_address, MetaDelete(key, invalidate=True, ttl=30).encode())  # md key I: mark stale
    winner = await backend.lease(key, 5)
    loser = await backend.lease(key, 5)
    assert winner.token is not None
    assert winner.value is None
    assert not loser.won
    assert loser.value is None
    assert await backend.get(key) is None
    assert await backend.fill(key, b"new", 60, winner.token) is True
    assert await backend.get(key) == b"new"
    # A plain read that meets a stale item first wins its lease by accident (memcached
    # answers W to any mg) and must give it back, or lease takers would wait forever.
    raw(memcached_address, MetaDelete(other, invalidate=True, ttl=30).encode())
    assert await backend.get_many([other]) == [None]
    taker = await backend.lease(other, 5)
    assert taker.won


@pytest.mark.stack
@pytest.mark.anyio
async def test_waiters_stop_waiting_when_the_lease_is_released(backend: AsyncMemcachedBackend) -> None:
    (key,) = fresh(1)
    won = await backend.lease(key, 30)
    assert won.token is not None
    await backend.release(key, won.token)
    assert await backend.wait_for_fill(key, 30) is False  # at once: nothing to wait for
    assert (await backend.lease(key, 5)).won


@pytest.mark.stack
@pytest.mark.anyio
async def test_a_delete_voids_the_lease_so_an_old_fill_is_refused(backend: AsyncMemcachedBackend) -> None:
    (key,) = fresh(1)
    won = await backend.lease(key, 30)
    assert won.token is not None
    assert await backend.delete(key) is True  # an invalidation while the holder loads
    assert await backend.fill(key, b"loaded before the write", 60, won.token) is False
    assert await backend.get(key) is None


# -- failures --------------------------------------------------------------------------------


@pytest.mark.stack
@pytest.mark.chaos
@pytest.mark.anyio
async def test_a_dead_server_is_unavailable_and_used_again_once_it_is_back(
    readscale_stack_factory: Callable[..., Stack],
) -> None:
    stack = readscale_stack_factory(StackConfig(postgres=False, redis=False, memcached=True))
    backend = AsyncMemcachedBackend(stack.memcached.address, connect_timeout_ms=100, read_timeout_ms=100)
    try:
        (key,) = fresh(1)
        await backend.set(key, b"before", 60)
        stack.kill("memcached")
        for call in (
            lambda: backend.get(key),
            lambda: backend.set(key, b"during", 60),
            lambda: backend.get_many([key]),
            lambda: backend.lease(key, 5),
            backend.ping,
        ):
            with pytest.raises(CacheUnavailableError) as info:
                await call()
            assert info.value.backend == "memcached"
            assert stack.memcached.address in str(info.value)
        stack.start("memcached")
        await backend.ping()
        assert await backend.get(key) is None  # a restarted memcached is empty
        await backend.set(key, b"after", 60)
        assert await backend.get(key) == b"after"
    finally:
        await backend.close()


@pytest.mark.anyio
async def test_a_silent_server_is_unavailable_after_the_read_timeout(silent_address: str) -> None:
    backend = AsyncMemcachedBackend(silent_address, read_timeout_ms=50, item_size_max=1 << 20)
    try:
        with pytest.raises(CacheUnavailableError, match="read did not complete within 50 ms") as info:
            await backend.get("k")
        assert info.value.backend == "memcached"
    finally:
        await backend.close()


@pytest.mark.anyio
async def test_callers_beyond_the_pool_give_up_after_the_pool_timeout(silent_address: str) -> None:
    backend = AsyncMemcachedBackend(
        silent_address, pool_size=1, read_timeout_ms=500, pool_timeout_ms=20, item_size_max=1 << 20
    )
    try:
        results = await async_gather([lambda: backend.get("a"), lambda: backend.get("b")], return_exceptions=True)
        messages = sorted(str(result) for result in results)
        assert all(isinstance(result, CacheUnavailableError) for result in results)
        assert "all 1 connections stayed busy for 20 ms" in messages[0]
        assert "read did not complete within 500 ms" in messages[1]
    finally:
        await backend.close()


class Interrupted(BaseException):
    """Stands for a cancellation (async) or a KeyboardInterrupt (sync) mid-exchange."""


@pytest.mark.stack
@pytest.mark.anyio
async def test_a_call_interrupted_mid_exchange_frees_its_slot_and_drops_its_connection(
    memcached_address: str, connects: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = AsyncMemcachedBackend(memcached_address, pool_size=1, pool_timeout_ms=50)
    try:
        (key,) = fresh(1)
        await backend.set(key, b"v", 60)
        assert len(connects) == 1
        original = AsyncTcpStream.read

        async def interrupted_read(self: AsyncTcpStream) -> bytes:
            raise Interrupted

        monkeypatch.setattr(AsyncTcpStream, "read", interrupted_read)
        with pytest.raises(Interrupted):
            await backend.get(key)
        monkeypatch.setattr(AsyncTcpStream, "read", original)
        assert await backend.get(key) == b"v"  # the only slot is free again...
        assert len(connects) == 2  # ...on a new connection: the old one's reply was never read
    finally:
        await backend.close()


@pytest.mark.anyio
async def test_a_closed_backend_refuses_calls(silent_address: str) -> None:
    backend = AsyncMemcachedBackend(silent_address)
    await backend.close()
    with pytest.raises(CacheUnavailableError, match="closed"):
        await backend.get("k")
