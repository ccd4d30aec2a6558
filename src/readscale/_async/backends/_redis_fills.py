"""Fill rights and fills of the Redis backend: leases, tickets (one at a time or in a
pipeline), fills (likewise), releases, and the wait for a fill.

Every process keeps one subscription to the fill channel, and a waiter for a key is woken
by the fill (or release) that ``PUBLISH``es it, not by a sleep loop. After a lost or
renewed subscription every waiter is woken to look again (fills may have been missed
meanwhile).
"""

from __future__ import annotations

import contextlib
import secrets
import threading
from collections.abc import Callable, Sequence
from typing import Any

from redis.exceptions import RedisClusterException, RedisError

from readscale._async.backends import _redis_scripts
from readscale._core.cache.keys import companion_key
from readscale._core.cache.lease import LEASE_HELD_ELSEWHERE, TICKET_PREFIX, LeaseResult
from readscale._core.postgres.lsn import lsn_text, parse_lsn_text
from readscale._shared.primitives.locks import AsyncEvent, async_sleep
from readscale._shared.primitives.tasks import AsyncDaemon
from readscale._shared.redis_lane import AsyncRedisLane
from readscale.errors import CacheUnavailableError

#: The errors of redis-py (``RedisClusterException`` is not a ``RedisError``) and sockets.
ERRORS = (RedisError, RedisClusterException, OSError, TimeoutError)
# Commands also catch the errors of a connection closed mid-write (see
# closed_transport_race); the backend's ``unavailable`` re-raises any other AttributeError/TypeError.
COMMAND_ERRORS = (*ERRORS, AttributeError, TypeError)


def lease_keys(key: str) -> list[str]:
    """The entry and its companions (lease, tombstone, tickets), all in the entry's cluster slot."""
    return [key, companion_key(key, "lease"), companion_key(key, "tomb"), companion_key(key, "tickets")]


def ms(seconds: float) -> int:
    return max(1, int(seconds * 1000 + 0.999))


