"""`readscale cdc run --once` with a TOML rules file, end to end."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest

from readscale import NO_VALUE, RedisSettings
from readscale._sync.backends.redis import RedisBackend
from readscale._sync.cache.cache import Cache
from readscale.cdc import load_rules
from readscale.errors import ConfigurationError
from tests.helpers import cli

pytestmark = pytest.mark.stack


def test_cdc_run_once_applies_pending_changes(tmp_path: Path, pg_primary_dsn: str, redis_url: str) -> None:
    table = f"cli_{uuid.uuid4().hex[:8]}"
    slot = f"s_{uuid.uuid4().hex[:10]}"
    prefix = f"cli{uuid.uuid4().hex[:6]}:"
    rules = tmp_path / "rules.toml"
    rules.write_text(f'[[rule]]\ntable = "{table}"\nkeys = ["item:{{id}}"]\n')
    with psycopg.connect(pg_primary_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, v text)")
        conn.execute(f"INSERT INTO {table} VALUES (1, 'a')")
    args = ["cdc", "run", "--dsn", pg_primary_dsn, "--rules", str(rules), "--redis-url", redis_url,
            "--slot", slot, "--prefix", prefix, "--once", "--no-tombstones", "--no-bus"]  # fmt: skip
    cli(*args)  # creates the slot
    cache = Cache(RedisBackend(RedisSettings(url=redis_url)), prefix=prefix)
    cache.set("item:1", "a")
    with psycopg.connect(pg_primary_dsn, autocommit=True) as conn:
        conn.execute(f"UPDATE {table} SET v = 'b' WHERE id = 1")
    out = cli(*args).stdout
    assert "transactions" in out
    assert cache.get("item:1") is NO_VALUE
    with psycopg.connect(pg_primary_dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
    cache.close()


def test_bad_rules_files_are_named(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[[rule]]\ntable = 't'\nkeyz = ['x:{id}']\n")
    with pytest.raises(ConfigurationError, match="unknown fields"):
        load_rules(bad)
    bad.write_text("not = [valid")
    with pytest.raises(ConfigurationError, match="not valid TOML"):
        load_rules(bad)
    with pytest.raises(ConfigurationError, match="does not exist"):
        load_rules(tmp_path / "missing.toml")


def test_consistency_check_cli_reports_stale_keys(tmp_path: Path, redis_url: str) -> None:
    import json

    import redis

    prefix = f"cc{uuid.uuid4().hex[:6]}:"
    truth_hash = f"truth-{uuid.uuid4().hex[:6]}"
    cache = Cache(RedisBackend(RedisSettings(url=redis_url)), prefix=prefix)
    client = redis.Redis.from_url(redis_url, protocol=2)
    for i in range(50):
        cache.set(f"k{i}", f"v{i}")
        client.hset(truth_hash, f"k{i}", f"v{i}")
    client.hset(truth_hash, "k7", "changed")
    keys = tmp_path / "keys.txt"
    keys.write_text("\n".join(f"k{i}" for i in range(50)))
    out = cli(
        "consistency", "check", "--truth", "tests.cache.truth_fixture:truth", "--keys", str(keys),
        "--redis-url", redis_url, "--prefix", prefix, "--json",
        env={"TRUTH_REDIS_URL": redis_url, "TRUTH_HASH": truth_hash},
    ).stdout  # fmt: skip
    report = json.loads(out)
    assert report["checked"] == 50
    assert report["stale"] == 1
    assert report["stale_keys"] == ["k7"]
    cache.close()
    client.close()


def test_cdc_run_outlives_a_redis_outage(tmp_path: Path, pg_primary_dsn: str, readscale_stack_factory: Any) -> None:
    """The worker keeps retrying while Redis is dead and applies the change once it is back."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from readscale.stack import StackConfig

    stack = readscale_stack_factory(StackConfig(postgres=False, redis_aof=True))
    table = f"cli_{uuid.uuid4().hex[:8]}"
    slot = f"s_{uuid.uuid4().hex[:10]}"
    rules = tmp_path / "rules.toml"
    rules.write_text(f'[[rule]]\ntable = "{table}"\nkeys = ["item:{{id}}"]\n')
    with psycopg.connect(pg_primary_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, v text)")
        conn.execute(f"INSERT INTO {table} VALUES (1, 'a')")
    cache = Cache(RedisBackend(RedisSettings(url=stack.redis.url)))
    cache.set("item:1", "a")
    readscale = str(Path(sys.executable).with_name("readscale"))
    log = tmp_path / "cdc.log"
    with open(log, "wb") as out:
        worker = subprocess.Popen(
            [readscale, "cdc", "run", "--dsn", pg_primary_dsn, "--rules", str(rules), "--redis-url", stack.redis.url,
             "--slot", slot, "--no-tombstones", "--no-bus"],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        time.sleep(2.0)  # the slot exists
        stack.kill("redis")
        with psycopg.connect(pg_primary_dsn, autocommit=True) as conn:
            conn.execute(f"UPDATE {table} SET v = 'b' WHERE id = 1")
        time.sleep(2.0)  # several failed rounds
        assert worker.poll() is None, log.read_text()
        stack.start("redis")  # its AOF brings the old entry back
        for _ in range(100):
            if cache.get("item:1") is NO_VALUE:
                break
            time.sleep(0.1)
        assert cache.get("item:1") is NO_VALUE, log.read_text()
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(10)
        cache.close()
        with psycopg.connect(pg_primary_dsn, autocommit=True) as conn:
            conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))


