"""Shared test helpers. The stack fixtures come from readscale's own pytest plugin
(``readscale.testing``), the same ones users get."""

from __future__ import annotations

import pytest


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
