"""``readscale writebehind``: run the flusher as a service, stop it with SIGTERM, look at
the queue and requeue its dead letters."""

from __future__ import annotations

import json
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
import redis

from readscale import RedisSettings
from readscale._core.cache.policy import CachePolicy
from readscale._core.writebehind.settings import WriteBehindSettings
from readscale._sync.backends.redis import RedisBackend
from readscale._sync.cache.cache import Cache
from readscale._sync.writebehind.producer import WriteBehind
from tests.helpers import READSCALE, cli, cli_json

pytestmark = [pytest.mark.stack, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def names() -> dict[str, str]:
    tag = uuid.uuid4().hex[:8]
    return {"prefix": f"cli{tag}:", "queue": f"cli{tag}", "table": f"cli_{tag}"}


@pytest.fixture
def producer(durable_redis_url: str, names: dict[str, str]) -> Iterator[WriteBehind]:
    cache = Cache(
        RedisBackend(RedisSettings(url=durable_redis_url)), policy=CachePolicy(ttl=600.0), prefix=names["prefix"]
    )
    yield WriteBehind(cache, WriteBehindSettings(queue=names["queue"]))
    cache.close()


def wait_for(condition: Callable[[], bool], proc: subprocess.Popen[bytes], log: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"the flusher exited ({proc.returncode}):\n{log.read_text()}"
        assert time.monotonic() < deadline, f"timed out; the flusher said:\n{log.read_text()}"
        time.sleep(0.05)


def drained(durable_redis_url: str, producer: WriteBehind) -> Callable[[], bool]:
    client = redis.Redis.from_url(durable_redis_url, protocol=2)

    def check() -> bool:
        if client.xlen(producer.keys.stream):
            return False
        groups = client.xinfo_groups(producer.keys.stream)
        return all(g["pending"] == 0 for g in groups)

    return check


def start_flusher(args: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen([READSCALE, "writebehind", "run", *args], stdout=out, stderr=subprocess.STDOUT,
                                env=env)  # fmt: skip


def test_the_flusher_service_writes_stops_on_sigterm_and_reports(
    durable_redis_url: str, pg_primary_dsn: str, names: dict[str, str], producer: WriteBehind, tmp_path: Path
) -> None:
    table = names["table"]
    with psycopg.connect(pg_primary_dsn, autocommit=True) as conn:
        conn.execute(
            f"CREATE TABLE {table} (key text PRIMARY KEY, version bigint NOT NULL, value jsonb NOT NULL "
            "CHECK (value ? 'name'))"
        )
    try:
        versions = {f"user:{i}": producer.write_behind(f"user:{i}", {"name": f"u{i}"}) for i in range(50)}
        producer.write_behind("user:bad", {"nom": "no name"})
        log = tmp_path / "flusher.log"
        proc = start_flusher(
            ["--redis-url", durable_redis_url, "--dsn", pg_primary_dsn, "--table", table, "--queue", names["queue"],
             "--prefix", names["prefix"], "--consumer", "cli-test", "--max-attempts", "2", "--report-every", "0.2"],
            log,
        )  # fmt: skip
        try:
            wait_for(drained(durable_redis_url, producer), proc, log)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
        text = log.read_text()
        assert "flusher cli-test running" in text
        assert "stopping: finishing the batch in hand" in text
        assert "flusher cli-test stopped: queue 0" in text
        assert "dead letters 1" in text
        with psycopg.connect(pg_primary_dsn) as conn:
            stored = dict(conn.execute(f"SELECT key, version FROM {table}").fetchall())
        assert stored == versions

        common = ["--redis-url", durable_redis_url, "--queue", names["queue"], "--prefix", names["prefix"]]
        status = cli_json("writebehind", "status", *common)
        assert (status["length"], status["pending"], status["dead_letters"]) == (0, 0, 1)
        assert [c["name"] for c in status["consumers"]] == ["cli-test"]
        (dead,) = status["oldest_dead_letters"]
        assert (dead["key"], dead["error_type"], dead["attempts"]) == ("user:bad", "CheckViolation", 2)
        shown = cli("writebehind", "status", *common).stdout
        assert "0 records, 0 pending, 1 dead letters" in shown
        assert "user:bad" in shown and "CheckViolation" in shown
        assert "requeued 1 dead letter" in cli("writebehind", "requeue", *common, "--all").stdout
        assert cli_json("writebehind", "status", *common)["length"] == 1
    finally:
        with psycopg.connect(pg_primary_dsn, autocommit=True) as conn:
            conn.execute(f"DROP TABLE IF EXISTS {table}")


def test_the_flusher_runs_a_writer_of_your_own(
    durable_redis_url: str, names: dict[str, str], producer: WriteBehind, tmp_path: Path
) -> None:
    for i in range(10):
        producer.write_behind(f"k{i % 3}", {"n": i})
    out = tmp_path / "batches.jsonl"
    env = {"PYTHONPATH": str(ROOT), "READSCALE_TEST_WRITER_OUT": str(out), "PATH": "/usr/bin:/bin"}
    log = tmp_path / "flusher.log"
    proc = start_flusher(
        ["--redis-url", durable_redis_url, "--writer", "tests.writebehind._filewriter:FileWriter",
         "--queue", names["queue"], "--prefix", names["prefix"], "--consumer", "own-writer"],
        log, env=env,
    )  # fmt: skip
    try:
        wait_for(drained(durable_redis_url, producer), proc, log)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    batches = [json.loads(line) for line in out.read_text().splitlines()]
    written = {key: value for batch in batches for key, _, value in batch}
    assert written == {"k0": {"n": 9}, "k1": {"n": 7}, "k2": {"n": 8}}


@pytest.mark.parametrize(
    ("args", "message", "code"),
    [
        ([], "needs --dsn and --table", 2),
        (["--writer", "nocolon"], "module:attribute", 2),
        (["--writer", "json:dumps"], "the writer factory", 1),  # the user's code failed, not the command line
        (["--writer", "json:JSONDecoder"], "not an async batch writer", 2),
        (["--writer", "json:loads", "--table", "t"], "either --writer or --dsn", 2),
    ],
)
def test_bad_flusher_arguments_are_one_clear_error(args: list[str], message: str, code: int) -> None:
    proc = cli("writebehind", "run", "--redis-url", "redis://127.0.0.1:1/0", *args, check=False)
    assert proc.returncode == code
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: ")
    return lines[0]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--table", "no_such_table_here"], 'relation "no_such_table_here" does not exist'),
        (
            [
                "--table",
                "pg_class",
                "--key-column",
                "relname",
                "--version-column",
                "relpages",
                "--value-column",
                "nope",
            ],
            "has no column 'nope'",
        ),
        (["--counter-table", "no_such_counts", "--counter-column", "n"], 'relation "no_such_counts" does not exist'),
    ],
)
def test_a_flusher_whose_table_cannot_work_exits_2_with_one_line(
    durable_redis_url: str, pg_primary_dsn: str, args: list[str], message: str
) -> None:
    """Issue 12, defect 9: it used to retry forever, calling a missing table transient."""
    proc = cli("writebehind", "run", "--redis-url", durable_redis_url, "--dsn", pg_primary_dsn, *args, check=False,
               timeout=60)  # fmt: skip
    assert proc.returncode == 2
    assert message in one_error_line(proc.stderr)
    assert "running" not in proc.stderr


def test_a_flusher_on_a_redis_that_cannot_keep_the_mode_exits_2_with_one_line(
    redis_url: str, durable_redis_url: str, pg_primary_dsn: str
) -> None:
    common = ["writebehind", "run", "--dsn", pg_primary_dsn, "--table", "t"]
    proc = cli(*common, "--redis-url", redis_url, check=False, timeout=60)
    assert proc.returncode == 2
    line = one_error_line(proc.stderr)
    assert "write-behind mode 'durable' refused on redis://" in line
    assert "appendonly is no, it needs yes" in line
    proc = cli(*common, "--redis-url", redis_url, "--mode", "fast", check=False, timeout=60)
    assert proc.returncode == 2
    assert "'fast' refused" in one_error_line(proc.stderr)
    proc = cli(*common, "--redis-url", durable_redis_url, "--mode", "sometimes", check=False, timeout=60)
    assert proc.returncode == 2
    assert "durable, fast, volatile" in one_error_line(proc.stderr)
    status = cli_json("writebehind", "status", "--redis-url", redis_url)
    assert status["modes"]["volatile"] == "kept"
    assert "appendonly is no" in status["modes"]["durable"]
    status = cli_json("writebehind", "status", "--redis-url", durable_redis_url)
    assert status["modes"] == {"durable": "kept", "fast": "kept", "volatile": "kept"}
    assert status["aof_delayed_fsync"] == 0
