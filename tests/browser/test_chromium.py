"""Headless Chromium against each framework's recommended stack (issue 13): what a person
with a browser would see, read off the DevTools protocol (the headers Chromium sent, the
status it got on the wire, where the page came from).

One browser process for the module, on one profile; the disk tests close it and start a
second process on the same profile, which finds the first one's disk cache. Incognito
tabs (a browser context of their own) keep their HTTP cache in memory.
Every test asserts counts: pages shown, validators offered, statuses received.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.browser.apps import NEWS_MAX_AGE
from tests.browser.cdp import Browser, Exchange, Page, find_chromium, spki_hash
from tests.browser.conftest import Site, Sites
from tests.http.stacks._repo import GREETING

pytestmark = [pytest.mark.slow, pytest.mark.stack]

LANGS = ["fr", "de", "fr", "en", "de", "fr"]
_unique = itertools.count()


class Chrome:
    """The module's browser, restartable on the same profile."""

    def __init__(self, profile: Path, tls_cert: Path, log: Path) -> None:
        self.profile = profile
        self.log = log
        self.args = (
            "--host-resolver-rules=MAP *.test 127.0.0.1",
            # Accept the stack's throwaway certificate, and nothing else that fails to verify.
            f"--ignore-certificate-errors-spki-list={spki_hash(tls_cert)}",
        )
        self.browser = Browser(profile, extra_args=self.args, log=log)
        self.starts = 1

    def restart(self) -> Browser:
        """Close the browser (it flushes its disk cache and cookies) and start another
        process on the same profile."""
        self.browser.close()
        self.browser = Browser(self.profile, extra_args=self.args, log=self.log)
        self.starts += 1
        return self.browser

    def page(self, *, incognito: bool = False) -> Page:
        return self.browser.new_page(incognito=incognito)


@pytest.fixture(scope="module")
def chrome(sites: Sites, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chrome]:
    if find_chromium() is None:
        pytest.fail("chromium is not installed: scripts/bootstrap.sh installs it (Debian package chromium)")
    folder = tmp_path_factory.mktemp("chromium")
    box = Chrome(folder / "profile", sites.tls.cert, folder / "chromium.log")
    try:
        yield box
    finally:
        box.browser.close()


def the(exchanges: list[Exchange], path: str) -> Exchange:
    """The one exchange for ``path`` (a page load also asks for /favicon.ico)."""
    (found,) = [x for x in exchanges if x.url.split("?")[0].endswith(path)]
    return found


def sign_in(page: Page, origin: str, user: str) -> None:
    if not page.evaluate("location.href").startswith(origin):
        page.open(origin + "/greeting")
    assert page.fetch("POST", f"/login?user={user}") == (200, "signed in")


def sign_out(page: Page) -> None:
    assert page.fetch("POST", "/logout") == (200, "signed out")


# -- language variants ------------------------------------------------------------------


@pytest.mark.parametrize("via", ["http", "edge"])
def test_language_variants_never_cross(chrome: Chrome, site: Site, via: str) -> None:
    """The browser's language changes between loads of one URL (Vary: Accept-Language).
    Chromium keeps one entry per URL and revalidates it with that entry's ETag when the
    language no longer matches: the French ETag goes out on the German request. Each
    variant has its own validator, so that request gets the German page, never a 304."""
    page = chrome.page(incognito=True)
    origin = site.origin(via)
    shown: list[str] = []
    etag_of: dict[str, str] = {}
    foreign = foreign_answered_200 = edge_hits = 0
    for lang in LANGS:
        page.set_language(lang)
        text, exchanges = page.open(origin + "/greeting")
        shown.append(text)
        x = the(exchanges, "/greeting")
        assert x.sent_headers["accept-language"] == lang
        offered = x.sent_headers.get("if-none-match")
        if offered is not None and offered != etag_of.get(lang):
            foreign += 1
            foreign_answered_200 += x.wire_status == 200
        edge_hits += x.headers.get("x-cache", "").startswith("HIT")
        etag_of.setdefault(lang, x.headers["etag"])
    assert shown == [GREETING[lang] for lang in LANGS], "a page in another language was shown"
    assert len(set(etag_of.values())) == 3, "one validator per language"
    assert foreign >= 4, f"Chromium offered another variant's validator {foreign} times"
    assert foreign_answered_200 == foreign, "a validator of another language must never get a 304"
    if via == "edge":
        assert edge_hits >= 3, "the edge answered the repeated languages"
    text, exchanges = page.reload()
    assert text == GREETING[LANGS[-1]]
    assert the(exchanges, "/greeting").wire_status == 304, "a reload revalidates the same variant"
    page.close()


# -- sign-out ---------------------------------------------------------------------------


PRIVATE_PAGES = {"/account": "account of", "/orders": "orders of"}  # a body ETag, a version ETag


