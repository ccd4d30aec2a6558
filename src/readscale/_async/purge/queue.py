"""The after-commit purge queue (:class:`AsyncPurgeQueue`: ``add_tags`` inside a
transaction, ``flush`` after commit, so a purge never races ahead of the write it
announces, P14) and :func:`prewarm`.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx

from readscale._async.purge.base import AsyncPurger, PurgeResult, PurgeStats
from readscale.errors import ConfigurationError, PurgeError


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
