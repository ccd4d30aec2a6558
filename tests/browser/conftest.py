"""Servers for the real-client tests, started once per session and shared by modules.

Per framework (FastAPI, Starlette, Flask, Django), the app of tests/browser/apps.py
(docs/http.md's recommended stack) runs behind real uvicorn twice: over plain http, and
over https with a certificate from the stack's throwaway CA (readscale.stack.tls).
The stack's Varnish, with the package's VCL, stands in front of the http one: the edge.
Flask runs under uvicorn's WSGI interface, Django under its ASGI handler.

Chromium reaches them by name (``--host-resolver-rules`` maps ``*.test`` to 127.0.0.1):
one host per server, so cookies, which ignore ports, never leak between frameworks or
schemes, and plain http is a non-secure origin as on a real network (Chromium treats
127.0.0.1 and localhost as secure, and would send a Secure cookie there). httpx and
hishel use 127.0.0.1 with one cookie jar per server.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from readscale.stack import Stack, StackConfig
from readscale.stack.tls import TlsFiles, make_tls
from readscale.testing.appserver import AppServer
from readscale.testing.shared import new_stack_root

FRAMEWORKS = ["fastapi", "starlette", "flask", "django"]
EXTRA_ARGS = {"flask": ("--interface", "wsgi")}


@dataclass
class Site:
    """One framework's app: over http, over https, and behind the edge."""

    framework: str
    http: AppServer
    https: AppServer
    edge: Stack
    tls: TlsFiles

    def origin(self, kind: str) -> str:
        """The origin a browser uses: ``http``, ``https`` or ``edge``."""
        port = {"http": self.http.port, "https": self.https.port, "edge": self.edge.varnish.port}[kind]
        scheme = "https" if kind == "https" else "http"
        return f"{scheme}://{kind}-{self.framework}.test:{port}"

    def url(self, kind: str) -> str:
        """The same origin by address, for httpx."""
        port = {"http": self.http.port, "https": self.https.port, "edge": self.edge.varnish.port}[kind]
        scheme = "https" if kind == "https" else "http"
        return f"{scheme}://127.0.0.1:{port}"

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.tls.ca))


class Sites:
    """Starts a framework's servers the first time a test asks for them."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.tls = make_tls(root / "tls")
        self._sites: dict[str, Site] = {}
        self._started: list[AppServer | Stack] = []

    def __getitem__(self, framework: str) -> Site:
        if framework not in self._sites:
            self._sites[framework] = self._start(framework)
        return self._sites[framework]

    def _start(self, framework: str) -> Site:
        target = f"tests.browser.apps:{framework}"
        extra = EXTRA_ARGS.get(framework, ())
        http = AppServer(target, log=self.root / f"{framework}-http.log", extra_args=extra)
        self._started.append(http.start())
        tls_args = ("--ssl-certfile", str(self.tls.cert), "--ssl-keyfile", str(self.tls.key))
        https = AppServer(target, log=self.root / f"{framework}-https.log", extra_args=(*extra, *tls_args))
        self._started.append(https.start())
        edge = Stack(self.root / f"edge-{framework}")
        self._started.append(edge)
        edge.up(StackConfig(postgres=False, redis=False, varnish=True, varnish_backend=http.url))
        return Site(framework, http, https, edge, self.tls)

    def stop(self) -> None:
        for part in reversed(self._started):
            if isinstance(part, Stack):
                part.down()
            else:
                part.stop()


@pytest.fixture(scope="session")
def sites() -> Iterator[Sites]:
    root = new_stack_root("readscale-browser-")
    running = Sites(root)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(params=FRAMEWORKS)
def site(request: pytest.FixtureRequest, sites: Sites) -> Site:
    return sites[str(request.param)]
