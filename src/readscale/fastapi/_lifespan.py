"""One lifespan for what readscale opens in a FastAPI (or Starlette) app: the replica
router's pools, the cache's invalidation bus, the write-behind flusher, in that order,
and closed in the reverse one at shutdown, so nothing is left connected.

Why a helper: a hand-written lifespan forgets one of them (the bus starts lazily on the
first read, so the first requests after a deploy miss the invalidations sent meanwhile;
a flusher task left running keeps its Redis client open; a router never closed keeps its
pools until the process dies). The resources are also handed to every request through
the lifespan state (:data:`STATE_KEY`), where the dependencies (``readscale.fastapi._deps``)
find them: no module-level global to import into the routes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from readscale.errors import ConfigurationError

if TYPE_CHECKING:
    from readscale._async.cache.cache import AsyncCache
    from readscale._async.replicas.router import AsyncReplicaRouter
    from readscale._async.writebehind.flusher import AsyncFlusher
    from readscale._async.writebehind.producer import AsyncWriteBehind

__all__ = ["STATE_KEY", "Resources", "lifespan"]

#: The lifespan state's key that holds the :class:`Resources` (``request.state.readscale``).
STATE_KEY = "readscale"
log = logging.getLogger("readscale.fastapi")

Lifespan = Callable[[Any], AbstractAsyncContextManager[Mapping[str, Any] | None]]


@dataclass(frozen=True, slots=True)
class Resources:
    """What the lifespan opened, as the dependencies hand it to a route."""

    cache: AsyncCache | None = None
    router: AsyncReplicaRouter | None = None
    write_behind: AsyncWriteBehind | None = None
    flusher: AsyncFlusher | None = None


def lifespan(
    *,
    cache: AsyncCache | None = None,
    router: AsyncReplicaRouter | None = None,
    write_behind: AsyncWriteBehind | None = None,
    flusher: AsyncFlusher | None = None,
    inner: Lifespan | None = None,
) -> Callable[[Any], AbstractAsyncContextManager[dict[str, Any]]]:
    """The app's lifespan: ``FastAPI(lifespan=lifespan(cache=cache, router=router))``.

    At startup: open the router's pools (one poll of every node, the lag observer), start
    the cache's invalidation bus (a Redis that is not there yet is logged and retried on
    the next read: the cache fails open), check the write-behind Redis against its
    durability mode (a Redis that cannot keep it stops the startup with
    :class:`~readscale.errors.DurabilityError`), start the flusher's checks and run it in
    a task. Then ``inner`` (your own lifespan; its state joins the app's). At shutdown,
    in reverse: ``inner``, the flusher (its batch in hand committed, its Redis client
    and its writer's connection closed), the cache (background refreshes, the bus, the backend's pool), the router
    (its observer and every pool).
    """
    if cache is None and router is None and write_behind is None and flusher is None:
        raise ConfigurationError("readscale.fastapi.lifespan() was given nothing to open: pass cache=, router=, ...")
    if write_behind is not None and cache is not None and write_behind.cache is not cache:
        raise ConfigurationError("write_behind= is over another cache than cache=: pass the cache it writes to")
    resources = Resources(cache, router, write_behind, flusher)

    @contextlib.asynccontextmanager
    async def run(app: Any) -> AsyncIterator[dict[str, Any]]:
        async with AsyncExitStack() as stack:
            if router is not None:
                await router.open()
                stack.push_async_callback(router.close)
            if cache is not None:
                stack.push_async_callback(cache.aclose)
                await cache.coherence.ensure_bus()  # logs and stays pending when Redis is away
            if write_behind is not None:
                await write_behind.check()
            if flusher is not None:
                writer_close = getattr(flusher.writer, "aclose", None)
                if writer_close is not None:  # its database connection: nothing left open at shutdown
                    stack.push_async_callback(writer_close)
                stack.push_async_callback(flusher.aclose)
                await flusher.start()
                task = asyncio.create_task(flusher.run(), name="readscale-flusher")
                stack.push_async_callback(_stop_flusher, flusher, task)
            state: dict[str, Any] = {}
            if inner is not None:
                inner_state = await stack.enter_async_context(inner(app))
                state.update(inner_state or {})
            state[STATE_KEY] = resources
            yield state

    return run


async def _stop_flusher(flusher: AsyncFlusher, task: asyncio.Task[None]) -> None:
    flusher.stop()
    try:
        await task
    except Exception as exc:  # a configuration error the flusher met while running: said, not hidden
        log.error(
            "readscale.fastapi: the write-behind flusher had stopped: %s",
            exc,
            exc_info=exc,
            extra={"event": "flusher_stopped", "reason": str(exc)},
        )
