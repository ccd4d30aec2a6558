"""Single-flight, as twins: concurrent callers of one key share one call of the function.

The call runs on its own (an asyncio task, or the first caller's thread), so a caller that
gives up or is cancelled does not cancel the work the others wait for. Part of the twins
of ``readscale._shared.primitives`` (see ``locks``); held to one behaviour by
``tests/_async/test_primitives.py``."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class _LeaderGone(Exception):
    """The caller running a shared call was cancelled; a follower takes over."""


class AsyncSingleFlight(Generic[K, V]):
    """Concurrent ``run(key, fn)`` calls for one key share a single ``fn()`` call.

    The first caller (the leader) runs ``fn`` itself, so a lone caller pays only a dict
    lookup and a future; the others await that future. If the leader is cancelled, its
    followers are not: one of them runs ``fn`` again.
    """

    def __init__(self) -> None:
        self._inflight: dict[K, asyncio.Future[V]] = {}

    def inflight(self, key: K) -> bool:
        return key in self._inflight

    async def run(self, key: K, fn: Callable[[], Awaitable[V]]) -> tuple[V, bool]:
        """Return ``(value, leader)``: ``leader`` is true for the one caller that ran ``fn``."""
        while True:
            future = self._inflight.get(key)
            if future is None:
                break
            try:
                return await asyncio.shield(future), False
            except _LeaderGone:
                continue
        future = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            value = await fn()
        except asyncio.CancelledError:
            future.set_exception(_LeaderGone())
            raise
        except BaseException as exc:
            future.set_exception(exc)
            raise
        else:
            future.set_result(value)
            return value, True
        finally:
            del self._inflight[key]
            if future.done() and not future.cancelled():
                future.exception()  # mark retrieved: no "never retrieved" warning without followers


class _Flight(Generic[V]):
    __slots__ = ("done", "error", "value")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.value: V | None = None
        self.error: BaseException | None = None


class SingleFlight(Generic[K, V]):
    """Concurrent ``run(key, fn)`` calls for one key share a single ``fn()`` call."""

    def __init__(self) -> None:
        self._inflight: dict[K, _Flight[V]] = {}
        self._lock = threading.Lock()

    def inflight(self, key: K) -> bool:
        return key in self._inflight

    def run(self, key: K, fn: Callable[[], V]) -> tuple[V, bool]:
        """Return ``(value, leader)``: ``leader`` is true for the one caller that ran ``fn``."""
        with self._lock:
            flight = self._inflight.get(key)
            leader = flight is None
            if flight is None:
                flight = self._inflight[key] = _Flight()
        if not leader:
            flight.done.wait()
            if flight.error is not None:
                raise flight.error
            return flight.value, False  # type: ignore[return-value]
        try:
            flight.value = fn()
        except BaseException as exc:
            flight.error = exc
            raise
        finally:
            with self._lock:
                self._inflight.pop(key, None)
            flight.done.set()
        return flight.value, True
