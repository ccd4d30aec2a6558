"""The invalidation bus: Redis pub/sub carrying invalidations and application events.

Every process subscribes once. An invalidation published by one process makes every
other process drop its in-process (L1) copies and its cached tag and namespace versions.
Applications publish and subscribe to their own events (``product.updated`` with a
payload) on the same bus.

Pub/sub is lossy by design: a message published while a subscriber is disconnected is
never delivered. So whenever the subscription is (re)established after the first time,
the bus calls its reconnect handlers, and the cache flushes everything it holds locally:
no stale copy survives a gap. Each message carries its send time, so the delivery delay
is measured (``stats``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec

from readscale._shared.primitives.locks import AsyncEvent, async_maybe_await, async_sleep
from readscale._shared.primitives.tasks import AsyncDaemon
from readscale._shared.redis_clients import async_redis_client
from readscale.errors import CacheUnavailableError, ConfigurationError
from readscale.settings import RedisSettings

log = logging.getLogger("readscale.bus")

BUS_CHANNEL = "readscale:bus"
INVALIDATE = "readscale.invalidate"
try:  # the bus needs redis-py; the cache imports this module without it
    import redis.asyncio as redis_asyncio
    from redis.exceptions import RedisClusterException, RedisError

    _ERRORS: tuple[type[BaseException], ...] = (RedisError, RedisClusterException, OSError, TimeoutError)
except ImportError:  # pragma: no cover - depends on the installed extras
    redis_asyncio = None  # type: ignore[assignment]
    _ERRORS = (OSError, TimeoutError)

Handler = Callable[[str, Any], Any]


class BusMessage(msgspec.Struct, frozen=True):
    event: str
    payload: Any
    origin: str
    sent_at: float


@dataclass(slots=True)
class BusStats:
    published: int = 0
    received: int = 0
    own_skipped: int = 0
    handler_errors: int = 0
    reconnects: int = 0
    disconnects: int = 0
    l1_flushes: int = 0  # local flushes the gaps caused (each cache's handler, per disconnect and reconnect)
    undecodable: int = 0
    delay_count: int = 0
    delay_sum: float = 0.0
    delay_max: float = 0.0
    delay_last: float = 0.0

    @property
    def delay_mean(self) -> float:
        return self.delay_sum / self.delay_count if self.delay_count else 0.0


class AsyncInvalidationBus:
    """Publish and receive invalidations and application events over Redis pub/sub.

    Arguments:
        settings: how to reach Redis (any node of a cluster works: PUBLISH reaches all).
        channel: the pub/sub channel; processes sharing a cache must share it.
        clock: wall-clock seconds, for the delivery delay.
    """

    def __init__(
        self,
        settings: RedisSettings | None = None,
        *,
        client: Any | None = None,
        channel: str = BUS_CHANNEL,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings or RedisSettings()
        self._client: Any = client if client is not None else self._make_client()
        self.channel = channel
        self.origin = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.stats = BusStats()
        self._clock = clock
        self._handlers: dict[str, list[Handler]] = {}
        self._reconnect_handlers: list[Callable[[], Any]] = []
        self._disconnect_handlers: list[Callable[[], Any]] = []
        self._lock = threading.Lock()
        self._listener: AsyncDaemon | None = None
        self._subscribed = AsyncEvent()
        self._encoder = msgspec.json.Encoder()
        self._decoder = msgspec.json.Decoder(BusMessage)

    def _make_client(self) -> Any:
        if redis_asyncio is None:  # pragma: no cover - depends on the installed extras
            raise ConfigurationError("the invalidation bus needs redis-py: pip install 'readscale[redis]'")
        # A Sentinel URL: every reconnect (the listener's resubscribe) asks for the current master.
        return async_redis_client(self.settings)

    # -- subscribing -------------------------------------------------------------------------

    def subscribe(self, event: str, handler: Handler) -> None:
        """Call ``handler(event, payload)`` for every message of ``event`` from other processes.

        Handlers may be plain functions or coroutine functions (async bus only); an error in
        one is logged and counted, never raised into the listener.
        """
        if not event:
            raise ConfigurationError("an event name must not be empty")
        with self._lock:
            self._handlers.setdefault(event, []).append(handler)

    def on_reconnect(self, handler: Callable[[], Any]) -> None:
        """Call ``handler()`` each time the subscription comes back after a gap."""
        with self._lock:
            self._reconnect_handlers.append(handler)

    def on_disconnect(self, handler: Callable[[], Any]) -> None:
        """Call ``handler()`` when the subscription is lost (once per gap): from then on
        this process hears no invalidation until ``on_reconnect``'s handlers run."""
        with self._lock:
            self._disconnect_handlers.append(handler)

    async def start(self, timeout: float = 5.0) -> None:
        """Start listening (idempotent) and wait until subscribed, up to ``timeout`` seconds."""
        with self._lock:
            if self._listener is None:
                self._listener = AsyncDaemon(self._listen, "readscale-bus")
                self._listener.start()
        if not await self._subscribed.wait(timeout):
            raise CacheUnavailableError(f"the bus could not subscribe on {self.settings.safe_url}", backend="bus")

    @property
    def started(self) -> bool:
        return self._listener is not None

    # -- publishing --------------------------------------------------------------------------

    async def publish(self, event: str, payload: Any = None) -> int:
        """Send ``event`` with a JSON-able ``payload``; how many subscribers received it."""
        message = BusMessage(event=event, payload=payload, origin=self.origin, sent_at=self._clock())
        try:
            data = self._encoder.encode(message)
        except (TypeError, msgspec.EncodeError) as exc:
            raise ConfigurationError(f"bus payload of {event!r} is not JSON-able: {exc}") from exc
        try:
            receivers = int(await self._client.publish(self.channel, data))
        except _ERRORS as exc:
            message_text = f"bus publish failed on {self.settings.safe_url}: {exc}"
            raise CacheUnavailableError(message_text, backend="bus") from exc
        self.stats.published += 1
        return receivers

    # -- the listener ------------------------------------------------------------------------

    async def _listen(self, stop: AsyncEvent) -> None:
        pubsub: Any = None
        seen_subscription = failing = False
        while not stop.is_set():
            try:
                if pubsub is None:
                    pubsub = self._client.pubsub()
                    await pubsub.subscribe(self.channel)
                message = await pubsub.get_message(timeout=0.5)
                if message is None:
                    continue
                if message["type"] == "subscribe":
                    if seen_subscription:
                        await self._reconnected()
                    seen_subscription, failing = True, False
                    self._subscribed.set()
                elif message["type"] == "message":
                    await self._deliver(message["data"])
            except _ERRORS as exc:
                # Once per outage at warning level (the resubscription is logged too);
                # each retry after that at debug, so a dead Redis does not flood the log.
                level = logging.DEBUG if failing else logging.WARNING
                log.log(
                    level,
                    "bus: subscription on %s lost (%s); retrying",
                    self.settings.safe_url,
                    exc,
                    extra={"event": "bus_subscription_lost", "backend": self.settings.safe_url, "reason": str(exc)},
                )
                if seen_subscription and not failing:
                    await self._disconnected()
                failing = True
                self._subscribed = AsyncEvent()
                if pubsub is not None:
                    with contextlib.suppress(*_ERRORS):
                        await pubsub.aclose()
                    pubsub = None
                await async_sleep(0.1)
        if pubsub is not None:
            with contextlib.suppress(*_ERRORS):
                await pubsub.aclose()

    async def _disconnected(self) -> None:
        self.stats.disconnects += 1
        with self._lock:
            handlers = list(self._disconnect_handlers)
        self.stats.l1_flushes += len(handlers)
        for handler in handlers:
            await self._call(handler)

    async def _reconnected(self) -> None:
        self.stats.reconnects += 1
        with self._lock:
            handlers = list(self._reconnect_handlers)
        self.stats.l1_flushes += len(handlers)
        log.warning(
            "bus: resubscribed on %s; flushing local state (events may be lost)",
            self.settings.safe_url,
            extra={
                "event": "bus_resubscribed",
                "backend": self.settings.safe_url,
                "channel": self.channel,
                "count": len(handlers),
            },
        )
        for handler in handlers:
            await self._call(handler)

    async def _deliver(self, data: bytes) -> None:
        try:
            message = self._decoder.decode(data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            self.stats.undecodable += 1
            return
        if message.origin == self.origin:
            self.stats.own_skipped += 1
            return
        delay = max(self._clock() - message.sent_at, 0.0)
        with self._lock:
            handlers = list(self._handlers.get(message.event, ()))
        for handler in handlers:
            await self._call(handler, message.event, message.payload)
        # Counted once handled: a reader that sees the count knows the handlers ran.
        self.stats.delay_count += 1
        self.stats.delay_sum += delay
        self.stats.delay_last = delay
        self.stats.delay_max = max(self.stats.delay_max, delay)
        self.stats.received += 1

    async def _call(self, handler: Callable[..., Any], *args: Any) -> None:
        try:
            await async_maybe_await(handler(*args))
        except Exception as exc:
            self.stats.handler_errors += 1
            log.warning(
                "bus: handler %r failed: %s",
                handler,
                exc,
                exc_info=exc,
                extra={
                    "event": "bus_handler_failed",
                    "channel": self.channel,
                    "handler": repr(handler),
                    "reason": str(exc),
                },
            )

    async def close(self) -> None:
        if self._listener is not None:
            await self._listener.stop()
            self._listener = None
        with contextlib.suppress(*_ERRORS):
            await self._client.aclose()


__all__ = ["BUS_CHANNEL", "INVALIDATE", "AsyncInvalidationBus", "BusMessage", "BusStats"]
