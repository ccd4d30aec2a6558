"""hishel 2 (RFC 9111 for httpx, as a private cache: a browser's) against each framework's
recommended stack behind real uvicorn: the promises the Chromium tests check, from a
client cache nobody here wrote. Its SQLite storage is the disk: a second client on the
same file is a second process finding what the first one stored; an in-memory SQLite
database is the memory. What went on the wire is recorded under hishel's transport.
"""

from __future__ import annotations

import itertools
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from hishel import CacheOptions, SqliteStorage
from hishel.httpx import CacheTransport
from tests.browser.apps import NEWS_MAX_AGE
from tests.browser.conftest import Site
from tests.http.stacks._repo import GREETING

pytestmark = [pytest.mark.slow, pytest.mark.stack]

LANGS = ["fr", "de", "fr", "en", "de", "fr"]
_unique = itertools.count()


@dataclass
class Wire:
    method: str
    path: str
    sent: httpx.Headers
    status: int
    headers: httpx.Headers


class Recording(httpx.BaseTransport):
    """The network under hishel: every request that left the cache, and its answer."""

    def __init__(self, inner: httpx.BaseTransport) -> None:
        self.inner = inner
        self.log: list[Wire] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        self.log.append(Wire(request.method, request.url.path, request.headers, response.status_code, response.headers))
        return response

    def close(self) -> None:
        self.inner.close()

    def last(self, path: str) -> Wire | None:
        """The last wire exchange for ``path`` since the previous call (None: served
        from the cache without asking)."""
        found = [w for w in self.log if w.path == path]
        self.log.clear()
        return found[-1] if found else None


@contextmanager
def hishel_client(
    site: Site, kind: str, storage: SqliteStorage, *, cookies: dict[str, str] | None = None
) -> Iterator[tuple[httpx.Client, Recording]]:
    verify = site.ssl_context() if kind == "https" else True
    wire = Recording(httpx.HTTPTransport(verify=verify))
    transport = CacheTransport(wire, storage=storage, rfc=CacheOptions(shared=False))
    with httpx.Client(transport=transport, base_url=site.url(kind), cookies=cookies, timeout=30) as client:
        yield client, wire


def memory() -> SqliteStorage:
    return SqliteStorage(connection=sqlite3.connect(":memory:", check_same_thread=False))


def from_cache(response: httpx.Response) -> bool:
    return bool(response.extensions["caching"]["from_cache"])


@pytest.mark.parametrize("via", ["http", "edge"])
def test_language_variants_never_cross(site: Site, via: str) -> None:
    """Two readers in turn, each switching languages on one URL. hishel keeps variants
    and, when none matches, asks with a stored variant's ETag (the French one on a German
    request): each answer is the language asked for, never a 304 for another one. Through the edge, the second
    reader's requests are answered by the edge."""
    path = f"/greeting?hishel-variants={next(_unique)}" if via == "edge" else "/greeting"
    shown: list[str] = []
    etag_of: dict[str, str] = {}
    foreign = foreign_answered_200 = from_client = 0
    edge_states: list[list[str]] = []
    for _reader in range(2):
        edge_states.append([])
        with hishel_client(site, via, memory()) as (client, wire):
            for lang in LANGS:
                r = client.get(path, headers={"accept-language": lang})
                shown.append(r.text)
                from_client += from_cache(r)
                sent = wire.last("/greeting")
                if sent is None:
                    continue
                offered = sent.sent.get("if-none-match")
                if offered is not None and offered != etag_of.get(lang):
                    foreign += 1
                    foreign_answered_200 += sent.status == 200
                edge_states[-1].append(sent.headers.get("x-cache", ""))
                etag_of.setdefault(lang, sent.headers["etag"])
    assert shown == [GREETING[lang] for lang in LANGS] * 2, "a page in another language was shown"
    assert len(set(etag_of.values())) == 3, "one validator per language"
    assert from_client >= 2, "the readers reused variants they had"
    assert foreign >= 4, f"hishel offered another variant's validator {foreign} times"
    assert foreign_answered_200 == foreign, "a validator of another language must never get a 304"
    if via == "edge":
        assert edge_states[0].count("MISS") == 3, edge_states
        assert set(edge_states[1]) == {"HIT"}, f"the edge answered the second reader: {edge_states}"


PRIVATE_PAGES = {"/account": "account of", "/orders": "orders of"}  # a body ETag, a version ETag


