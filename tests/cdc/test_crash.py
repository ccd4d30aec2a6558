"""Acceptance: the CDC worker killed with SIGKILL between applying a batch and confirming
its position misses nothing once restarted (the batch is delivered again)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from readscale import NO_VALUE, RedisSettings
from readscale._core.cache.policy import CachePolicy, Tier
from readscale._sync.backends.redis import RedisBackend
from readscale._sync.cache.cache import Cache
from readscale._sync.cdc.worker import CdcRule, CdcSettings, CdcWorker

pytestmark = [pytest.mark.stack, pytest.mark.slow]
ROWS = 20


def run_worker(opts: dict[str, object]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tests.cdc.worker_process", json.dumps(opts)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


@pytest.fixture
def cache_and_slot(pg_primary_dsn: str, redis_url: str) -> Iterator[tuple[Cache, str, str, str]]:
    """A table of ROWS rows, a cache over it and a CDC slot, all removed at the end even
    when the test fails (a slot left behind keeps WAL on the session's primary)."""
    table = f"crash_{uuid.uuid4().hex[:8]}"
    slot = f"s_{uuid.uuid4().hex[:10]}"
    prefix = f"crash{uuid.uuid4().hex[:6]}:"
    with psycopg.connect(pg_primary_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, name text)")
        conn.execute(f"INSERT INTO {table} SELECT g, 'v1' FROM generate_series(1, {ROWS}) g")
    cache = Cache(
        RedisBackend(RedisSettings(url=redis_url)),
        policy=CachePolicy(name="cdc", ttl=300.0, tiers=frozenset({Tier.L2})),
        prefix=prefix,
    )
    setup = CdcWorker(cache, [CdcRule(table, keys=("product:{id}",))], CdcSettings(dsn=pg_primary_dsn, slot=slot))
    try:
        setup.ensure_slot()
        yield cache, table, slot, prefix
    finally:
        try:
            setup.drop_slot()
        finally:
            setup.close()
            cache.close()
            with psycopg.connect(pg_primary_dsn, autocommit=True) as conn:
                conn.execute(f"DROP TABLE IF EXISTS {table}")


def test_a_worker_killed_before_confirming_misses_nothing(
    pg_primary_dsn: str, redis_url: str, cache_and_slot: tuple[Cache, str, str, str]
) -> None:
    cache, table, slot, prefix = cache_and_slot
    for i in range(1, ROWS + 1):
        cache.set(f"product:{i}", "v1")
    with psycopg.connect(pg_primary_dsn, autocommit=True) as conn:
        for i in range(1, ROWS + 1):  # one transaction per row
            conn.execute(f"UPDATE {table} SET name = 'v2' WHERE id = %s", (i,))

    opts: dict[str, object] = {
        "redis_url": redis_url, "dsn": pg_primary_dsn, "table": table, "slot": slot, "prefix": prefix,
        "crash": True, "batch": 10_000,
    }  # fmt: skip
    crashed = run_worker(opts)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    assert all(cache.get(f"product:{i}") is NO_VALUE for i in range(1, ROWS + 1))  # applied before the crash

    # Meanwhile stale values come back (an unprotected writer): only a re-delivery fixes them.
    for i in range(1, ROWS + 1):
        cache.set(f"product:{i}", "v1")
    restarted = run_worker({**opts, "crash": False})
    assert restarted.returncode == 0, restarted.stderr
    report = json.loads(restarted.stdout)
    # The slot decodes every transaction of the database: the session's other tests and
    # PostgreSQL's own (autovacuum's ANALYZE, DDL) come as transactions too. Each of ours
    # changed one row, hence one key of its own: the keys count our transactions.
    assert report["keys"] == ROWS, report  # every one of our transactions delivered again
    assert report["transactions"] >= ROWS, report
    assert [cache.get(f"product:{i}") for i in range(1, ROWS + 1)] == [NO_VALUE] * ROWS

    again = run_worker({**opts, "crash": False})
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["keys"] == 0  # confirmed: not delivered a third time