class FillWaiters:
    """Per-key events woken by fill notifications (a plain lock: it is never held across an await)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: dict[str, list[AsyncEvent]] = {}

    def register(self, key: str) -> AsyncEvent:
        event = AsyncEvent()
        with self._lock:
            self._events.setdefault(key, []).append(event)
        return event

    def unregister(self, key: str, event: AsyncEvent) -> None:
        with self._lock:
            events = self._events.get(key)
            if events and event in events:
                events.remove(event)
                if not events:
                    del self._events[key]

    def wake(self, key: str) -> None:
        with self._lock:
            events = list(self._events.get(key, ()))
        for event in events:
            event.set()

    def wake_all(self) -> None:
        with self._lock:
            events = [e for group in self._events.values() for e in group]
        for event in events:
            event.set()


class AsyncFillListener:
    """The subscription to the fill channel (started on the first wait) and its waiters."""

    def __init__(self, client: Any, channel: str) -> None:
        self._client = client
        self._channel = channel
        self.waiters = FillWaiters()
        self._subscribed = AsyncEvent()
        self._listener: AsyncDaemon | None = None
        self._listener_lock = threading.Lock()

    async def ensure(self, timeout: float) -> None:
        with self._listener_lock:
            if self._listener is None:
                self._listener = AsyncDaemon(self._listen, "readscale-fill-listener")
                self._listener.start()
        await self._subscribed.wait(min(timeout, 1.0))

    async def _listen(self, stop: AsyncEvent) -> None:
        pubsub: Any = None
        while not stop.is_set():
            try:
                if pubsub is None:
                    pubsub = self._client.pubsub()
                    await pubsub.subscribe(self._channel)
                message = await pubsub.get_message(timeout=0.5)
                if message is None:
                    continue
                if message["type"] == "subscribe":
                    # Also seen after redis-py reconnects by itself: fills may have been
                    # missed meanwhile, so wake every waiter to look again.
                    self._subscribed.set()
                    self.waiters.wake_all()
                elif message["type"] == "message":
                    data = message["data"]
                    self.waiters.wake(data.decode() if isinstance(data, bytes) else str(data))
            except ERRORS:
                self._subscribed = AsyncEvent()
                if pubsub is not None:
                    with contextlib.suppress(*ERRORS):
                        await pubsub.aclose()
                    pubsub = None
                self.waiters.wake_all()
                await async_sleep(0.1)
        if pubsub is not None:
            with contextlib.suppress(*ERRORS):
                await pubsub.aclose()

    async def stop(self) -> None:
        if self._listener is not None:
            await self._listener.stop()
            self._listener = None


class AsyncRedisFills:
    """Leases, tickets, fills, releases and the wait for a fill, on the backend's client
    and behind its connection gate (``limit``). The scripts are registered here; the
    backend's methods of the same names delegate to these. ``pipelines``: whether scripts
    can be pipelined (a cluster pipeline cannot run them); ``unavailable`` turns a
    command's error into the backend's :class:`CacheUnavailableError`; ``check_size``
    refuses a value over the backend's limit."""

    def __init__(
        self,
        client: Any,
        channel: str,
        limit: AsyncRedisLane,
        *,
        pipelines: bool,
        unavailable: Callable[[str, BaseException], CacheUnavailableError],
        check_size: Callable[[str, bytes], None],
    ) -> None:
        self._client = client
        self._channel = channel
        self._limit = limit
        self._pipelines = pipelines
        self._unavailable = unavailable
        self._check_size = check_size
        self._lease_script = client.register_script(_redis_scripts.LEASE)
        self._fill_script = client.register_script(_redis_scripts.FILL)
        self._release_script = client.register_script(_redis_scripts.RELEASE)
        self._ticket_script = client.register_script(_redis_scripts.TICKET)
        self._listener = AsyncFillListener(client, channel)

    async def lease(self, key: str, ttl: float) -> LeaseResult:
        token = secrets.token_hex(12)
        try:
            async with self._limit:
                reply = await self._lease_script(keys=lease_keys(key), args=[token, ms(ttl)])
        except COMMAND_ERRORS as exc:
            raise self._unavailable("lease script", exc) from exc
        code = int(reply[0])
        if code == 1:
            return LeaseResult(value=reply[1])
        if code == 2:
            return LeaseResult(token=token, floor_lsn=parse_lsn_text(reply[1]))
        return LEASE_HELD_ELSEWHERE

    async def refresh_lease(self, key: str, ttl: float) -> str | None:
        token = secrets.token_hex(12)
        try:
            async with self._limit:
                won = await self._client.set(companion_key(key, "lease"), token, nx=True, px=ms(ttl))
        except COMMAND_ERRORS as exc:
            raise self._unavailable("SET NX (refresh lease)", exc) from exc
        return token if won else None

    async def ticket(self, key: str, ttl: float) -> LeaseResult:
        token = TICKET_PREFIX + secrets.token_hex(12)
        try:
            async with self._limit:
                floor = await self._ticket_script(keys=lease_keys(key), args=[token, ms(ttl)])
        except COMMAND_ERRORS as exc:
            raise self._unavailable("ticket script", exc) from exc
        return LeaseResult(token=token, floor_lsn=parse_lsn_text(floor))

    async def ticket_many(self, keys: Sequence[str], ttl: float) -> list[LeaseResult]:
        if not keys:
            return []
        if not self._pipelines:
            return [await self.ticket(key, ttl) for key in keys]
        tokens = [TICKET_PREFIX + secrets.token_hex(12) for _ in keys]
        try:
            async with self._limit, self._client.pipeline(transaction=False) as pipe:
                for key, token in zip(keys, tokens, strict=True):
                    await self._ticket_script(keys=lease_keys(key), args=[token, ms(ttl)], client=pipe)
                floors = await pipe.execute()
        except COMMAND_ERRORS as exc:
            raise self._unavailable("ticket script (pipeline)", exc) from exc
        return [LeaseResult(token=t, floor_lsn=parse_lsn_text(f)) for t, f in zip(tokens, floors, strict=True)]

    async def fill_many(self, items: Sequence[tuple[str, bytes, float, str, int | None]]) -> list[bool]:
        if not items:
            return []
        if not self._pipelines:
            return [await self.fill(key, value, ttl, token, lsn) for key, value, ttl, token, lsn in items]
        for key, value, _, _, _ in items:
            self._check_size(key, value)
        try:
            async with self._limit, self._client.pipeline(transaction=False) as pipe:
                for key, value, ttl, token, lsn in items:
                    args = [token, value, ms(ttl), self._channel, lsn_text(lsn) if lsn is not None else ""]
                    await self._fill_script(keys=lease_keys(key), args=args, client=pipe)
                stored = await pipe.execute()
        except COMMAND_ERRORS as exc:
            raise self._unavailable("fill script (pipeline)", exc) from exc
        return [int(s) == 1 for s in stored]

    async def fill(self, key: str, value: bytes, ttl: float, token: str, lsn: int | None) -> bool:
        self._check_size(key, value)
        source = lsn_text(lsn) if lsn is not None else ""
        try:
            async with self._limit:
                args = [token, value, ms(ttl), self._channel, source]
                stored = await self._fill_script(keys=lease_keys(key), args=args)
        except COMMAND_ERRORS as exc:
            raise self._unavailable("fill script", exc) from exc
        return int(stored) == 1

    async def release(self, key: str, token: str) -> None:
        try:
            async with self._limit:
                await self._release_script(keys=lease_keys(key), args=[token, self._channel])
        except COMMAND_ERRORS as exc:
            raise self._unavailable("release script", exc) from exc

    async def wait_for_fill(self, key: str, timeout: float) -> bool:
        await self._listener.ensure(timeout)
        event = self._listener.waiters.register(key)
        try:
            # The fill (or a release) may have landed before we registered: look once.
            if await self._settled(key):
                return True
            return await event.wait(timeout)
        finally:
            self._listener.waiters.unregister(key, event)

    async def _settled(self, key: str) -> bool:
        """True when the key has a value or nobody holds its lease any more."""
        try:
            async with self._limit, self._client.pipeline(transaction=False) as pipe:
                pipe.exists(key)
                pipe.exists(companion_key(key, "lease"))
                has_value, has_lease = await pipe.execute()
        except COMMAND_ERRORS as exc:
            raise self._unavailable("EXISTS", exc) from exc
        return bool(has_value) or not has_lease

    async def stop(self) -> None:
        await self._listener.stop()
