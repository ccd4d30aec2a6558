"""The edge under test: tests.starlette.app under uvicorn, the stack's real Varnish in front."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import httpx
import pytest

from readscale.stack import Stack, StackConfig
from readscale.stack.varnish import VarnishNode
from readscale.testing.http import AppServer

APP = "tests.starlette.app:app"


@dataclass
class Edge:
    app: AppServer
    varnish: VarnishNode

    @property
    def url(self) -> str:
        return self.varnish.url

    def client(self) -> httpx.Client:
        # No cookie jar: one Set-Cookie would turn every later request into a PASS.
        return httpx.Client(base_url=self.url, cookies=_NoCookies(), timeout=30)

    def backend_hits(self, path: str) -> int:
        return int(httpx.get(self.app.url + "/__stats", timeout=10).json().get(path, 0))


class _NoCookies(httpx.Cookies):
    def extract_cookies(self, response: httpx.Response) -> None:
        return None


def start_edge(
    app_factory: Callable[..., AppServer], stack_factory: Callable[..., Stack], *, probe: str | None
) -> Edge:
    app = app_factory(APP)
    stack = stack_factory(
        StackConfig(postgres=False, redis=False, varnish=True, varnish_backend=app.url, varnish_probe=probe)
    )
    return Edge(app, stack.varnish)


@pytest.fixture
def edge(readscale_app_server_factory: Callable[..., AppServer], readscale_stack_factory: Callable[..., Stack]) -> Edge:
    return start_edge(readscale_app_server_factory, readscale_stack_factory, probe="/healthz")
