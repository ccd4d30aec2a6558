"""Fill notifications of the Redis backend: every process keeps one subscription to the
fill channel, and a waiter for a key is woken by the fill (or release) that ``PUBLISH``es
it, not by a sleep loop. After a lost or renewed subscription every waiter is woken to
look again (fills may have been missed meanwhile).
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any

from redis.exceptions import RedisClusterException, RedisError

from readscale._shared.primitives.locks import AsyncEvent, async_sleep
from readscale._shared.primitives.tasks import AsyncDaemon

#: The errors of redis-py (``RedisClusterException`` is not a ``RedisError``) and sockets.
ERRORS = (RedisError, RedisClusterException, OSError, TimeoutError)


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
