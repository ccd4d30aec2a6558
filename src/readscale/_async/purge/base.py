"""What every edge purger shares: the :class:`AsyncPurger` protocol, results, retries and
the HTTP sending loop (the vendors are in ``vendors.py``, the after-commit queue in ``queue.py``).

Every purger speaks :class:`AsyncPurger`: ``purge_tags(tags, soft=...)`` and
``purge_urls(urls)``. Tags are sent in their wire form (:func:`wire_tag`), the same
the responses were tagged with. Requests are batched to each vendor's limit and
retried with exponential backoff and jitter on transport errors, 429 and 5xx
(honouring ``Retry-After``); a purge that still fails raises :class:`PurgeError`.

:class:`AsyncPurgeQueue` is what an application (or an invalidation source) feeds:
``add_tags`` inside a transaction, ``flush`` after commit (``discard`` on rollback), so
a purge never races ahead of the write it announces (P14). An invalidation source
(the cache's tag bus, CDC) calls ``purge_tags`` on any purger or the queue directly.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import httpx

from readscale._shared.primitives.locks import async_sleep
from readscale._shared.tracing import CLIENT, TRACING, note, span
from readscale.errors import PurgeError

PURGED_COUNT = re.compile(r"(?:Purged|Soft-purged) (\d+)")


@dataclass(frozen=True, slots=True)
class PurgeResult:
    """What a purge did: requests sent and, when the edge says, objects invalidated."""

    requests: int = 0
    purged: int | None = None

    def __add__(self, other: PurgeResult) -> PurgeResult:
        purged = None if self.purged is None and other.purged is None else (self.purged or 0) + (other.purged or 0)
        return PurgeResult(self.requests + other.requests, purged)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with full jitter: attempt n waits up to base * 2**n, capped."""

    attempts: int = 4
    base: float = 0.2
    cap: float = 5.0

    def delay(self, attempt: int, rng: random.Random, retry_after: float | None = None) -> float:
        if retry_after is not None:
            return min(retry_after, self.cap * 4)
        return rng.uniform(0, min(self.cap, self.base * 2**attempt))

    def delay_after(self, failures: int) -> float:
        """How long an edge node that failed ``failures`` times in a row is left alone
        before the next try (no jitter: the bound docs/edge.md states)."""
        return min(self.cap, self.base * 2.0 ** min(failures, 32))


@dataclass
class PurgeStats:
    """Counters of one purger (or queue)."""

    requests: int = 0
    retries: int = 0
    failures: int = 0
    tags: int = 0
    urls: int = 0
    purged: int = 0
    replays: int = 0  # backlogs of missed purges replayed to a node that answered again
    backlog: int = 0  # purges a node missed and has not been replayed yet (a gauge)


@runtime_checkable
class AsyncPurger(Protocol):
    """Invalidate objects at the edge, by tag or by URL."""

    async def purge_tags(self, tags: Sequence[str], *, soft: bool = True) -> PurgeResult: ...

    async def purge_urls(self, urls: Sequence[str]) -> PurgeResult: ...


def in_batches(items: Sequence[str], size: int) -> Iterable[Sequence[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def retry_after_seconds(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if value is not None and value.strip().isdigit():
        return float(value.strip())
    return None


class HttpPurger:
    """Shared sending loop: retries, backoff, counting."""

    vendor: str = "edge"

    @property
    def node(self) -> str:
        """The edge node (or the vendor's API) this purger sends to: a metric label."""
        return str(getattr(self, "edge_url", self.vendor))

    def __init__(
        self, client: httpx.AsyncClient | None, retry: RetryPolicy | None, rng: random.Random | None, timeout: float
    ) -> None:
        self._own_client = client is None
        self.client = client if client is not None else httpx.AsyncClient(timeout=timeout)
        self.retry = retry or RetryPolicy()
        self.rng = rng or random.Random()
        self.stats = PurgeStats()

    async def _send(
        self, request: httpx.Request, *, node: PurgeStats | None = None, attempts: int | None = None
    ) -> httpx.Response:
        """Send with retries (``attempts``, the policy's by default), counting in this
        purger's stats and, for an edge of several nodes, in the ``node``'s; one span
        for the request and its retries while tracing (``server.*`` name the node)."""
        if TRACING.tracer is None:
            return await self._send_with_retries(request, node, attempts)
        attributes: dict[str, str | int] = {
            "http.request.method": request.method,
            "server.address": request.url.host,
            "readscale.purge.vendor": self.vendor,
        }
        if request.url.port is not None:
            attributes["server.port"] = request.url.port
        with span("readscale.purge", attributes, CLIENT):
            return await self._send_with_retries(request, node, attempts)

    async def _send_with_retries(
        self, request: httpx.Request, node: PurgeStats | None, attempts: int | None
    ) -> httpx.Response:
        counters = (self.stats,) if node is None else (self.stats, node)
        attempts = self.retry.attempts if attempts is None else attempts
        last: str = ""
        for attempt in range(attempts):
            for stats in counters:
                stats.requests += 1
                stats.retries += 1 if attempt else 0
            retry_after = None
            note("readscale.purge.attempts", attempt + 1)
            try:
                response = await self.client.send(request)
            except httpx.TransportError as exc:
                last = f"{type(exc).__name__}: {exc}"
            else:
                note("http.response.status_code", response.status_code)
                if response.status_code < 400:
                    return response
                last = f"HTTP {response.status_code} {response.reason_phrase}"
                if response.status_code != 429 and response.status_code < 500:
                    break
                retry_after = retry_after_seconds(response)
            if attempt + 1 < attempts:
                await async_sleep(self.retry.delay(attempt, self.rng, retry_after))
        for stats in counters:
            stats.failures += 1
        raise PurgeError(f"{self.vendor} purge {request.method} {request.url} failed: {last}", backend=self.vendor)

    async def aclose(self) -> None:
        if self._own_client:
            await self.client.aclose()