def test_after_sign_out_the_previous_users_page_is_never_shown_from_memory(chrome: Chrome, site: Site) -> None:
    """Incognito: the HTTP cache is in memory. Alice's pages stay in it after she signs
    out; the next load revalidates each with her ETag and must get the anonymous page,
    then Bob's once he signs in."""
    page = chrome.page(incognito=True)
    origin = site.origin("http")
    sign_in(page, origin, "alice")
    alice_etag = {}
    for path, title in PRIVATE_PAGES.items():
        text, exchanges = page.open(origin + path)
        assert text == f"{title} alice"
        alice_etag[path] = the(exchanges, path).headers["etag"]
        text, exchanges = page.open(origin + path)
        x = the(exchanges, path)
        assert (text, x.sent_headers.get("if-none-match"), x.wire_status) == (f"{title} alice", alice_etag[path], 304)

    sign_out(page)
    for path, title in PRIVATE_PAGES.items():
        text, exchanges = page.open(origin + path)
        x = the(exchanges, path)
        assert x.sent_headers.get("if-none-match") == alice_etag[path], "the browser still held Alice's page"
        assert (text, x.wire_status) == (f"{title} nobody", 200)

    sign_in(page, origin, "bob")
    for path, title in PRIVATE_PAGES.items():
        text, exchanges = page.open(origin + path)
        assert (text, the(exchanges, path).wire_status) == (f"{title} bob", 200)
    page.close()


def test_after_sign_out_the_previous_users_page_is_never_shown_from_disk(chrome: Chrome, site: Site) -> None:
    """The profile's disk cache: Alice signs in, views her pages, signs out, the browser
    is closed. A second browser process on the same profile holds her pages on disk (it
    offers her ETags) and must show the anonymous pages."""
    page = chrome.page()
    origin = site.origin("http")
    sign_in(page, origin, "alice")
    alice_etag = {}
    for path, title in PRIVATE_PAGES.items():
        text, exchanges = page.open(origin + path)
        assert text == f"{title} alice"
        alice_etag[path] = the(exchanges, path).headers["etag"]
    public = f"/catalog?disk-test={next(_unique)}"
    page.open(origin + public)
    sign_out(page)
    page.close()

    page = chrome.restart().new_page()
    _, exchanges = page.open(origin + public)
    x = the(exchanges, "/catalog")
    assert (x.from_disk_cache, x.on_wire) == (True, False), "the second process reads the first one's disk cache"
    for path, title in PRIVATE_PAGES.items():
        text, exchanges = page.open(origin + path)
        x = the(exchanges, path)
        assert x.sent_headers.get("if-none-match") == alice_etag[path], "the second process found Alice's page on disk"
        assert (text, x.wire_status) == (f"{title} nobody", 200)
    page.close()


def test_back_after_sign_out_never_shows_the_previous_users_page(chrome: Chrome, site: Site) -> None:
    """Chromium's back/forward cache keeps whole pages in memory and restores them on
    Back without asking the server, whatever `private` or `no-cache` say: Alice views her
    pages, goes on, signs out, presses Back. The sign-out response clears the site's
    caches (Clear-Site-Data, honoured over https and on localhost), so Back loads the
    page again, as nobody."""
    origin = site.origin("https")
    shown_after_sign_out = []
    for path, title in PRIVATE_PAGES.items():
        page = chrome.page(incognito=True)
        sign_in(page, origin, "alice")
        page.go(origin + path)
        assert page.evaluate("document.body.innerText") == f"{title} alice"
        page.go(origin + "/greeting")
        status, _ = page.fetch("POST", "/logout")
        assert status == 200
        text, exchanges = page.back()
        shown_after_sign_out.append(text)
        assert [x.wire_status for x in exchanges if x.url.endswith(path)] == [200], "Back asked the server"
        page.close()
    assert shown_after_sign_out == [f"{title} nobody" for title in PRIVATE_PAGES.values()]


# -- public pages, anonymous readers with cookies, the edge -------------------------------


