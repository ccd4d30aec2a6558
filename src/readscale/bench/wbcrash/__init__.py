"""The write-behind crash harness: writes and counters from several processes while the
flusher and Redis are killed, on a slow disk; then what the database holds is compared
with what every producer was told.

One :class:`CrashPlan` is one run on a private stack (PostgreSQL, and a Redis with AOF
behind :class:`~readscale.stack.slowdisk.SlowDisk`): ``producers`` processes of
``threads`` threads write values and increment counters for ``seconds`` through the sync
:class:`WriteBehind` in the plan's mode, the real ``readscale writebehind run`` flushes
them and is SIGKILLed every few seconds, and Redis is killed as the plan says:

- ``process``: SIGKILL (what the AOF file holds survives);
- ``rewrite``: SIGKILL while a ``BGREWRITEAOF`` is in progress (its child too);
- ``host``: SIGKILL, then every AOF increment file cut back to what its last fsync
  covered: what a power loss would leave.

Every loss is measured against the promise of the mode (``readscale._core.
writebehind.modes``): ``durable`` may lose nothing, ``fast`` only writes acknowledged in
the :data:`FAST_LOSS_WINDOW` before a kill. A counter may never count an increment twice.
The test suite runs short plans (``tests/writebehind/test_durability.py``); ``readscale
bench writes`` runs long ones. What survived, and whether that kept the promise, is
:mod:`.check`.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from readscale._core.writebehind.modes import coerce_mode
from readscale._core.writebehind.settings import FlusherSettings, queue_keys
from readscale.bench.wbcrash.check import CrashResult, check, promise_kept
from readscale.stack import Stack
from readscale.stack.slowdisk import SlowDisk

READSCALE = str(Path(sys.executable).with_name("readscale"))
GROUP = FlusherSettings().group
KILLS = ("process", "rewrite", "host")


@dataclass(frozen=True)
class CrashPlan:
    """One run. ``redis_kills`` are spread evenly over the load, in order; ``slow_phase``
    is ``(start, end, delay_ms)`` as shares of the load: a stretch of a slower disk
    (2,500 ms reaches Redis's limit on postponing writes, counted by aof_delayed_fsync),
    before the kills. Half the value writes (``unique``) go to keys of their own."""

    mode: str = "durable"
    appendfsync: str = "always"
    fsync_delay_ms: int = 50
    seconds: float = 20.0
    producers: int = 3
    threads: int = 3
    keys: int = 200
    counters: float = 0.3
    counter_keys: int = 20
    redis_kills: tuple[str, ...] = KILLS
    flusher_kill_every: tuple[float, float] = (1.0, 3.0)
    slow_phase: tuple[float, float, int] | None = None
    seed: int = 5

    def __post_init__(self) -> None:
        coerce_mode(self.mode)
        for kill in self.redis_kills:
            if kill not in KILLS:
                raise ValueError(f"redis_kills: {kill!r} is not one of {', '.join(KILLS)}")


class _Flusher:
    """``readscale writebehind run`` as a child process we can SIGKILL."""

    def __init__(self, argv: list[str], log: Path) -> None:
        self.log = log
        self._out = log.open("wb")
        self.proc = subprocess.Popen(argv, stdout=self._out, stderr=subprocess.STDOUT)

    def running(self) -> bool:
        return "running" in self.log.read_text(errors="replace")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)
        self._out.close()

    def terminate(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=60)
        self._out.close()
        return code


def _wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def _create_table(dsn: str, table: str) -> None:
    """The run's table (a generated name: the f-strings below hold no outside input)."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            f"CREATE TABLE {table} (key text PRIMARY KEY, version bigint NOT NULL DEFAULT 0, value jsonb, "
            "views bigint NOT NULL DEFAULT 0)"
        )
        conn.execute(f"CREATE TABLE {table}_regressions (key text, old_version bigint, new_version bigint)")
        conn.execute(
            f"CREATE FUNCTION {table}_watch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "  # noqa: S608
            f"IF NEW.version < OLD.version THEN INSERT INTO {table}_regressions VALUES (OLD.key, OLD.version, "
            "NEW.version); END IF; RETURN NEW; END $$"
        )
        conn.execute(
            f"CREATE TRIGGER {table}_watch BEFORE UPDATE ON {table} FOR EACH ROW EXECUTE FUNCTION {table}_watch()"
        )


