"""A service run by uvicorn with several workers (``tests/test_metrics.py``): each request
is one cache miss, counted by the worker that served it; ``/metrics`` answers what
:class:`readscale.metrics.SharedMetrics` adds up (``SHARED=0``: the worker's own registry,
what a scrape gave before, to see the test fail)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from readscale._async.backends.memory import AsyncMemoryBackend
from readscale._async.cache.cache import AsyncCache
from readscale.metrics import CacheCollector, SharedMetrics


def build() -> Any:
    cache = AsyncCache(AsyncMemoryBackend(), name="workers")
    registry = CollectorRegistry()
    registry.register(CacheCollector(cache.stats))
    shared = SharedMetrics(registry, os.environ["READSCALE_TEST_METRICS_DIR"], interval=0.2)
    count = 0

    async def miss(request: Request) -> Response:
        nonlocal count
        count += 1
        await cache.get(f"{os.getpid()}:{count}")
        return Response("ok", headers={"x-pid": str(os.getpid())})

    async def metrics(request: Request) -> Response:
        body = shared.exposition() if os.environ.get("SHARED", "1") == "1" else generate_latest(registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST, headers={"x-pid": str(os.getpid())})

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        shared.start()  # in the worker, after the fork
        yield
        shared.stop()

    return Starlette(routes=[Route("/miss", miss), Route("/metrics", metrics)], lifespan=lifespan)
