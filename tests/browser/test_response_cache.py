"""The response cache (issue 15) behind real uvicorn, for a FastAPI, a Django and a Flask app
(tests/browser/response_cache_apps.py), driven by real clients: httpx for the stampede,
hishel (an RFC 9111 client cache) for validators and Age, headless Chromium over the
DevTools protocol for language variants, and the stack's Varnish as the edge in front.
Each route counts its handler's runs (``/rc/counts``): every test asserts those counts.
"""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from hishel import CacheOptions, SqliteStorage
from hishel.httpx import CacheTransport
from tests.browser.cdp import Browser, find_chromium
from tests.browser.response_cache_apps import GREETINGS

from readscale import Cache
from readscale.backends import RedisBackend
from readscale.http.purge import VarnishPurger
from readscale.settings import RedisSettings
from readscale.stack import Stack, StackConfig
from readscale.testing.appserver import AppServer
from readscale.testing.shared import new_stack_root

pytestmark = [pytest.mark.slow, pytest.mark.stack]

FRAMEWORKS = ["fastapi", "django", "flask"]
EXTRA_ARGS = {"flask": ("--interface", "wsgi")}
_session = itertools.count()


@dataclass
class Site:
    framework: str
    app: AppServer
    edge: Stack
    prefix: str
    redis_url: str

    @property
    def url(self) -> str:
        return self.app.url

    @property
    def edge_url(self) -> str:
        return f"http://127.0.0.1:{self.edge.varnish.port}"

    def counts(self) -> dict[str, int]:
        return dict(httpx.get(self.url + "/rc/counts", timeout=30).json())

    def purge_tag(self, tag: str) -> None:
        """What an invalidation source does: one call, the application cache and the edge."""
        purger = VarnishPurger(self.edge_url)
        cache = Cache(RedisBackend(RedisSettings(url=self.redis_url)), prefix=self.prefix, purger=purger)
        try:
            cache.invalidate_tags(tag)
        finally:
            cache.close()
            purger.close()


@pytest.fixture(scope="module")
def rc_sites(redis_url: str) -> Iterator[dict[str, Site]]:
    root = new_stack_root("readscale-respcache-")
    started: list[AppServer | Stack] = []
    sites: dict[str, Site] = {}
    try:
        for framework in FRAMEWORKS:
            prefix = f"rs-rc-{framework}-{next(_session)}-{root.name}:"
            env = {"READSCALE_TEST_REDIS_URL": redis_url, "READSCALE_TEST_PREFIX": prefix}
            app = AppServer(
                f"tests.browser.response_cache_apps:{framework}",
                env=env,
                log=root / f"{framework}.log",
                extra_args=EXTRA_ARGS.get(framework, ()),
            ).start()
            started.append(app)
            edge = Stack(root / f"edge-{framework}")
            started.append(edge)
            edge.up(StackConfig(postgres=False, redis=False, varnish=True, varnish_backend=app.url))
            sites[framework] = Site(framework, app, edge, prefix, redis_url)
        yield sites
    finally:
        for part in reversed(started):
            if isinstance(part, Stack):
                part.down()
            else:
                part.stop()


@pytest.fixture(params=FRAMEWORKS)
def site(request: pytest.FixtureRequest, rc_sites: dict[str, Site]) -> Site:
    return rc_sites[str(request.param)]


def test_a_stampede_runs_the_handler_once(site: Site) -> None:
    """200 concurrent requests for one key, none stored yet: one handler run, 200 answers
    with the same body (the others waited for it: the cache's single-flight and lease)."""

    async def stampede() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
        async with httpx.AsyncClient(base_url=site.url, limits=limits, timeout=60) as client:
            return await asyncio.gather(*(client.get("/rc/slow") for _ in range(200)))

    before = site.counts().get("slow", 0)
    answers = asyncio.run(stampede())
    assert [r.status_code for r in answers] == [200] * 200
    assert {r.text for r in answers} == {f"slow {before + 1}"}
    assert site.counts()["slow"] == before + 1, "the handler ran more than once for one key"
    assert sum("readscale;hit" in r.headers.get("cache-status", "") for r in answers) + 1 >= 1


