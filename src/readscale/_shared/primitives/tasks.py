"""Background work, as twins: a daemon loop until stopped, and at most one background
job per key (a stale-while-revalidate refresh), errors logged, never raised into a reader.
Part of the twins of ``readscale._shared.primitives`` (see ``locks``)."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
from collections.abc import Awaitable, Callable, Hashable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Generic, TypeVar

from readscale._shared.primitives.locks import AsyncEvent, Event

K = TypeVar("K", bound=Hashable)

log = logging.getLogger("readscale")


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
        log.warning(
            "readscale background job for %r failed: %s",
            key,
            exc,
            exc_info=exc,
            extra={"event": "background_job_failed", "key": str(key), "reason": str(exc)},
        )
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
        log.warning(
            "readscale background job for %r failed: %s",
            key,
            exc,
            exc_info=exc,
            extra={"event": "background_job_failed", "key": str(key), "reason": str(exc)},
        )
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


# -- fan-out ---------------------------------------------------------------------------------

T = TypeVar("T")


async def async_fan_out(calls: Sequence[Callable[[], Awaitable[T]]]) -> list[T]:
    """Run every call concurrently and return their results in order (an edge purge
    goes to each node at once, so one slow node does not delay the others)."""
    return list(await asyncio.gather(*(call() for call in calls)))


def sync_fan_out(calls: Sequence[Callable[[], T]]) -> list[T]:
    """The sync twin: one thread per call, for the calls' duration."""
    if len(calls) <= 1:
        return [call() for call in calls]
    with ThreadPoolExecutor(len(calls), thread_name_prefix="readscale-fanout") as pool:
        futures = [pool.submit(call) for call in calls]
        return [future.result() for future in futures]
