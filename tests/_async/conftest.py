"""Fixtures of the driver tests (written async, generated to sync with them)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from readscale import RedisSettings
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


@pytest.fixture(params=["plain", "tls-acl"])
def redis_settings(request: pytest.FixtureRequest) -> RedisSettings:
    """The stack's Redis twice over: as it runs by default, and the secured one (TLS only,
    an ACL user with its password), so that every Redis path is tested against both."""
    if request.param == "plain":
        return RedisSettings(url=request.getfixturevalue("redis_url"))
    settings: RedisSettings = request.getfixturevalue("secure_redis_settings")
    return settings
