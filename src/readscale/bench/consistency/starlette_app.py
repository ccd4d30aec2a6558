"""The Starlette application of a consistency service process: ``POST /w``, ``GET /r``,
``POST /wb``, ``/stats`` and ``/health`` over its :class:`Service`, behind the ASGI
causal-token middleware (``service.build``)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

from readscale.bench.consistency.served import SERVED

if TYPE_CHECKING:
    from readscale.bench.consistency.service import Service

__all__ = ["starlette_app"]


def starlette_app(service: Service) -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from readscale import LATEST, BoundedStaleness
    from readscale._shared.replicas.causal_context import current_context
    from readscale.errors import ReadscaleError

    def mode_of(text: str | None) -> Any:
        if not text or text == "session":
            return None
        if text == "latest":
            return LATEST
        if text.startswith("bs:"):
            return BoundedStaleness(float(text[3:]))
        raise ValueError(f"unknown mode {text!r}")

    def position() -> int | None:
        context = current_context()
        token = context.token if context is not None else None
        return None if token is None else token.lsn

    async def guarded(work: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]) -> JSONResponse:
        served: dict[str, Any] = {}
        reset = SERVED.set(served)
        try:
            body = await work(served)
        except ReadscaleError as exc:
            return JSONResponse({"error": f"{type(exc).__name__}: {exc}"}, status_code=503)
        finally:
            SERVED.reset(reset)
        return JSONResponse(body | {"nodes": served.get("nodes", []), "loaded": bool(served.get("loaded")),
                                    "pos": position(), "proc": service.config.name})  # fmt: skip

    async def read(request: Request) -> JSONResponse:
        key = int(request.query_params["k"])
        api = request.query_params.get("api", "fetch")
        mode = mode_of(request.query_params.get("mode"))

        async def work(served: dict[str, Any]) -> dict[str, Any]:
            return {"v": await service.read(api, key, mode)}

        return await guarded(work)

    async def write(request: Request) -> JSONResponse:
        key = int(request.query_params["k"])
        invalidate = request.query_params.get("inv", "app") == "app"

        async def work(served: dict[str, Any]) -> dict[str, Any]:
            return await service.write(key, invalidate)

        return await guarded(work)

    async def write_behind(request: Request) -> JSONResponse:
        key = int(request.query_params["k"])

        async def work(served: dict[str, Any]) -> dict[str, Any]:
            return await service.write_behind(key)

        return await guarded(work)

    async def stats(request: Request) -> JSONResponse:
        router = service.router.stats()
        cache = service.cache.stats
        bus = service.cache.bus.stats if service.cache.bus is not None else None
        return JSONResponse(
            {
                "router": {f.name: getattr(router, f.name) for f in dataclasses.fields(router)},
                "l1_hits": cache.l1.hits,
                "l2_hits": cache.l2.hits,
                "fills_refused": cache.loader.fills_refused,
                "loader_calls": cache.loader.calls,
                "bus_disconnects": None if bus is None else bus.disconnects,
                "bus_received": None if bus is None else bus.received,
            }
        )

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True, "proc": service.config.name})

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        await service.open()
        await asyncio.to_thread(service.open_sync)
        try:
            yield
        finally:
            await service.close()

    return Starlette(
        routes=[
            Route("/r", read),
            Route("/w", write, methods=["POST"]),
            Route("/wb", write_behind, methods=["POST"]),
            Route("/stats", stats),
            Route("/health", health),
        ],
        lifespan=lifespan,
    )
