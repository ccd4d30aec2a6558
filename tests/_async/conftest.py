"""Fixtures of the driver tests (written async, generated to sync with them)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from readscale.stack import Stack
from tests.replica_helpers import restore_replicas


@pytest.fixture
def lagging_stack(pg_stack: Stack) -> Iterator[Stack]:
    """The shared stack, for tests that pause or delay its replicas: undone whatever happens."""
    restore_replicas(pg_stack)
    try:
        yield pg_stack
    finally:
        restore_replicas(pg_stack)
