"""Browser-like clients for the demo: each with its own private HTTP cache.

hishel implements RFC 9111 for httpx (freshness from max-age, revalidation with
If-None-Match, Vary). Its stores are SQLite and Redis; a load generator with a few
hundred clients wants each browser's cache in memory, so this module adds a small
in-memory store behind hishel's storage interface. Each response tells which layer
answered it: the browser's own cache, the edge (Varnish's X-Cache), or the application
(its X-Readscale-Served header).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

import httpx
from hishel import AsyncBaseStorage, CacheOptions, Entry, Headers, Request, Response
from hishel.httpx import AsyncCacheTransport


class MemoryStorage(AsyncBaseStorage):
    """hishel's storage contract, in a dict: one browser's private cache."""

    def __init__(self, max_entries: int = 2_000) -> None:
        super().__init__()
        self.max_entries = max_entries
        self._entries: dict[str, list[tuple[Entry, bytes, float | None]]] = {}
        self._by_id: dict[uuid.UUID, str] = {}

    async def create_entry(
        self,
        request: Request,
        response: Response,
        key: str,
        *,
        ttl: float | None = None,
        tti: float | None = None,
    ) -> Entry:
        deadline, _ = self._limits(ttl, tti, time.time())
        entry = Entry(id=uuid.uuid4(), request=request, response=replace(response, stream=None))
        source = response.stream
        chunks: list[bytes] = []
        storage = self

        async def saving() -> AsyncIterator[bytes]:
            if source is not None:
                async for chunk in source:  # type: ignore[union-attr]
                    chunks.append(chunk)
                    yield chunk
            storage._store(key, entry, b"".join(chunks), deadline)

        return replace(entry, response=replace(response, stream=saving()))

    def _store(self, key: str, entry: Entry, body: bytes, deadline: float | None) -> None:
        if len(self._by_id) >= self.max_entries and key not in self._entries:
            oldest = next(iter(self._entries))
            for old, _, _ in self._entries.pop(oldest):
                self._by_id.pop(old.id, None)
        self._entries.setdefault(key, []).append((entry, body, deadline))
        self._by_id[entry.id] = key

    async def get_entries(self, key: str) -> list[Entry]:
        now = time.time()
        found = []
        for entry, body, deadline in self._entries.get(key, []):
            if deadline is not None and deadline <= now:
                continue
            found.append(replace(entry, response=replace(entry.response, stream=_once(body))))
        return found

    async def update_headers(self, id: uuid.UUID, headers: Headers) -> None:
        key = self._by_id.get(id)
        if key is None:
            return
        self._entries[key] = [
            (replace(e, response=replace(e.response, headers=headers)) if e.id == id else e, body, deadline)
            for e, body, deadline in self._entries[key]
        ]

    async def remove_entry(self, id: uuid.UUID) -> None:
        key = self._by_id.pop(id, None)
        if key is not None:
            self._entries[key] = [item for item in self._entries[key] if item[0].id != id]
            if not self._entries[key]:
                del self._entries[key]

    @property
    def size(self) -> int:
        """Stored responses (not __len__: an empty store must stay truthy for hishel)."""
        return len(self._by_id)


async def _once(body: bytes) -> AsyncIterator[bytes]:
    yield body


@dataclass(frozen=True, slots=True)
class Served:
    """Which layer answered one request, and how long it took the client."""

    layer: str  # browser, edge, app_cache, replica, primary, error
    status: int
    seconds: float


def served_by(response: httpx.Response) -> str:
    """The layer that answered: the browser cache, the edge, or what the app reports."""
    caching: dict[str, bool] = response.extensions.get("caching") or {}
    if caching.get("from_cache") and not caching.get("revalidated"):
        return "browser"
    if response.headers.get("x-cache", "").startswith("HIT"):
        return "edge"
    app = str(response.headers.get("x-readscale-served", ""))
    if app.startswith("replica"):
        return "replica"
    if app == "primary" or app.startswith("app_cache"):
        return app.partition(":")[0]
    return "app_cache" if response.status_code == 304 else "unknown"


def browser_client(
    base_url: str,
    *,
    timeout: float = 10.0,
    storage: MemoryStorage | None = None,
    limits: httpx.Limits | None = None,
) -> httpx.AsyncClient:
    """An httpx client with a private, RFC 9111 cache of its own and a cookie jar (which
    scopes cookies by path, as a browser does)."""
    network = httpx.AsyncHTTPTransport(limits=limits or httpx.Limits(max_connections=4))
    transport = AsyncCacheTransport(network, storage=storage or MemoryStorage(), rfc=CacheOptions(shared=False))
    return httpx.AsyncClient(base_url=base_url, transport=transport, timeout=timeout, cookies=None)
