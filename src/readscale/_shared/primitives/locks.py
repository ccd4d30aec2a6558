"""The few things that truly differ between sync and async code, written as twins.

Drivers are written once, async, under ``readscale._async``; ``scripts/unasync.py``
turns ``AsyncLock`` into ``Lock``, ``async_sleep`` into ``sync_sleep`` and so on, so each
async name here has a sync twin with the same behaviour. One behavioural suite
(``tests/_async/test_primitives.py``, generated to ``tests/_sync``) holds both to it.

- Lock, Event: thin wrappers with one API (``wait`` takes a timeout and says whether
  the event was set).
- SingleFlight: concurrent callers of one key share one call of the function. The call
  runs on its own (an asyncio task, or the first caller's thread), so a caller that gives
  up or is cancelled does not cancel the work the others wait for.
- Background: at most one background job per key (a stale-while-revalidate refresh),
  errors logged, never raised into a reader.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
import queue
import threading
import time
from collections.abc import Awaitable, Callable, Hashable
from concurrent.futures import Future, ThreadPoolExecutor
from types import TracebackType
from typing import Any, Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

log = logging.getLogger("readscale")


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


# -- daemons ------------------------------------------------------------------------------


class AsyncDaemon:
    """Runs ``fn(stop)`` as a task until ``stop()``; ``fn`` should return once ``stop`` is set."""

    def __init__(self, fn: Callable[[AsyncEvent], Awaitable[None]], name: str) -> None:
        self._fn = fn
        self._name = name
        self._stop = AsyncEvent()
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.ensure_future(self._fn(self._stop))

    async def stop(self) -> None:
        self._stop.set()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


class Daemon:
    """Runs ``fn(stop)`` on a daemon thread until ``stop()``; ``fn`` should return once
    ``stop`` is set (it is joined for up to a few seconds)."""

    def __init__(self, fn: Callable[[Event], None], name: str) -> None:
        self._fn = fn
        self._name = name
        self._stop = Event()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._fn, args=(self._stop,), name=self._name, daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5.0)


# -- background jobs -----------------------------------------------------------------------


class AsyncBackground(Generic[K]):
    """At most one background job per key; failures are logged and counted, never raised."""

    def __init__(self, on_error: Callable[[K, BaseException], None] | None = None) -> None:
        self._tasks: dict[K, asyncio.Task[Any]] = {}
        self._on_error = on_error

    def running(self, key: K) -> bool:
        return key in self._tasks

    def spawn(self, key: K, fn: Callable[[], Awaitable[Any]]) -> bool:
        """Start ``fn`` unless a job for ``key`` is running; true if it was started."""
        if key in self._tasks:
            return False

        async def job() -> None:
            try:
                await fn()
            except Exception as exc:
                self._failed(key, exc)
            finally:
                self._tasks.pop(key, None)

        # A fresh context: the job is nobody's request (no request-scoped contextvars leak
        # into it, and it does not count against the request that happened to start it).
        self._tasks[key] = asyncio.get_running_loop().create_task(job(), context=contextvars.Context())
        return True

    def _failed(self, key: K, exc: BaseException) -> None:
        log.warning("readscale background job for %r failed: %s", key, exc, exc_info=exc)
        if self._on_error is not None:
            self._on_error(key, exc)

    async def drain(self) -> None:
        """Wait for every running job (tests and shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks.values()), return_exceptions=True)

    async def close(self) -> None:
        for task in list(self._tasks.values()):
            task.cancel()
        await asyncio.gather(*list(self._tasks.values()), return_exceptions=True)
        self._tasks.clear()


class Background(Generic[K]):
    """At most one background job per key; failures are logged and counted, never raised."""

    def __init__(self, on_error: Callable[[K, BaseException], None] | None = None, max_workers: int = 4) -> None:
        self._jobs: dict[K, Future[None]] = {}
        self._lock = threading.Lock()
        self._on_error = on_error
        self._max_workers = max_workers
        self._pool: ThreadPoolExecutor | None = None

    def running(self, key: K) -> bool:
        return key in self._jobs

    def spawn(self, key: K, fn: Callable[[], Any]) -> bool:
        with self._lock:
            if key in self._jobs:
                return False
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self._max_workers, thread_name_prefix="readscale-bg")

            def job() -> None:
                try:
                    fn()
                except Exception as exc:
                    self._failed(key, exc)
                finally:
                    with self._lock:
                        self._jobs.pop(key, None)

            self._jobs[key] = self._pool.submit(job)
            return True

    def _failed(self, key: K, exc: BaseException) -> None:
        log.warning("readscale background job for %r failed: %s", key, exc, exc_info=exc)
        if self._on_error is not None:
            self._on_error(key, exc)

    def drain(self) -> None:
        while True:
            with self._lock:
                jobs = list(self._jobs.values())
            if not jobs:
                return
            for job in jobs:
                job.exception()

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        self._jobs.clear()