def test_private_cookie_setting_and_authorized_responses_are_never_stored(site: Site) -> None:
    """Five anonymous requests each (no cookie jar): a private page, a page that sets a
    cookie, and a public page asked with Authorization: the handler runs every time."""
    before = site.counts()
    for _ in range(5):
        for path in ("/rc/private", "/rc/cookie"):
            r = httpx.get(site.url + path, timeout=30)
            assert r.status_code == 200
            assert "readscale;hit" not in r.headers.get("cache-status", "")
        r = httpx.get(site.url + "/rc/open", headers={"authorization": "Bearer alice"}, timeout=30)
        assert "readscale;hit" not in r.headers.get("cache-status", "")
    after = site.counts()
    for name in ("private", "cookie", "open"):
        assert after.get(name, 0) - before.get(name, 0) == 5, f"a {name} response was served from the cache"


def test_hishel_revalidates_against_the_stored_response(site: Site) -> None:
    """hishel, as a browser's private cache, stores the page (max-age=0: revalidate every
    time) and asks again with its ETag: the response cache answers 304 from the stored
    response, with Age, and the handler runs once."""
    wire: list[httpx.Response] = []

    class Recording(httpx.HTTPTransport):
        def handle_request(self, request: httpx.Request) -> httpx.Response:
            response = super().handle_request(request)
            wire.append(response)
            return response

    storage = SqliteStorage(connection=sqlite3.connect(":memory:", check_same_thread=False))
    transport = CacheTransport(Recording(), storage=storage, rfc=CacheOptions(shared=False))
    before = site.counts().get("news", 0)
    with httpx.Client(transport=transport, base_url=site.url, timeout=30) as client:
        first = client.get("/rc/news")
        seconds = [client.get("/rc/news") for _ in range(3)]
    assert [r.status_code for r in wire] == [200, 304, 304, 304], "hishel revalidated; the cache answered 304"
    etag = first.headers["etag"]
    assert all(r.headers.get("etag") == etag for r in wire), "the stored validator is replayed"
    assert all("age" in r.headers for r in wire[1:]), "a stored response carries Age"
    assert all(r.text == first.text for r in seconds)
    assert site.counts()["news"] - before <= 1, "the handler ran again for a stored response"


def test_language_variants_never_cross_in_chromium(site: Site, tmp_path: Path) -> None:
    """Chromium switches languages between loads of one URL (Vary: Accept-Language): each
    load shows its language, and the handler runs once per language however often a
    language comes back."""
    if find_chromium() is None:
        pytest.fail("chromium is not installed: scripts/bootstrap.sh installs it (Debian package chromium)")
    langs = ["fr", "de", "fr", "en", "de", "fr", "en"]
    before = site.counts().get("lang", 0)
    browser = Browser(tmp_path / "profile", log=tmp_path / "chromium.log")
    try:
        page = browser.new_page(incognito=True)
        shown = []
        for lang in langs:
            page.set_language(lang)
            text, _ = page.open(site.url + "/rc/lang")
            shown.append(text.strip())
    finally:
        browser.close()
    assert shown == [GREETINGS[lang] for lang in langs], "a page in another language was shown"
    # The plain client asks again: each variant is stored, under its own key.
    for lang in ("fr", "de", "en"):
        r = httpx.get(site.url + "/rc/lang", headers={"accept-language": lang}, timeout=30)
        assert r.text == GREETINGS[lang]
        assert "readscale;hit" in r.headers["cache-status"]
    assert site.counts()["lang"] - before == 3, "one handler run per language"


def test_a_purge_by_tag_empties_the_response_cache_and_the_edge(site: Site) -> None:
    """The page is held by the edge and by the response cache. One call,
    ``cache.invalidate_tags("tagged")`` (from another process, as an invalidation source
    would), empties both: the next request through the edge reaches the handler once."""
    before = site.counts().get("tagged", 0)
    # The key holds the host the edge forwards, and the X-Forwarded-Proto it sets (varied on).
    edge_host = {"host": site.edge_url.removeprefix("http://"), "x-forwarded-proto": "http"}
    with httpx.Client(timeout=30) as client:
        first = client.get(site.edge_url + "/rc/tagged").text
        assert client.get(site.edge_url + "/rc/tagged").text == first
        direct = client.get(site.url + "/rc/tagged", headers=edge_host)
        assert direct.text == first and "readscale;hit" in direct.headers["cache-status"]
        assert site.counts()["tagged"] == before + 1
        site.purge_tag("tagged")
        after_edge = client.get(site.edge_url + "/rc/tagged").text
        after_direct = client.get(site.url + "/rc/tagged", headers=edge_host)
    assert after_edge == f"tagged {before + 2}", "the edge or the response cache still held the purged page"
    assert after_direct.text == after_edge and "readscale;hit" in after_direct.headers["cache-status"]
    assert site.counts()["tagged"] == before + 2, "one handler run after the purge, for both tiers"
