"""Edge purgers: Varnish (xkey, URL PURGE), Fastly, Cloudflare, and a recording one.

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
from collections.abc import AsyncGenerator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable
from urllib.parse import quote, urlsplit

import httpx

from readscale._core.http import Vendor, wire_tag
from readscale._shared.primitives.locks import async_sleep
from readscale.errors import ConfigurationError, PurgeError

_PURGED = re.compile(r"(?:Purged|Soft-purged) (\d+)")


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


@dataclass
class PurgeStats:
    """Counters of one purger (or queue)."""

    requests: int = 0
    retries: int = 0
    failures: int = 0
    tags: int = 0
    urls: int = 0
    purged: int = 0


@runtime_checkable
class AsyncPurger(Protocol):
    """Invalidate objects at the edge, by tag or by URL."""

    async def purge_tags(self, tags: Sequence[str], *, soft: bool = True) -> PurgeResult: ...

    async def purge_urls(self, urls: Sequence[str]) -> PurgeResult: ...


def _batches(items: Sequence[str], size: int) -> Iterable[Sequence[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if value is not None and value.strip().isdigit():
        return float(value.strip())
    return None


class _HttpPurger:
    """Shared sending loop: retries, backoff, counting."""

    vendor: str = "edge"

    def __init__(
        self, client: httpx.AsyncClient | None, retry: RetryPolicy | None, rng: random.Random | None, timeout: float
    ) -> None:
        self._own_client = client is None
        self.client = client if client is not None else httpx.AsyncClient(timeout=timeout)
        self.retry = retry or RetryPolicy()
        self.rng = rng or random.Random()
        self.stats = PurgeStats()

    async def _send(self, request: httpx.Request) -> httpx.Response:
        last: str = ""
        for attempt in range(self.retry.attempts):
            if attempt:
                self.stats.retries += 1
            self.stats.requests += 1
            retry_after = None
            try:
                response = await self.client.send(request)
            except httpx.TransportError as exc:
                last = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code < 400:
                    return response
                last = f"HTTP {response.status_code} {response.reason_phrase}"
                if response.status_code != 429 and response.status_code < 500:
                    break
                retry_after = _retry_after(response)
            if attempt + 1 < self.retry.attempts:
                await async_sleep(self.retry.delay(attempt, self.rng, retry_after))
        self.stats.failures += 1
        raise PurgeError(f"{self.vendor} purge {request.method} {request.url} failed: {last}", backend=self.vendor)

    async def aclose(self) -> None:
        if self._own_client:
            await self.client.aclose()


class AsyncVarnishPurger(_HttpPurger):
    """Varnish running readscale's VCL: ``PURGE`` with ``xkey-(soft)purge``, or a URL.

    ``edge_url`` is Varnish's address (the VCL accepts purges from loopback only).
    """

    vendor = "varnish"

    def __init__(
        self,
        edge_url: str,
        *,
        client: httpx.AsyncClient | None = None,
        retry: RetryPolicy | None = None,
        rng: random.Random | None = None,
        timeout: float = 5.0,
        tags_per_request: int = 100,
    ) -> None:
        super().__init__(client, retry, rng, timeout)
        self.edge_url = edge_url.rstrip("/")
        self.tags_per_request = tags_per_request

    async def purge_tags(self, tags: Sequence[str], *, soft: bool = True) -> PurgeResult:
        wire = list(dict.fromkeys(wire_tag(t, "varnish") for t in tags))
        result = PurgeResult()
        header = "xkey-softpurge" if soft else "xkey-purge"
        for batch in _batches(wire, self.tags_per_request):
            request = self.client.build_request("PURGE", self.edge_url + "/", headers={header: " ".join(batch)})
            response = await self._send(request)
            found = _PURGED.search(response.reason_phrase) or _PURGED.search(response.text)
            result = result + PurgeResult(1, int(found.group(1)) if found else None)
        self.stats.tags += len(wire)
        self.stats.purged += result.purged or 0
        return result

    async def purge_urls(self, urls: Sequence[str]) -> PurgeResult:
        result = PurgeResult()
        for url in dict.fromkeys(urls):
            parts = urlsplit(url)
            path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            headers = {"host": parts.netloc} if parts.netloc else {}
            request = self.client.build_request("PURGE", self.edge_url + path, headers=headers)
            await self._send(request)
            result = result + PurgeResult(1, None)
        self.stats.urls += len(set(urls))
        return result


class AsyncFastlyPurger(_HttpPurger):
    """Fastly: surrogate-key purges (256 keys a call, soft by default) and URL purges."""

    vendor = "fastly"

    def __init__(
        self,
        service_id: str,
        token: str,
        *,
        api: str = "https://api.fastly.com",
        client: httpx.AsyncClient | None = None,
        retry: RetryPolicy | None = None,
        rng: random.Random | None = None,
        timeout: float = 10.0,
    ) -> None:
        if not service_id or not token:
            raise ConfigurationError("Fastly purger needs a service id and an API token")
        super().__init__(client, retry, rng, timeout)
        self.service_id = service_id
        self.api = api.rstrip("/")
        self._auth = {"fastly-key": token, "accept": "application/json"}

    async def purge_tags(self, tags: Sequence[str], *, soft: bool = True) -> PurgeResult:
        wire = list(dict.fromkeys(wire_tag(t, "fastly") for t in tags))
        result = PurgeResult()
        headers = dict(self._auth)
        if soft:
            headers["fastly-soft-purge"] = "1"
        for batch in _batches(wire, 256):
            request = self.client.build_request(
                "POST",
                f"{self.api}/service/{quote(self.service_id, safe='')}/purge",
                headers={**headers, "surrogate-key": " ".join(batch)},
            )
            await self._send(request)
            result = result + PurgeResult(1, None)
        self.stats.tags += len(wire)
        return result

    async def purge_urls(self, urls: Sequence[str]) -> PurgeResult:
        result = PurgeResult()
        for url in dict.fromkeys(urls):
            parts = urlsplit(url)
            target = f"{parts.netloc}{parts.path or '/'}" + (f"?{parts.query}" if parts.query else "")
            request = self.client.build_request("POST", f"{self.api}/purge/{target}", headers=self._auth)
            await self._send(request)
            result = result + PurgeResult(1, None)
        self.stats.urls += len(set(urls))
        return result


class AsyncCloudflarePurger(_HttpPurger):
    """Cloudflare: purge by Cache-Tag or by URL, 30 items a call (the API's limit)."""

    vendor = "cloudflare"

    def __init__(
        self,
        zone_id: str,
        token: str,
        *,
        api: str = "https://api.cloudflare.com/client/v4",
        client: httpx.AsyncClient | None = None,
        retry: RetryPolicy | None = None,
        rng: random.Random | None = None,
        timeout: float = 10.0,
        items_per_request: int = 30,
    ) -> None:
        if not zone_id or not token:
            raise ConfigurationError("Cloudflare purger needs a zone id and an API token")
        super().__init__(client, retry, rng, timeout)
        self.zone_id = zone_id
        self.api = api.rstrip("/")
        self.items_per_request = items_per_request
        self._auth = {"authorization": f"Bearer {token}"}

    async def _purge(self, kind: str, items: Sequence[str]) -> PurgeResult:
        result = PurgeResult()
        for batch in _batches(items, self.items_per_request):
            request = self.client.build_request(
                "POST",
                f"{self.api}/zones/{quote(self.zone_id, safe='')}/purge_cache",
                headers=self._auth,
                json={kind: list(batch)},
            )
            await self._send(request)
            result = result + PurgeResult(1, None)
        return result

    async def purge_tags(self, tags: Sequence[str], *, soft: bool = True) -> PurgeResult:
        wire = list(dict.fromkeys(wire_tag(t, "cloudflare") for t in tags))
        self.stats.tags += len(wire)
        return await self._purge("tags", wire)

    async def purge_urls(self, urls: Sequence[str]) -> PurgeResult:
        unique = list(dict.fromkeys(urls))
        self.stats.urls += len(unique)
        return await self._purge("files", unique)


@dataclass
class AsyncRecordingPurger:
    """Records every purge instead of sending it (tests, dry runs)."""

    vendor: Vendor = "varnish"
    tag_purges: list[tuple[tuple[str, ...], bool]] = field(default_factory=list)
    url_purges: list[tuple[str, ...]] = field(default_factory=list)

    async def purge_tags(self, tags: Sequence[str], *, soft: bool = True) -> PurgeResult:
        self.tag_purges.append((tuple(wire_tag(t, self.vendor) for t in tags), soft))
        return PurgeResult(1, None)

    async def purge_urls(self, urls: Sequence[str]) -> PurgeResult:
        self.url_purges.append(tuple(urls))
        return PurgeResult(1, None)

    @property
    def tags(self) -> list[str]:
        return [t for batch, _ in self.tag_purges for t in batch]


class AsyncPurgeQueue:
    """Collect purges during a unit of work; send them, de-duplicated, after commit.

    ``add_tags``/``add_urls`` only record. ``flush`` sends everything to each purger
    (fan-out to several edges), then forgets it; ``discard`` forgets without sending
    (rollback). ``purge_tags`` makes the queue itself a purge target for an
    invalidation source: it records and flushes at once.
    """

    def __init__(self, *purgers: AsyncPurger, soft: bool = True) -> None:
        if not purgers:
            raise ConfigurationError("a purge queue needs at least one purger")
        self.purgers = purgers
        self.soft = soft
        self._tags: dict[str, None] = {}
        self._urls: dict[str, None] = {}
        self.stats = PurgeStats()

    def add_tags(self, *tags: str) -> None:
        self._tags.update(dict.fromkeys(tags))

    def add_urls(self, *urls: str) -> None:
        self._urls.update(dict.fromkeys(urls))

    @property
    def pending(self) -> tuple[list[str], list[str]]:
        return list(self._tags), list(self._urls)

    def discard(self) -> None:
        self._tags.clear()
        self._urls.clear()

    @asynccontextmanager
    async def after_commit(self) -> AsyncGenerator[AsyncPurgeQueue, None]:
        """Collect inside the block, send when it exits cleanly, forget if it raises.

        Put the database transaction *inside*: it commits first, then the purge goes::

            async with queue.after_commit():
                async with db.transaction():
                    await save(product)
                    queue.add_tags(f"product:{product.id}")
        """
        try:
            yield self
        except BaseException:
            self.discard()
            raise
        await self.flush()

    async def flush(self) -> PurgeResult:
        """Send what was collected. Raises PurgeError if any purger failed after retries
        (the others were still sent); what failed is kept for the next flush."""
        tags, urls = list(self._tags), list(self._urls)
        self.discard()
        result = PurgeResult()
        errors: list[PurgeError] = []
        for purger in self.purgers:
            try:
                if tags:
                    result = result + await purger.purge_tags(tags, soft=self.soft)
                if urls:
                    result = result + await purger.purge_urls(urls)
            except PurgeError as exc:
                errors.append(exc)
        self.stats.requests += result.requests
        self.stats.tags += len(tags)
        self.stats.urls += len(urls)
        self.stats.purged += result.purged or 0
        if errors:
            self.stats.failures += len(errors)
            self.add_tags(*tags)
            self.add_urls(*urls)
            raise PurgeError("; ".join(str(e) for e in errors))
        return result

    async def purge_tags(self, tags: Sequence[str], *, soft: bool = True) -> PurgeResult:
        self.add_tags(*tags)
        return await self.flush()

    async def purge_urls(self, urls: Sequence[str]) -> PurgeResult:
        self.add_urls(*urls)
        return await self.flush()


@dataclass(frozen=True, slots=True)
class PrewarmResult:
    statuses: dict[str, int]

    @property
    def ok(self) -> int:
        return sum(1 for s in self.statuses.values() if 200 <= s < 400)


async def prewarm(urls: Sequence[str], *, client: httpx.AsyncClient) -> PrewarmResult:
    """Request each URL through the edge so the next visitor gets a hit (push-CDN style).

    Sent without cookies or credentials: a prewarm must fill the shared variant.
    A URL that fails is reported with status 0, never raised.
    """
    statuses: dict[str, int] = {}
    for url in dict.fromkeys(urls):
        try:
            response = await client.get(url)
            statuses[url] = response.status_code
        except httpx.TransportError:
            statuses[url] = 0
    return PrewarmResult(statuses)
