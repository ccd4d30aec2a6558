"""Read-your-writes through real clients over the stack's real PostgreSQL: a primary and
streaming replicas held a minute behind (recovery_min_apply_delay), read through
readscale's replica router by the Starlette app of tests/browser/pg_app.py (the
recommended stack), behind real uvicorn over plain http and https.

A session that wrote reads its write on the next page, in Chromium and in hishel, over
both schemes; a session without the token reads the lagging replica (the old value),
which proves the lag is real and the token is what made the difference.
"""

from __future__ import annotations

import itertools
import sqlite3
import ssl
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import psycopg
import pytest
from hishel import CacheOptions, SqliteStorage
from hishel.httpx import CacheTransport
from tests.browser.cdp import Browser, find_chromium, spki_hash
from tests.browser.conftest import Sites
from tests.browser.pg_app import TABLE
from tests.replica_helpers import restore_replicas, wait_until

from readscale.stack import Stack
from readscale.testing.appserver import AppServer

pytestmark = [pytest.mark.slow, pytest.mark.stack]

DELAY = 60.0  # seconds the replicas wait before replaying a commit: longer than the module
_unique = itertools.count()


@dataclass
class PgSite:
    http: AppServer
    https: AppServer
    ca: str

    def origin(self, scheme: str) -> str:
        port = self.http.port if scheme == "http" else self.https.port
        return f"{scheme}://{scheme}-pg.test:{port}"

    def url(self, scheme: str) -> str:
        port = self.http.port if scheme == "http" else self.https.port
        return f"{scheme}://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def pg_site(pg_stack: Stack, sites: Sites) -> Iterator[PgSite]:
    restore_replicas(pg_stack)
    with psycopg.connect(pg_stack.primary.dsn, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} (id int PRIMARY KEY, v text)")
        conn.execute(f"INSERT INTO {TABLE} VALUES (1, 'initial') ON CONFLICT (id) DO UPDATE SET v = 'initial'")
    for replica in pg_stack.replicas:
        wait_until(lambda r=replica: pg_stack.replay_lag_bytes(r.name) == 0, what=f"{replica.name} to catch up")
        replica.set_apply_delay(DELAY)
    env = {
        "READSCALE_BROWSER_PRIMARY": pg_stack.primary.dsn,
        "READSCALE_BROWSER_REPLICAS": ",".join(r.dsn for r in pg_stack.replicas),
    }
    tls = ("--ssl-certfile", str(sites.tls.cert), "--ssl-keyfile", str(sites.tls.key))
    http = AppServer("tests.browser.pg_app:app", env=env, log=sites.root / "pg-http.log")
    https = AppServer("tests.browser.pg_app:app", env=env, log=sites.root / "pg-https.log", extra_args=tls)
    try:
        http.start()
        https.start()
        yield PgSite(http, https, str(sites.tls.ca))
    finally:
        http.stop()
        https.stop()
        restore_replicas(pg_stack)


@pytest.fixture(scope="module")
def browser(sites: Sites, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    if find_chromium() is None:
        pytest.fail("chromium is not installed: scripts/bootstrap.sh installs it (Debian package chromium)")
    folder = tmp_path_factory.mktemp("chromium-pg")
    args = (
        "--host-resolver-rules=MAP *.test 127.0.0.1",
        f"--ignore-certificate-errors-spki-list={spki_hash(sites.tls.cert)}",
    )
    opened = Browser(folder / "profile", extra_args=args, log=folder / "chromium.log")
    try:
        yield opened
    finally:
        opened.close()


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_chromium_reads_its_own_writes_from_lagging_replicas(browser: Browser, pg_site: PgSite, scheme: str) -> None:
    origin = pg_site.origin(scheme)
    page = browser.new_page(incognito=True)
    page.open(origin + "/")
    seen = []
    for i in range(3):
        value = f"chromium-{scheme}-{next(_unique)}-{i}"
        assert page.fetch("POST", f"/write/{value}") == (200, "written")
        text, _ = page.open(origin + "/read")
        seen.append(text == value)
    page.close()
    assert seen == [True] * 3, "the session missed its own write"
    stranger = browser.new_page(incognito=True)
    text, _ = stranger.open(origin + "/read")
    stranger.close()
    assert text == "initial", "without the token, a lagging replica answers"


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_hishel_reads_its_own_writes_from_lagging_replicas(pg_site: PgSite, scheme: str) -> None:
    def client() -> httpx.Client:
        verify = ssl.create_default_context(cafile=pg_site.ca) if scheme == "https" else True
        storage = SqliteStorage(connection=sqlite3.connect(":memory:", check_same_thread=False))
        transport = CacheTransport(httpx.HTTPTransport(verify=verify), storage=storage, rfc=CacheOptions(shared=False))
        return httpx.Client(transport=transport, base_url=pg_site.url(scheme), timeout=30)

    seen = []
    with client() as session:
        for i in range(3):
            value = f"hishel-{scheme}-{next(_unique)}-{i}"
            assert session.post(f"/write/{value}").text == "written"
            seen.append(session.get("/read").text == value)
    assert seen == [True] * 3, "the session missed its own write"
    with client() as stranger:
        assert stranger.get("/read").text == "initial", "without the token, a lagging replica answers"
