"""Acceptance: fault injection on the shared PostgreSQL stack (replay pause, apply delay)."""

from __future__ import annotations

import time

import psycopg
import pytest

from readscale.stack import Stack

pytestmark = pytest.mark.stack


def write_some(dsn: str, rows: int = 50) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS fault_probe (id serial PRIMARY KEY, v text)")
        for _ in range(rows):
            conn.execute("INSERT INTO fault_probe (v) VALUES (repeat('x', 200))")


def wait_for(predicate, timeout: float = 15.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def test_paused_replica_lags_while_the_other_stays_current(pg_stack: Stack) -> None:
    wait_for(lambda: pg_stack.replay_lag_bytes("r1") == 0 and pg_stack.replay_lag_bytes("r2") == 0)
    pg_stack.pause_replay("r1")
    try:
        assert pg_stack.replica("r1").is_replay_paused()
        write_some(pg_stack.primary.dsn)
        first = pg_stack.replay_lag_bytes("r1")
        write_some(pg_stack.primary.dsn)
        second = pg_stack.replay_lag_bytes("r1")
        assert 0 < first < second
        wait_for(lambda: pg_stack.replay_lag_bytes("r2") == 0)
    finally:
        pg_stack.resume_replay("r1")
    wait_for(lambda: pg_stack.replay_lag_bytes("r1") == 0)
    assert not pg_stack.replica("r1").is_replay_paused()


def test_apply_delay_holds_commits_back(pg_stack: Stack) -> None:
    with psycopg.connect(pg_stack.primary.dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS delay_probe (id int PRIMARY KEY)")
    wait_for(lambda: pg_stack.replay_lag_bytes("r2") == 0)
    pg_stack.set_apply_delay("r2", 1.5)
    try:
        with (
            psycopg.connect(pg_stack.primary.dsn, autocommit=True) as primary,
            psycopg.connect(pg_stack.replica("r2").dsn, autocommit=True) as r2,
        ):
            primary.execute("DELETE FROM delay_probe")
            primary.execute("INSERT INTO delay_probe VALUES (42)")
            # Right after the commit r2 does not show it yet; it does once the delay passed.
            assert r2.execute("SELECT count(*) FROM delay_probe WHERE id = 42").fetchone() == (0,)
            wait_for(lambda: r2.execute("SELECT count(*) FROM delay_probe WHERE id = 42").fetchone() == (1,))
    finally:
        pg_stack.set_apply_delay("r2", 0)


def test_fault_on_the_primary_is_refused_clearly(pg_stack: Stack) -> None:
    from readscale.errors import StackError

    with pytest.raises(StackError, match="primary, not a replica"):
        pg_stack.primary.pause_replay()
    with pytest.raises(StackError, match="no node named 'r9'"):
        pg_stack.pause_replay("r9")
