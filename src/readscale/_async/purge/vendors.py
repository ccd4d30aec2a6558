"""The edge purgers of the CDN vendors: Fastly, Cloudflare, and a recording one (tests, dry
runs); Varnish, an edge of one or several nodes, is in ``varnish.py``. Each speaks
``readscale._async.purge.base.AsyncPurger``.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import quote, urlsplit

import httpx

from readscale._async.purge.base import HttpPurger, PurgeResult, RetryPolicy, in_batches
from readscale._core.http import Vendor, wire_tag
from readscale.errors import ConfigurationError
from readscale.settings import check_url


class AsyncFastlyPurger(HttpPurger):
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
        check_url(api, name="the Fastly purger's api", schemes=("https", "http"))
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
        for batch in in_batches(wire, 256):
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


class AsyncCloudflarePurger(HttpPurger):
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
        check_url(api, name="the Cloudflare purger's api", schemes=("https", "http"))
        super().__init__(client, retry, rng, timeout)
        self.zone_id = zone_id
        self.api = api.rstrip("/")
        self.items_per_request = items_per_request
        self._auth = {"authorization": f"Bearer {token}"}

    async def _purge(self, kind: str, items: Sequence[str]) -> PurgeResult:
        result = PurgeResult()
        for batch in in_batches(items, self.items_per_request):
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
