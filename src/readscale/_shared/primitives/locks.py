"""Sleep, locks, semaphores and events, as twins (see the package's docstring)."""

from __future__ import annotations

import asyncio
import inspect
import queue
import threading
import time
from types import TracebackType
from typing import Any

# -- sleep -------------------------------------------------------------------------------


async def async_sleep(seconds: float) -> None:
    await asyncio.sleep(seconds)


def sync_sleep(seconds: float) -> None:
    time.sleep(seconds)


# -- calling user code -----------------------------------------------------------------------


async def async_maybe_await(result: Any) -> Any:
    """Await ``result`` if a user callback returned an awaitable (async flavour accepts both)."""
    if inspect.isawaitable(result):
        return await result
    return result


def sync_maybe_await(result: Any) -> Any:
    """The sync flavour cannot run a coroutine: refuse it clearly instead of dropping it."""
    if inspect.isawaitable(result):
        close = getattr(result, "close", None)
        if close is not None:
            close()
        raise TypeError("an async callback was given to a sync readscale object; use the Async* flavour")
    return result


# -- lock ----------------------------------------------------------------------------------


class AsyncLock:
    def __init__(self) -> None:
        self._lock = asyncio.Lock()

    async def __aenter__(self) -> AsyncLock:
        await self._lock.acquire()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._lock.release()


class Lock:
    def __init__(self) -> None:
        self._lock = threading.Lock()

    def __enter__(self) -> Lock:
        self._lock.acquire()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._lock.release()


# -- semaphore -----------------------------------------------------------------------------


class AsyncSemaphore:
    """Bounds concurrency: callers queue instead of failing when a pool would be exhausted.

    With a ``timeout``, a caller that waits longer gets :class:`TimeoutError` whose message
    says no connection was available (what a blocking pool would say), so a wedged server
    cannot make callers queue forever. The uncontended path never suspends.
    """

    def __init__(self, value: int, timeout: float | None = None) -> None:
        self._sem = asyncio.Semaphore(value)
        self._value = value
        self._timeout = timeout

    async def __aenter__(self) -> AsyncSemaphore:
        sem = self._sem
        if self._timeout is None or not sem.locked():
            await sem.acquire()
            return self
        try:
            await asyncio.wait_for(sem.acquire(), self._timeout)
        except TimeoutError:
            raise TimeoutError(f"No connection available within {self._timeout:g} s ({self._value} in use)") from None
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._sem.release()


class Semaphore:
    """Bounds concurrency: callers queue instead of failing when a pool would be exhausted
    (see :class:`AsyncSemaphore`)."""

    # A queue of tokens, not threading.Semaphore: SimpleQueue is written in C, so taking
    # and returning a token costs ~0.1 us against ~0.9 us for the Python-level
    # Semaphore (measured here), on every sync cache call. Waiters are served in order.

    def __init__(self, value: int, timeout: float | None = None) -> None:
        self._tokens: queue.SimpleQueue[None] = queue.SimpleQueue()
        for _ in range(value):
            self._tokens.put(None)
        self._value = value
        self._timeout = timeout

    def __enter__(self) -> Semaphore:
        try:
            self._tokens.get(timeout=self._timeout)
        except queue.Empty:
            raise TimeoutError(f"No connection available within {self._timeout:g} s ({self._value} in use)") from None
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._tokens.put(None)


# -- event ---------------------------------------------------------------------------------


class AsyncEvent:
    def __init__(self) -> None:
        self._event = asyncio.Event()

    def set(self) -> None:
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    async def wait(self, timeout: float | None = None) -> bool:
        """Wait until set or ``timeout`` seconds pass; true if the event was set."""
        if timeout is None:
            await self._event.wait()
            return True
        try:
            await asyncio.wait_for(self._event.wait(), timeout)
        except TimeoutError:
            return self._event.is_set()
        return True


class Event:
    def __init__(self) -> None:
        self._event = threading.Event()

    def set(self) -> None:
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._event.wait(timeout)


# -- single-flight -------------------------------------------------------------------------


# -- daemons ------------------------------------------------------------------------------


# -- background jobs -----------------------------------------------------------------------
