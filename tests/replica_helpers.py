"""Helpers shared by the replica tests (async, generated sync, and integrations)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from readscale.replicas import ReplicaSettings
from readscale.stack import Stack


def router_settings(stack: Stack, **overrides: Any) -> ReplicaSettings:
    """Settings for a router over ``stack``'s primary and replicas (named r1, r2, ...)."""
    base: dict[str, Any] = {
        "primary": stack.primary.dsn,
        "replicas": {replica.name: replica.dsn for replica in stack.replicas},
        "seed": 1,
        "max_pool_size": 10,
    }
    return ReplicaSettings(**{**base, **overrides})


def wait_until(predicate: Callable[[], bool], *, timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"{what} not reached within {timeout} s"
        time.sleep(0.02)


def restore_replicas(stack: Stack) -> None:
    """Undo replay pauses and apply delays on every replica and wait until they caught up."""
    for replica in stack.replicas:
        if not replica.is_running():
            replica.start()
        if replica.is_replay_paused():
            replica.resume_replay()
        replica.set_apply_delay(0)
    for replica in stack.replicas:
        wait_until(lambda r=replica: stack.replay_lag_bytes(r.name) == 0, what=f"{replica.name} to catch up")
