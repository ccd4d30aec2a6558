"""Acceptance: sync and semi-sync replication, with standbys stopped through fault injection."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import psycopg
import pytest

from readscale.stack import Stack, StackConfig

pytestmark = [pytest.mark.stack, pytest.mark.slow]


def commit_in_background(dsn: str, value: int) -> tuple[threading.Thread, list[float]]:
    done: list[float] = []

    def commit() -> None:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("INSERT INTO sync_probe VALUES (%s)", (value,))
        done.append(time.monotonic())

    thread = threading.Thread(target=commit, daemon=True)
    thread.start()
    return thread, done


def test_sync_mode_commit_waits_for_the_synchronous_standby(
    readscale_stack_factory: Callable[..., Stack],
) -> None:
    stack = readscale_stack_factory(StackConfig(replicas=2, mode="sync", redis=False))
    with psycopg.connect(stack.primary.dsn, autocommit=True) as conn:
        states = dict(conn.execute("SELECT application_name, sync_state FROM pg_stat_replication").fetchall())
        assert states == {"r1": "sync", "r2": "async"}
        conn.execute("CREATE TABLE sync_probe (v int)")

    stack.stop("r1")
    thread, done = commit_in_background(stack.primary.dsn, 1)
    thread.join(timeout=1.0)
    assert thread.is_alive() and not done, "the commit returned although the only synchronous standby is down"

    stack.start("r1")
    thread.join(timeout=30)
    assert done, "the commit did not return after the synchronous standby came back"
    with psycopg.connect(stack.primary.dsn, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM sync_probe").fetchone() == (1,)


def test_semi_sync_mode_commits_with_one_standby_down(
    readscale_stack_factory: Callable[..., Stack],
) -> None:
    stack = readscale_stack_factory(StackConfig(replicas=2, mode="semi-sync", redis=False))
    with psycopg.connect(stack.primary.dsn, autocommit=True) as conn:
        states = dict(conn.execute("SELECT application_name, sync_state FROM pg_stat_replication").fetchall())
        assert states == {"r1": "quorum", "r2": "quorum"}
        conn.execute("CREATE TABLE sync_probe (v int)")

    stack.stop("r1")
    thread, done = commit_in_background(stack.primary.dsn, 2)
    thread.join(timeout=10)
    assert done, "a semi-sync commit waited although one standby was still up"

    stack.kill("r2")  # now no standby at all: the commit must wait
    thread, done = commit_in_background(stack.primary.dsn, 3)
    thread.join(timeout=1.0)
    assert thread.is_alive() and not done
    stack.start("r2")
    thread.join(timeout=30)
    assert done
