"""The ASGI response cache middleware, in process (the served stack is in
tests/browser/test_response_cache.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import StreamingResponse
from starlette.routing import Route

from readscale import AsyncCache
from readscale._async.backends.memory import AsyncMemoryBackend
from readscale._core.http import HttpPolicy
from readscale.starlette import ResponseCacheMiddleware, http_policy


@http_policy(HttpPolicy.public(0, edge_max_age=60))
async def feed(request: Any) -> StreamingResponse:
    async def chunks() -> AsyncIterator[bytes]:
        for part in (b"a", b"b", b"c"):
            await asyncio.sleep(0)
            yield part

    return StreamingResponse(chunks(), headers={"cache-control": "public, max-age=60"})


@pytest.mark.timeout(10, method="signal")  # a frozen loop never reaches wait_for's timeout
def test_a_streaming_response_does_not_stall_the_event_loop() -> None:
    """StreamingResponse listens for the client's disconnect while it streams: the
    middleware's inner ``receive`` must wait as a server's does, not answer at once for
    ever (which spun the loop and froze every other task)."""
    app = Starlette(routes=[Route("/feed", feed)])
    app.add_middleware(ResponseCacheMiddleware, cache=AsyncCache(AsyncMemoryBackend()))
    beats = 0

    async def heartbeat() -> None:
        nonlocal beats
        while True:
            beats += 1
            await asyncio.sleep(0.001)

    async def main() -> httpx.Response:
        beat = asyncio.create_task(heartbeat())
        try:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                before = beats
                response = await asyncio.wait_for(client.get("/feed"), timeout=10)
                again = await asyncio.wait_for(client.get("/feed"), timeout=10)
                assert again.content == b"abc"
                await asyncio.sleep(0.01)
                assert beats > before, "the heartbeat kept beating"
                return response
        finally:
            beat.cancel()

    response = asyncio.run(main())
    assert response.status_code == 200 and response.content == b"abc"