def run_crash(plan: CrashPlan, root: Path, progress: Callable[[str], None] = lambda _: None) -> CrashResult:
    """Run ``plan`` on a private stack under ``root`` (stopped at the end)."""
    import redis

    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o755)
    stack = Stack(root / "stack")
    started = time.monotonic()
    result = CrashResult(plan=asdict(plan))
    children: list[subprocess.Popen[bytes]] = []  # killed whatever happens
    try:
        stack.prepare()
        progress(f"{plan.mode}: starting PostgreSQL and Redis (appendfsync {plan.appendfsync}, slow disk)")
        stack.start_postgres(replicas=0)
        disk = SlowDisk(root / "disk", delay_ms=plan.fsync_delay_ms)
        node = stack.start_redis(aof=True, appendfsync=plan.appendfsync, environment=disk.environment)
        dsn, url = stack.primary.dsn, node.url
        tag = uuid.uuid4().hex[:8]
        table, queue, prefix = f"crash_{tag}", f"crash{tag}", f"c{tag}:"
        _create_table(dsn, table)
        keys = queue_keys(prefix, queue)
        client = redis.Redis.from_url(url, protocol=2, socket_timeout=30)
        rng = random.Random(plan.seed)
        out_dir = root / "out"
        out_dir.mkdir(exist_ok=True)

        def flusher(n: int) -> _Flusher:
            argv = [
                READSCALE, "writebehind", "run", "--redis-url", url, "--dsn", dsn, "--table", table,
                "--counter-column", "views", "--queue", queue, "--prefix", prefix, "--mode", plan.mode,
                "--consumer", f"crash-{n % 3}", "--batch-size", "200", "--batch-wait-ms", "20",
                "--claim-idle", "1", "--report-every", "0", "--check-every", "1",
            ]  # fmt: skip
            made = _Flusher(argv, out_dir / f"flusher-{n}.log")
            children.append(made.proc)
            return made

        def producer(i: int) -> subprocess.Popen[bytes]:
            argv = [
                sys.executable, "-m", "readscale.bench._wbproducer", "--url", url, "--queue", queue,
                "--prefix", prefix, "--mode", plan.mode, "--producer", str(i), "--threads", str(plan.threads),
                "--seconds", str(plan.seconds), "--keys", str(plan.keys), "--counters", str(plan.counters),
                "--counter-keys", str(plan.counter_keys), "--out", str(out_dir / f"producer-{i}.json"),
            ]  # fmt: skip
            proc = subprocess.Popen(argv)
            children.append(proc)
            return proc

        producers = [producer(i) for i in range(plan.producers)]
        load_start = time.monotonic()
        kill_times: list[float] = []
        n = len(plan.redis_kills)
        slow = plan.slow_phase
        # Kills are spread evenly over the load, after the slow stretch if there is one (a
        # kill resets Redis's aof_delayed_fsync, which the stretch is there to raise).
        first = slow[1] if slow else 0.0
        kill_plan = [(load_start + plan.seconds * (first + (1 - first) * (i + 1) / (n + 1)), kind)
                     for i, kind in enumerate(plan.redis_kills)]  # fmt: skip
        slow_window = (load_start + plan.seconds * slow[0], load_start + plan.seconds * slow[1]) if slow else None
        incarnation = 0
        current = flusher(incarnation)
        next_flusher_kill = time.monotonic() + rng.uniform(*plan.flusher_kill_every)
        delayed_max = 0

        def sample_info() -> None:
            nonlocal delayed_max
            try:
                info = client.info("persistence")
            except redis.RedisError:
                return
            delayed_max = max(delayed_max, int(info.get("aof_delayed_fsync", 0)))

        def delay_now() -> int:
            now = time.monotonic()
            if slow and slow_window and slow_window[0] <= now < slow_window[1]:
                return slow[2]
            return plan.fsync_delay_ms

        while any(p.poll() is None for p in producers):
            now = time.monotonic()
            disk.set_delay(delay_now())
            sample_info()
            if kill_plan and now >= kill_plan[0][0]:
                _, kind = kill_plan.pop(0)
                progress(f"{plan.mode}: killing Redis ({kind})")
                if kind == "rewrite":
                    # The rewrite's child fsyncs its file before it is done: on this slow disk
                    # it is still running a few hundred milliseconds after it started.
                    disk.set_delay(max(300, plan.fsync_delay_ms))
                    client.bgrewriteaof()
                    _wait_for(lambda: client.info("persistence").get("aof_rewrite_in_progress") == 1, 30,
                              "the AOF rewrite to start")  # fmt: skip
                    result.killed_during_rewrite += 1
                stack.kill("redis")
                # After the kill returned: whatever Redis acknowledged was called before this.
                kill_times.append(time.time())
                if kind == "host":
                    disk.lose_unsynced(node.dir)
                result.redis_kills[kind] = result.redis_kills.get(kind, 0) + 1
                disk.set_delay(delay_now())
                time.sleep(0.3)
                stack.start("redis")
                continue
            # One flusher sees the slow stretch whole (and the fsync still running after it).
            in_slow = slow_window is not None and now < slow_window[1] + 3.0
            if now >= next_flusher_kill and current.running() and not in_slow:
                current.kill()
                result.flusher_kills += 1
                incarnation += 1
                current = flusher(incarnation)
                next_flusher_kill = now + rng.uniform(*plan.flusher_kill_every)
            time.sleep(0.05)
        for p in producers:
            p.wait(timeout=120)

        progress(f"{plan.mode}: draining")
        disk.set_delay(0)
        if current.proc.poll() is not None:
            incarnation += 1
            current = flusher(incarnation)

        def drained() -> bool:
            try:
                pending = client.xpending(keys.stream, GROUP)["pending"] if client.exists(keys.stream) else 0
                return client.xlen(keys.stream) == 0 and pending == 0 and client.hlen(keys.acc) == 0
            except redis.RedisError:
                return False

        _wait_for(drained, 180, "the flusher to drain the queue")
        sample_info()
        _wait_for(current.running, 30, "the last flusher to start")
        if current.terminate() != 0:
            raise AssertionError(f"the last flusher did not stop cleanly:\n{current.log.read_text()}")
        logs = "".join(p.read_text(errors="replace") for p in sorted(out_dir.glob("flusher-*.log")))
        result.flusher_logged_delayed_fsync = "aof_delayed_fsync=" in logs
        result.aof_delayed_fsync_max = delayed_max
        result.fsyncs = disk.fsyncs()
        client.close()
        check(result, plan.producers, dsn, url, table, prefix, out_dir, sorted(kill_times))
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait(timeout=30)
        stack.down()
    result.seconds = round(time.monotonic() - started, 1)
    return result


__all__ = ["KILLS", "CrashPlan", "CrashResult", "promise_kept", "run_crash"]
