"""Run N callers at once, as coroutines or as threads: the twin helpers of the tests.

Async tests call ``async_gather``; unasync turns it into ``sync_gather``, which runs the
same callables on real threads, so one test source checks both flavours under real
concurrency.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Sequence
from typing import Any


async def async_gather(calls: Sequence[Callable[[], Awaitable[Any]]], *, return_exceptions: bool = False) -> list[Any]:
    return list(await asyncio.gather(*(call() for call in calls), return_exceptions=return_exceptions))


def sync_gather(calls: Sequence[Callable[[], Any]], *, return_exceptions: bool = False) -> list[Any]:
    results: list[Any] = [None] * len(calls)
    errors: list[BaseException | None] = [None] * len(calls)
    start = threading.Barrier(len(calls))

    def worker(i: int) -> None:
        start.wait()
        try:
            results[i] = calls[i]()
        except BaseException as exc:
            errors[i] = exc

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for i, error in enumerate(errors):
        if error is not None:
            if not return_exceptions:
                raise error
            results[i] = error
    return results
