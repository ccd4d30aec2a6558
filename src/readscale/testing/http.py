"""Fixtures for HTTP tests: an ASGI app under uvicorn in a subprocess, on loopback.

``readscale_app_server_factory("pkg.module:app", env={...})`` starts uvicorn on a free
port below the ephemeral range and returns a started :class:`AppServer`; every server
it made is stopped after the test. Put the edge in front with
``readscale_stack_factory(StackConfig(postgres=False, redis=False, varnish=True,
varnish_backend=server.url))``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from readscale.testing.appserver import AppServer

__all__ = ["AppServer", "readscale_app_server_factory"]


@pytest.fixture
def readscale_app_server_factory(tmp_path: Path) -> Iterator[Callable[..., AppServer]]:
    """Start ASGI apps under uvicorn; all are stopped after the test."""
    made: list[AppServer] = []

    def factory(app: str, **kwargs: Any) -> AppServer:
        kwargs.setdefault("log", tmp_path / f"uvicorn-{len(made)}.log")
        server = AppServer(app, **kwargs)
        made.append(server)
        return server.start()

    try:
        yield factory
    finally:
        for server in made:
            server.stop()