def _rules(tmp_path: Path, table: str, keys: str = "item:{id}") -> Path:
    rules = tmp_path / f"rules_{uuid.uuid4().hex[:6]}.toml"
    rules.write_text(f'[[rule]]\ntable = "{table}"\nkeys = ["{keys}"]\n')
    return rules


def _one_line_exit_2(proc: Any) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    return str(lines[0])


def test_the_cdc_worker_never_shortens_the_applications_tombstones(
    tmp_path: Path, pg_primary_dsn: str, redis_url: str
) -> None:
    """Issue 12, defect 3: the worker's invalidate script reset a 35 s tombstone to its own
    5 s, so turning the backstop on let lagging replicas refill old rows."""
    import redis

    from readscale._core.cache.keys import companion_key
    from readscale._core.postgres.lsn import parse_lsn

    table = f"cli_{uuid.uuid4().hex[:8]}"
    slot = f"s_{uuid.uuid4().hex[:10]}"
    prefix = f"cli{uuid.uuid4().hex[:6]}:"
    rules = _rules(tmp_path, table)
    with psycopg.connect(pg_primary_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, v text)")
        conn.execute(f"INSERT INTO {table} VALUES (1, 'a')")
    args = ["cdc", "run", "--dsn", pg_primary_dsn, "--rules", str(rules), "--redis-url", redis_url,
            "--slot", slot, "--prefix", prefix, "--once", "--no-bus"]  # fmt: skip
    cli(*args)  # creates the slot
    app = Cache(RedisBackend(RedisSettings(url=redis_url)), prefix=prefix, tombstone_ttl=35.0)
    with psycopg.connect(pg_primary_dsn, autocommit=True) as conn:
        conn.execute(f"UPDATE {table} SET v = 'b' WHERE id = 1")
        row = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
    assert row is not None
    app.invalidate("item:1", lsn=parse_lsn(row[0]))  # the application's own, after commit
    cli(*args)  # the worker applies the same commit, with its defaults
    client = redis.Redis.from_url(redis_url, protocol=2)
    left = client.pttl(companion_key(app.key("item:1"), "tomb"))
    assert left > 30_000, f"the tombstone has {left} ms left"
    # A worker told to use another life than the application's is refused, in one line.
    line = _one_line_exit_2(cli(*args, "--tombstone-ttl", "5", check=False))
    assert "tombstone_ttl is 5 s here but 35 s" in line
    with psycopg.connect(pg_primary_dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
    client.close()
    app.close()


def test_the_cdc_worker_names_a_missing_table_column_or_permission(
    tmp_path: Path, pg_primary_dsn: str, redis_url: str
) -> None:
    table = f"cli_{uuid.uuid4().hex[:8]}"
    role = f"norepl_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(pg_primary_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, v text)")
        conn.execute(f"CREATE ROLE {role} LOGIN")
    base = ["cdc", "run", "--dsn", pg_primary_dsn, "--redis-url", redis_url, "--once", "--no-bus",
            "--slot", f"s_{uuid.uuid4().hex[:10]}"]  # fmt: skip
    try:
        line = _one_line_exit_2(cli(*base, "--rules", str(_rules(tmp_path, "no_such_table")), check=False))
        assert "public.no_such_table does not exist" in line
        line = _one_line_exit_2(cli(*base, "--rules", str(_rules(tmp_path, table, "item:{sku}")), check=False))
        assert f"public.{table} has no column sku" in line
        as_role = pg_primary_dsn.replace("postgres@", f"{role}@", 1)
        args = ["cdc", "run", "--dsn", as_role, "--redis-url", redis_url, "--once", "--no-bus",
                "--rules", str(_rules(tmp_path, table))]  # fmt: skip
        line = _one_line_exit_2(cli(*args, check=False))
        assert f"role '{role}' may not use replication slots" in line
    finally:
        with psycopg.connect(pg_primary_dsn, autocommit=True) as conn:
            conn.execute(f"DROP ROLE {role}")
