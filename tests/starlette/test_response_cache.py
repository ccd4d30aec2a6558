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
from readscale._async.http.response_cache import AsyncResponseCache
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


def test_a_streamed_or_large_response_goes_through_as_it_comes() -> None:
    """A response with no Content-Length, or over ``max_body``, is never stored: the
    client gets each chunk before the app makes the next (the body is not buffered whole)."""
    events: list[str] = []

    @http_policy(HttpPolicy.public(0, edge_max_age=60))
    async def stream(request: Any) -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            for n in range(3):
                events.append(f"made {n}")
                yield b"x" * 10

        return StreamingResponse(chunks(), headers={"cache-control": "public, max-age=60"})

    @http_policy(HttpPolicy.public(0, edge_max_age=60))
    async def large(request: Any) -> Any:
        from starlette.responses import Response

        return Response(b"y" * 100, headers={"cache-control": "public, max-age=60"})

    app = Starlette(routes=[Route("/stream", stream), Route("/large", large)])
    responses = AsyncResponseCache(AsyncCache(AsyncMemoryBackend()), max_body=50)
    app.add_middleware(ResponseCacheMiddleware, response_cache=responses)

    async def get(path: str) -> list[dict[str, Any]]:
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            await asyncio.Event().wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.body" and message.get("body"):
                events.append(f"sent {len(message['body'])}")
            sent.append(message)

        scope = {"type": "http", "method": "GET", "path": path, "raw_path": path.encode(), "query_string": b"",
                 "headers": [(b"host", b"t")], "scheme": "http", "root_path": "", "http_version": "1.1",
                 "server": ("t", 80), "client": ("c", 1)}  # fmt: skip
        await asyncio.wait_for(app(scope, receive, send), timeout=10)
        return sent

    async def main() -> None:
        for _ in range(2):
            sent = await get("/stream")
            assert b"".join(m.get("body", b"") for m in sent[1:]) == b"x" * 30
        assert events == ["made 0", "sent 10", "made 1", "sent 10", "made 2", "sent 10"] * 2
        for _ in range(2):
            sent = await get("/large")
            assert sent[0]["status"] == 200 and b"".join(m.get("body", b"") for m in sent[1:]) == b"y" * 100
        assert responses.stats.stored == 0 and responses.stats.passes == 4

    asyncio.run(main())