@pytest.mark.parametrize("store", ["memory", "disk"])
def test_after_sign_out_the_previous_users_page_is_never_shown(site: Site, store: str, tmp_path: Path) -> None:
    """Alice signs in, reads her pages twice (the second is a 304), signs out; the next
    load, by the same client or by a new one on the same disk, is the anonymous page."""
    path_db = tmp_path / "hishel.db"
    storage = memory() if store == "memory" else SqliteStorage(database_path=path_db)
    alice_etag = {}
    with hishel_client(site, "http", storage) as (client, wire):
        client.post("/login", params={"user": "alice"})
        for path, title in PRIVATE_PAGES.items():
            alice = client.get(path)
            assert alice.text == f"{title} alice"
            alice_etag[path] = alice.headers["etag"]
            assert client.get(path).text == f"{title} alice"
            again = wire.last(path)
            assert again is not None and again.status == 304, "the same user revalidates cheaply"
        client.post("/logout")
        if store == "memory":
            for path, title in PRIVATE_PAGES.items():
                out = client.get(path)
                sent = wire.last(path)
                assert sent is not None and sent.sent.get("if-none-match") == alice_etag[path]
                assert (out.text, sent.status) == (f"{title} nobody", 200)
    if store == "disk":
        with hishel_client(site, "http", SqliteStorage(database_path=path_db)) as (client, wire):
            for path, title in PRIVATE_PAGES.items():
                out = client.get(path)
                sent = wire.last(path)
                assert sent is not None and sent.sent.get("if-none-match") == alice_etag[path], "found on disk"
                assert (out.text, sent.status) == (f"{title} nobody", 200)


def test_anonymous_readers_with_cookies_get_public_pages_and_the_edge_answers(site: Site) -> None:
    path = f"/catalog?hishel-reader={next(_unique)}"
    states = []
    for cookies in (None, {"_ga": "GA1.1.42", "theme": "dark"}, {"_ga": "GA1.1.43"}):
        with hishel_client(site, "edge", memory(), cookies=cookies) as (client, wire):
            r = client.get(path)
            sent = wire.last("/catalog")
            assert sent is not None and ("_ga=" in sent.sent.get("cookie", "")) is bool(cookies)
            assert r.headers["cache-control"] == "public, max-age=60" and "set-cookie" not in r.headers
            states.append(r.headers["x-cache"])
            assert from_cache(client.get(path)), "and the client keeps it"
    assert states == ["MISS", "HIT", "HIT"]


def test_revalidation_after_max_age_gets_304(site: Site) -> None:
    clients = {}
    first = {}
    with (
        hishel_client(site, "http", memory()) as clients["http"],
        hishel_client(site, "https", memory()) as clients["https"],
        hishel_client(site, "edge", memory()) as clients["edge"],
    ):
        for via, (client, wire) in clients.items():
            r = client.get("/news")
            first[via] = (r.text, r.headers["etag"])
            assert from_cache(client.get("/news")), "fresh: no request"
            assert wire.last("/news") is not None
        results: dict[str, list[tuple[str, str | None, int]]] = {via: [] for via in clients}
        for _ in range(2):
            time.sleep(NEWS_MAX_AGE + 0.2)  # let the stored page expire (nothing is timed)
            for via, (client, wire) in clients.items():
                r = client.get("/news")
                sent = wire.last("/news")
                assert sent is not None
                results[via].append((r.text, sent.sent.get("if-none-match"), sent.status))
    assert results == {via: [(*first[via], 304)] * 2 for via in clients}


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_a_session_reads_its_own_writes(site: Site, scheme: str) -> None:
    seen = []
    with hishel_client(site, scheme, memory()) as (client, _):
        for i in range(3):
            value = f"hishel-{scheme}-{site.framework}-{next(_unique)}-{i}"
            assert client.post(f"/write/{value}").text == "written"
            seen.append(client.get("/read").text == value)
        (token,) = [c for c in client.cookies.jar if c.name == "readscale_token"]
        assert token.secure is (scheme == "https")
    assert seen == [True] * 3, "the session missed its own write"
    with hishel_client(site, scheme, memory()) as (stranger, _):
        assert stranger.get("/read").text == "initial", "without the token, the lagging replica answers"


def test_a_public_page_that_reads_who_is_asking_is_never_shared(site: Site) -> None:
    """A public route whose handler reads a cookie or the session: an anonymous reader's
    copy fills the edge (public, Vary: Cookie), and no reader carrying a cookie is ever
    given it, nor anyone another reader's page: by the edge or by its own cache."""
    n = next(_unique)
    theme, hello = f"/theme?hishel-reader={n}", f"/hello?hishel-reader={n}"
    with hishel_client(site, "edge", memory()) as (client, _):
        for path, text in ((theme, "theme light"), (hello, "hello nobody")):
            r = client.get(path)
            assert r.text == text and r.headers["cache-control"] == "public, max-age=60"
            assert "cookie" in r.headers["vary"].lower()
            assert client.get(path).text == text
    seen = []
    for colour in ("dark", "blue", "dark"):
        with hishel_client(site, "edge", memory(), cookies={"theme": colour}) as (client, _):
            r = client.get(theme)
            assert r.headers["cache-control"].startswith("private") and "cdn-cache-control" not in r.headers
            seen.append(r.text)
    assert seen == ["theme dark", "theme blue", "theme dark"], "a reader with a cookie got another's page"
    with hishel_client(site, "edge", memory()) as (alice, _):
        assert alice.post("/login", params={"user": "alice"}).text == "signed in"
        r = alice.get(hello)
        assert r.text == "hello alice" and r.headers["cache-control"].startswith("private")
    with hishel_client(site, "edge", memory(), cookies={"_ga": "GA1.1.42"}) as (other, _):
        assert other.get(hello).text == "hello nobody"
    with hishel_client(site, "edge", memory()) as (anonymous, _):
        assert anonymous.get(hello).text == "hello nobody"