def test_anonymous_readers_with_cookies_get_public_pages_and_the_edge_answers(chrome: Chrome, site: Site) -> None:
    """A first-time visitor (no cookie yet) fills the edge; then readers with unrelated
    cookies (analytics, a theme) get the page from the edge. The app answers `public`
    with a cookie present and sets none; the edge never fills from a request with cookies."""
    origin = site.origin("edge")
    path = f"/catalog?reader-test={next(_unique)}"  # a URL no earlier test filled
    states: list[str] = []
    for cookies in ({}, {"_ga": "GA1.1.42", "theme": "dark"}, {"_ga": "GA1.1.43", "theme": "light"}):
        page = chrome.page(incognito=True)
        for name, value in cookies.items():
            page.set_cookie(origin, name, value)
        text, exchanges = page.open(origin + path)
        x = the(exchanges, "/catalog")
        assert ("_ga=" in x.sent_headers.get("cookie", "")) is bool(cookies)
        assert text == "catalog: initial"
        assert x.headers["cache-control"] == "public, max-age=60", x.headers
        assert "set-cookie" not in x.headers
        states.append(x.headers["x-cache"])
        page.close()
    assert states == ["MISS", "HIT", "HIT"], "the edge answers readers with cookies"

    # The app itself, with no edge in front: public with the cookie present.
    page = chrome.page(incognito=True)
    page.set_cookie(site.origin("http"), "_ga", "GA1.1.44")
    _, exchanges = page.open(site.origin("http") + path)
    x = the(exchanges, "/catalog")
    assert "_ga=GA1.1.44" in x.sent_headers["cookie"]
    assert x.headers["cache-control"] == "public, max-age=60" and "set-cookie" not in x.headers
    assert "cookie" not in x.headers.get("vary", "").lower()
    page.close()


@pytest.mark.parametrize("via", ["http", "edge"])
def test_a_public_page_that_reads_a_cookie_follows_the_cookie(chrome: Chrome, site: Site, via: str) -> None:
    """/theme is declared public and its handler reads the theme cookie. A reader without
    cookies gets it public with Vary: Cookie; once the reader has a theme cookie, neither
    Chromium's own cache nor the edge gives back the page of another cookie, and the app
    sends each such page private. (Before readscale varied on the handler's read, Chromium
    showed the cookieless page from memory, and the edge answered it to every reader.)"""
    origin = site.origin(via)
    path = f"/theme?reader-test={next(_unique)}"
    page = chrome.page(incognito=True)
    shown: list[str] = []
    text, exchanges = page.open(origin + path)
    shown.append(text)
    x = the(exchanges, "/theme")
    assert x.headers["cache-control"] == "public, max-age=60" and "cookie" in x.headers["vary"].lower()
    for colour in ("dark", "blue", "dark"):
        page.set_cookie(origin, "theme", colour)
        text, exchanges = page.open(origin + path)
        shown.append(text)
        x = the(exchanges, "/theme")
        assert x.on_wire and f"theme={colour}" in x.sent_headers["cookie"], "asked the server, with the cookie"
        assert x.headers["cache-control"].startswith("private") and "cdn-cache-control" not in x.headers
    page.close()
    assert shown == ["theme light", "theme dark", "theme blue", "theme dark"]


# -- revalidation -----------------------------------------------------------------------


def test_revalidation_after_max_age_gets_304(chrome: Chrome, site: Site) -> None:
    """/news is fresh for one second. Loaded again after that, over http, over https and
    through the edge, Chromium sends the stored ETag and gets 304 (through the edge, the
    edge revalidates its own copy with the origin and answers the browser's condition);
    the page shown is the stored one."""
    pages = {via: chrome.page() for via in ("http", "https", "edge")}
    first: dict[str, tuple[str, str]] = {}
    for via, page in pages.items():
        text, exchanges = page.open(site.origin(via) + "/news")
        x = the(exchanges, "/news")
        assert x.headers["cache-control"] == f"public, max-age={NEWS_MAX_AGE}"
        first[via] = (text, x.headers["etag"])
    results: dict[str, list[tuple[str, str | None, int | None]]] = {via: [] for via in pages}
    for _ in range(2):
        time.sleep(NEWS_MAX_AGE + 0.2)  # let the stored pages expire (nothing is timed)
        for via, page in pages.items():
            text, exchanges = page.open(site.origin(via) + "/news")
            x = the(exchanges, "/news")
            results[via].append((text, x.sent_headers.get("if-none-match"), x.wire_status))
    assert results == {via: [(*first[via], 304)] * 2 for via in pages}
    for page in pages.values():
        page.close()


# -- read-your-writes -------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_a_session_reads_its_own_writes(chrome: Chrome, site: Site, scheme: str) -> None:
    """The replica never catches up (tests/http/stacks/_repo.py): a read shows a write
    only if the session's causal token came back with it. Over plain http the token's
    cookie must not be Secure (Chromium would keep it but never send it)."""
    origin = site.origin(scheme)
    page = chrome.page(incognito=True)
    page.open(origin + "/greeting")
    seen = []
    for i in range(3):
        value = f"{scheme}-{site.framework}-{next(_unique)}-{i}"
        assert page.fetch("POST", f"/write/{value}") == (200, "written")
        text, _ = page.open(origin + "/read")
        seen.append(text == value)
    (token,) = [c for c in page.cookies(origin) if c["name"] == "readscale_token"]
    assert token["secure"] is (scheme == "https")
    assert seen == [True] * 3, "the session missed its own write"
    page.close()

    stranger = chrome.page(incognito=True)
    text, _ = stranger.open(origin + "/read")
    assert text == "initial", "without the token, the lagging replica answers"
    stranger.close()
