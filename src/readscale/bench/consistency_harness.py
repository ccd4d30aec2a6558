"""The consistency harness: run a :class:`Scenario` against real servers, record every
operation, and check the history (``readscale._core.consistency.history``).

One run:

1. a fresh table of rows ``(id, version)``; every write increments a row's version on the
   primary in its own transaction and returns it, so versions per key are exact;
2. two or more service processes (``readscale.bench.consistency_service``), each with its
   own router, L1, bus subscription, SQLAlchemy engines and Django ORM;
3. the CDC worker, when the scenario has it, embedded here as a user may embed it, with a
   witness that notes when each (key, version)'s invalidation was applied;
4. sessions (one HTTP client each, with its cookie jar) send reads and writes to any of
   the processes, recording invocation and completion times on one monotonic clock;
5. faults at their scheduled times: replica apply delays (0 to 40 s), paused replay,
   killed replicas, the bus's connections killed or its Redis down, the cache's Redis
   killed (it restarts empty, without persistence);
6. everything undone, the history checked, and the result returned with enough context
   (the scenario, per-property counts, each violation with the session's operations
   around it) to reproduce and explain a failure: ``readscale bench consistency --seed N``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import json
import logging
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import psycopg

from readscale._core.consistency.history import PROPERTIES, ReadOp, Verdict, WriteOp, check_history
from readscale.bench.consistency_scenario import CACHE_APIS, WB_API, Fault, Scenario, claims_for, mode_for
from readscale.bench.consistency_service import CONFIG_ENV, ServiceConfig
from readscale.replicas import DEFAULT_COOKIE
from readscale.stack import Stack

L2_NODE = "consistency-redis"
BUS_NODE = "consistency-bus"
WITNESS = "cons-witness:"
TOKEN_COOKIE = DEFAULT_COOKIE  # the middlewares' cookie
#: How far past its duration a seed may run to reach ``Scenario.min_reads``.
MIN_READS_GRACE = 6.0
Progress = Callable[[str], None]


@dataclass
class Op:
    """One operation as the client saw it."""

    id: int
    session: str
    kind: str  # read | write
    key: int
    api: str
    mode: str
    proc: int
    invoked: float
    completed: float | None = None
    ok: bool = False
    version: int | None = None
    loaded: bool = False
    nodes: tuple[str, ...] = ()
    pos: int | None = None
    invalidated: bool = False
    error: str | None = None
    #: The request carried the session's causal token (its cookie). A request without
    #: one is a new session as far as the service knows: what it sees is not carried on
    #: (the middlewares store a token after a write, or for a session that has one).
    token_sent: bool = False

    def describe(self, start: float) -> str:
        done = "?" if self.completed is None else f"{self.completed - start:.3f}"
        what = f"{self.kind} k={self.key} via {self.api}" + (f" [{self.mode}]" if self.mode != "session" else "")
        if not self.ok:
            result = f"failed: {(self.error or '')[:80]}"
        else:
            result = f"v{self.version}"
            if self.kind == "read":
                source = ",".join(self.nodes) or ("cache" if self.api in CACHE_APIS and not self.loaded else "?")
                result += f" from {source}"
                result += " (loaded)" if self.loaded else ""
            elif not self.invalidated:
                result += " (no app invalidation)"
        pos = "" if self.pos is None else f" pos={self.pos:X}"
        return f"  #{self.id} {self.session} p{self.proc} +{self.invoked - start:.3f}..{done} {what} -> {result}{pos}"


@dataclass
class RunResult:
    scenario: Scenario
    verdict: Verdict
    ops: list[Op]
    start: float
    cdc_applied: dict[tuple[int, int], float]
    faults_done: list[str]
    service_stats: list[dict[str, Any]]
    seconds: float
    logs: dict[str, str] = field(default_factory=dict)
    #: Where the services' and the coordinator's logs are kept (None once removed).
    workdir: Path | None = None

    @property
    def reads(self) -> int:
        return sum(1 for op in self.ops if op.kind == "read" and op.ok)

    @property
    def writes(self) -> int:
        return sum(1 for op in self.ops if op.kind == "write" and op.ok)

    @property
    def failed(self) -> int:
        return sum(1 for op in self.ops if not op.ok)

    def api_counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for op in self.ops:
            if op.ok:
                out[op.api] = out.get(op.api, 0) + 1
        return dict(sorted(out.items()))

    def excerpt(self, read_id: int, cause: int | None = None, *, before: float = 2.0, limit: int = 40) -> list[str]:
        """The operation that set the floor, the writes of the key since, and the violating
        read's session shortly before it."""
        by_id = {op.id: op for op in self.ops}
        read = by_id[read_id]
        end = read.completed or read.invoked
        origin = by_id.get(cause) if cause is not None else None
        since = min(read.invoked - before, origin.invoked if origin is not None else end)
        lines = []
        for op in sorted(self.ops, key=lambda o: o.invoked):
            if op.invoked > end:
                break
            mark = "   <== violation" if op.id == read_id else ("   <== floor set here" if op.id == cause else "")
            near = op.invoked >= read.invoked - before and op.session == read.session
            key_write = op.invoked >= since and op.kind == "write" and op.key == read.key
            if mark or near or key_write:
                lines.append(op.describe(self.start) + mark)
        return lines[-limit:]

    def report(self, *, violations: int = 5) -> str:
        s = self.scenario
        lines = [s.describe(), "faults: " + ("; ".join(self.faults_done) or "none")]
        lines.append(
            f"{len(self.ops)} operations ({self.reads} reads, {self.writes} writes, {self.failed} failed) "
            f"in {self.seconds:.1f}s; by API: {self.api_counts()}"
        )
        for name, count in self.verdict.counts.items():
            lines.append(
                f"  {name}: {count.checked} checked, {count.exercised} exercised, {count.violations} violations"
            )
        for v in self.verdict.violations[:violations]:
            lines.append(v.describe())
            if v.read is not None:
                lines += self.excerpt(v.read.id, v.cause)
        if self.verdict.violations:
            lines.append(f"replay: {replay_command(s)}")
        if self.workdir is not None:
            lines.append(f"logs and {HISTORY_FILE} (check again: bench consistency --recheck FILE): {self.workdir}")
        return "\n".join(lines)

    def to_json(self, *, violations: int = 20) -> dict[str, Any]:
        return {
            "seed": self.scenario.seed,
            "scenario": self.scenario.describe(),
            "faults": self.faults_done,
            "operations": len(self.ops),
            "reads": self.reads,
            "writes": self.writes,
            "failed": self.failed,
            "seconds": round(self.seconds, 2),
            "apis": self.api_counts(),
            "properties": self.verdict.summary(),
            "violations": [
                {
                    "property": v.property,
                    "detail": v.describe(),
                    "history": self.excerpt(v.read.id, v.cause) if v.read is not None else [],
                }
                for v in self.verdict.violations[:violations]
            ],
        }


def replay_command(scenario: Scenario) -> str:
    extra = "".join(f" --sabotage {name}" for name in scenario.sabotage)
    return f"readscale bench consistency --seed {scenario.seed} --duration {scenario.duration:g}{extra}"


# -- the servers ---------------------------------------------------------------------------------


def prepare_stack(stack: Stack) -> None:
    """Make sure the stack has what the harness drives: a primary with two replicas, the
    cache's Redis and a second Redis for a separate bus (both without persistence)."""
    if "primary" not in stack.nodes or len(stack.replicas) < 2:
        raise RuntimeError("the consistency harness needs a stack with a primary and two replicas")
    stack.start_redis(name=L2_NODE)
    stack.start_redis(name=BUS_NODE)


def _ensure_backend(stack: Stack, backend: str) -> None:
    """Start the scenario's cache server if the stack lacks it (once per stack)."""
    if backend == "memcached" and "memcached" not in stack.nodes:
        stack.start_memcached()
    elif backend == "cluster" and not any(name.startswith("cluster") for name in stack.nodes):
        stack.start_cluster()


def restore(stack: Stack) -> None:
    """Undo every fault: replicas running, replaying, without delay, caught up; both
    Redis servers running."""
    for name in (L2_NODE, BUS_NODE, "memcached"):
        if name not in stack.nodes:
            continue
        node = stack.node(name)
        node.thaw()
        if not node.is_running():
            _start(stack, name)
    for replica in stack.replicas:
        if not replica.is_running():
            _start(stack, replica.name)
        _retried(functools.partial(_resume, replica))
        _retried(functools.partial(replica.set_apply_delay, 0))
    deadline = time.monotonic() + 60
    for replica in stack.replicas:
        while stack.replay_lag_bytes(replica.name) != 0:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{replica.name} did not catch up within 60 s")
            time.sleep(0.05)


def _resume(replica: Any) -> None:
    if replica.is_replay_paused():
        replica.resume_replay()


def _retried(action: Callable[[], object], *, within: float = 30.0) -> None:
    """A statement on a replica that is still starting up (after a kill) is retried."""
    deadline = time.monotonic() + within
    while True:
        try:
            action()
            return
        except Exception as exc:
            if "starting up" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _start(stack: Stack, name: str, *, within: float = 20.0) -> None:
    """Start a killed node again, as an operator would: retried while the dead one's
    children still hold its lock file or port."""
    deadline = time.monotonic() + within
    while True:
        try:
            stack.start(name)
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def _apply(stack: Stack, fault: Fault, bus: str, backend: str) -> None:
    match fault.action:
        case "delay":
            stack.set_apply_delay(fault.target, fault.value)
        case "pause":
            stack.pause_replay(fault.target)
        case "resume":
            stack.resume_replay(fault.target)
        case "kill":
            stack.kill(fault.target)
        case "start":
            _start(stack, fault.target)
        case "bus_kill":
            if bus == "separate":
                stack.kill(BUS_NODE)
            else:  # the bus shares the cache's Redis: cut every subscription instead
                import redis

                client = redis.Redis.from_url(stack.node(L2_NODE).url)  # type: ignore[attr-defined]
                try:
                    client.client_kill_filter(_type="pubsub")
                finally:
                    client.close()
        case "bus_start":
            if bus == "separate":
                _start(stack, BUS_NODE)
        case "redis_kill":  # the cache's server dies (and comes back empty: no persistence)
            if backend != "cluster":  # a cluster fails over instead: not this fault
                stack.kill(L2_NODE if backend == "redis" else "memcached")
        case "redis_start":
            if backend != "cluster":
                _start(stack, L2_NODE if backend == "redis" else "memcached")
        case _:
            raise ValueError(f"unknown fault {fault.action!r}")


class _Services:
    """The service processes of one run."""

    def __init__(self, configs: Sequence[ServiceConfig], workdir: Path) -> None:
        self.configs = list(configs)
        self.workdir = workdir
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: list[Path] = []

    def start(self) -> None:
        root = Path(__file__).resolve().parents[2]
        for config in self.configs:
            log = self.workdir / f"{config.name}.log"
            self.logs.append(log)
            env = {**os.environ, CONFIG_ENV: config.to_json(), "PYTHONPATH": str(root)}
            with log.open("wb") as out:
                self.procs.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "readscale.bench.consistency_service"],
                        env=env,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )

    async def ready(self, client: Any, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        for proc, config, log in zip(self.procs, self.configs, self.logs, strict=True):
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"service {config.name} exited: {log.read_text()[-3000:]}")
                with contextlib.suppress(Exception):
                    response = await client.get(f"http://127.0.0.1:{config.port}/health", timeout=1.0)
                    if response.status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"service {config.name} not ready in {timeout:g}s: {log.read_text()[-3000:]}")
                await asyncio.sleep(0.1)

    async def stats(self, client: Any) -> list[dict[str, Any]]:
        out = []
        for config in self.configs:
            try:
                response = await client.get(f"http://127.0.0.1:{config.port}/stats", timeout=5.0)
                out.append({"proc": config.name, **response.json()})
            except Exception as exc:  # a stats call is diagnostics, never the verdict
                out.append({"proc": config.name, "error": str(exc)})
        return out

    def stop(self) -> dict[str, str]:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return {log.stem: log.read_text(errors="replace")[-20000:] for log in self.logs if log.exists()}


def _backend(stack: Stack, kind: str, redis_url: str) -> Any:
    """An async cache backend of ``kind`` on the stack (the CDC worker's)."""
    from readscale import RedisSettings
    from readscale.backends import AsyncMemcachedBackend, AsyncRedisBackend, AsyncRedisClusterBackend

    if kind == "memcached":
        return AsyncMemcachedBackend(stack.memcached.address)
    if kind == "cluster":
        return AsyncRedisClusterBackend(RedisSettings(url=stack.cluster_nodes[0].url))
    return AsyncRedisBackend(RedisSettings(url=redis_url))


# -- the CDC worker and its witness --------------------------------------------------------------


def _witness_cache(base: Any, applied: dict[tuple[int, int], float]) -> Any:
    """The CDC worker's cache, noting when each row version's invalidation was applied.

    The worker invalidates a batch's keys, then its tags; a witness tag per row version
    (``cons-witness:{id}:{version}``, rendered by the CDC rule from the new row) arrives
    with the tags, after the keys, so its time is when that version's invalidation had
    completed. Witness tags are noted, never bumped."""

    class WitnessCache(base):  # type: ignore[misc]
        async def invalidate_tags(self, *tags: str) -> dict[str, int]:
            real = [t for t in tags if not t.startswith(WITNESS)]
            result: dict[str, int] = await super().invalidate_tags(*real) if real else {}
            now = time.monotonic()
            for tag in tags:
                if tag.startswith(WITNESS):
                    key, version = tag[len(WITNESS) :].split(":")
                    applied.setdefault((int(key), int(version)), now)
            return result

    return WitnessCache


async def _start_flusher(stack: Stack, redis_url: str, prefix: str, queue: str, table: str) -> tuple[Any, Any]:
    """The write-behind flusher of a run, as ``readscale writebehind run`` would run it:
    it writes each key's newest queued value to ``table``'s ``val`` (volatile mode: the
    harness's Redis has no persistence)."""
    from readscale._async.writebehind.flusher import AsyncFlusher
    from readscale._async.writebehind.postgres import AsyncPostgresWriter
    from readscale._core.writebehind.settings import FlusherSettings

    writer = AsyncPostgresWriter(stack.primary.dsn, table=table, key_column="id", value_column="val", key_from=_wb_id)
    settings = FlusherSettings(queue=queue, prefix=prefix, mode="volatile", block=0.1, batch_wait=0.02)
    flusher = AsyncFlusher(writer, redis_url, settings=settings)
    await flusher.start()
    return flusher, asyncio.ensure_future(flusher.run())


def _wb_id(key: str) -> int:
    return int(key.rsplit(":", 1)[1])  # "wbitem:7" -> 7


# -- a run -----------------------------------------------------------------------------------------


def _rows_sql(table: str, keys: int) -> list[str]:
    return [
        f"CREATE TABLE {table} (id int PRIMARY KEY, version bigint NOT NULL)",
        f"INSERT INTO {table} SELECT g, 0 FROM generate_series(0, {keys - 1}) g",
    ]


def _wb_rows_sql(table: str, keys: int) -> list[str]:
    """The write-behind keys' rows: ``val`` is the value the history sees, ``version`` the
    flusher's (its newest-wins rule)."""
    return [
        f"CREATE TABLE {table} (id int PRIMARY KEY, version bigint NOT NULL DEFAULT 0, val bigint NOT NULL)",
        f"INSERT INTO {table} SELECT g, 0, 0 FROM generate_series(0, {keys - 1}) g",
    ]


def history_key(op: Op) -> str:
    """The checker's name of an operation's key: write-behind keys are rows of their own."""
    return f"wb:{op.key}" if op.api in ("write_behind", WB_API) else str(op.key)


async def run_scenario(
    stack: Stack, scenario: Scenario, *, progress: Progress | None = None, workdir: Path | None = None
) -> RunResult:
    """Run ``scenario`` on ``stack`` (see :func:`prepare_stack`) and check its history.
    The services' and the coordinator's logs are kept in ``workdir``."""
    say = progress or (lambda message: None)
    began = time.monotonic()
    own = workdir is None
    folder = workdir or Path(tempfile.mkdtemp(prefix="readscale-consistency-"))
    with _captured_logs(folder / "coordinator.log"):
        result = await _run(stack, scenario, say, folder, began)
    if own and result.verdict.ok:
        shutil.rmtree(folder, ignore_errors=True)
    else:
        result.workdir = folder
        save_history(result, folder / HISTORY_FILE)
    return result


#: The history of a failing run, kept beside its logs so that it can be checked again
#: (:func:`recheck`) after the checker or its claims change: a finding is never left
#: explained by a replay that may not reproduce its timing.
HISTORY_FILE = "history.json"


def save_history(result: RunResult, path: Path) -> None:
    """Write what every operation saw and wrote (and what the CDC worker applied) to ``path``."""
    data = {
        "seed": result.scenario.seed,
        "scenario": result.scenario.describe(),
        "bound": result.scenario.bound,
        "start": result.start,
        "ops": [dataclasses.asdict(op) for op in result.ops],
        "cdc_applied": [[key, version, at] for (key, version), at in result.cdc_applied.items()],
    }
    path.write_text(json.dumps(data))


def recheck(path: Path) -> Verdict:
    """Check a history saved by :func:`save_history` again, with today's checker."""
    data = json.loads(path.read_text())
    ops = [Op(**{**op, "nodes": tuple(op["nodes"])}) for op in data["ops"]]
    applied = {(int(key), int(version)): float(at) for key, version, at in data["cdc_applied"]}
    return check_history(*history_of(ops, applied, float(data["bound"])))


@contextlib.contextmanager
def _captured_logs(path: Path) -> Iterator[None]:
    """The CDC worker's and the faults' log lines (a bus going down is logged loudly, as
    it should be) go to the run's folder, not into the progress output."""
    logger = logging.getLogger("readscale")
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    propagate = logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate
        handler.close()


async def _run(stack: Stack, scenario: Scenario, say: Progress, workdir: Path, began: float) -> RunResult:
    import httpx

    from readscale import CATALOG
    from readscale._async.cache.bus import AsyncInvalidationBus
    from readscale._async.cache.cache import AsyncCache
    from readscale._async.cdc.worker import AsyncCdcWorker
    from readscale._core.cdc.rules import CdcRule, CdcSettings
    from readscale._shared.primitives.locks import AsyncEvent
    from readscale.stack._proc import pick_ports

    run_id = uuid.uuid4().hex[:8]
    table = f"cons_{run_id}"
    wb_table = f"cons_wb_{run_id}" if scenario.write_behind else None
    wb_queue = f"cons-wb-{run_id}"
    l2 = stack.node(L2_NODE).url  # type: ignore[attr-defined]
    bus_url = l2 if scenario.bus == "shared" else stack.node(BUS_NODE).url  # type: ignore[attr-defined]
    await asyncio.to_thread(_ensure_backend, stack, scenario.backend)
    prefix = f"cons:{run_id}:"
    channel = f"cons-bus-{run_id}"
    applied: dict[tuple[int, int], float] = {}
    cdc_task: asyncio.Task[None] | None = None
    stop_cdc = AsyncEvent()
    worker: Any = None
    ports = await asyncio.to_thread(pick_ports, scenario.processes)
    configs = [
        ServiceConfig(
            name=f"p{i + 1}",
            port=port,
            primary=stack.primary.dsn,
            replicas={r.name: r.dsn for r in stack.replicas},
            table=table,
            prefix=prefix,
            secret=f"consistency harness secret {run_id}",
            redis_url=l2,
            bus_url=bus_url,
            channel=channel,
            backend=scenario.backend,
            memcached=stack.memcached.address if scenario.backend == "memcached" else None,
            cluster_nodes=tuple(f"127.0.0.1:{n.port}" for n in stack.cluster_nodes)
            if scenario.backend == "cluster"
            else (),
            tombstone_ttl=scenario.tombstone_ttl,
            read_block_delay=scenario.read_block_delay,
            load_work=scenario.load_work,
            sabotage=scenario.sabotage,
            seed=scenario.seed * 10 + i,
            wb_table=wb_table,
            wb_queue=wb_queue,
        )
        for i, port in enumerate(ports)
    ]
    services = _Services(configs, workdir)
    say(f"seed {scenario.seed}: starting {scenario.processes} service process(es)")
    services.start()  # they import while the table is made
    ops: list[Op] = []
    flusher: Any = None
    flush_task: Any = None
    faults_done: list[str] = []
    logs: dict[str, str] = {}
    stats: list[dict[str, Any]] = []
    start = 0.0
    try:
        await asyncio.to_thread(restore, stack)
        with psycopg.connect(stack.primary.dsn, autocommit=True) as conn:
            for statement in _rows_sql(table, scenario.keys):
                conn.execute(statement)
            if wb_table is not None:
                for statement in _wb_rows_sql(wb_table, scenario.keys):
                    conn.execute(statement)
        await asyncio.to_thread(restore, stack)
        if wb_table is not None:
            flusher, flush_task = await _start_flusher(stack, l2, prefix, wb_queue, wb_table)

        if scenario.cdc:
            from readscale import RedisSettings

            cache_cls = _witness_cache(AsyncCache, applied)
            cdc_cache = cache_cls(
                _backend(stack, scenario.backend, l2),
                bus=AsyncInvalidationBus(RedisSettings(url=bus_url), channel=channel),
                policy=CATALOG,
                prefix=prefix,
            )
            rule = CdcRule(
                table,
                keys=("item:{id}", "pitem:{id}", "citem:{id}"),
                tags=("t:{id}", WITNESS + "{id}:{version}"),
            )
            worker = AsyncCdcWorker(cdc_cache, [rule], CdcSettings(dsn=stack.primary.dsn, slot=f"cons_{run_id}"))
            await worker.ensure_slot()

            async def cdc_loop() -> None:
                await worker.run(stop_cdc)

            cdc_task = asyncio.ensure_future(cdc_loop())

        async with httpx.AsyncClient() as probe:
            await services.ready(probe)
        start = time.monotonic()
        deadline = start + scenario.duration
        hard_deadline = start + scenario.duration * MIN_READS_GRACE
        sent_reads = 0

        def going() -> bool:
            now = time.monotonic()
            return now < deadline or (sent_reads < scenario.min_reads and now < hard_deadline)

        say(f"seed {scenario.seed}: {scenario.describe()}")

        async def faults() -> None:
            for fault in scenario.faults:
                await asyncio.sleep(max(0.0, start + fault.at - time.monotonic()))
                try:
                    await asyncio.to_thread(_apply, stack, fault, scenario.bus, scenario.backend)
                    faults_done.append(fault.describe())
                except Exception as exc:  # a fault that could not be injected is reported, not fatal
                    faults_done.append(f"{fault.describe()} FAILED: {exc}")

        next_id = iter(range(1, 10**9))

        async def session(index: int) -> None:
            nonlocal sent_reads
            rng = random.Random(f"{scenario.seed}:{index}")
            anonymous = index < scenario.anonymous
            name = f"s{index}"
            favourites = rng.sample(range(scenario.keys), min(2, scenario.keys))
            async with httpx.AsyncClient(timeout=30.0) as client:
                while going():
                    key = rng.choice(favourites) if rng.random() < 0.6 else rng.randrange(scenario.keys)
                    proc = rng.randrange(len(configs))
                    base = f"http://127.0.0.1:{configs[proc].port}"
                    if anonymous:  # no cookie: every request is a new session
                        client.cookies.clear()
                        name = f"a{index}.{len(ops)}"
                    params: dict[str, Any]
                    on_wb = scenario.write_behind > 0 and rng.random() < scenario.write_behind
                    if on_wb and not anonymous and rng.random() < scenario.write_ratio:
                        # Every write of a key goes to one process, which orders them.
                        owner = configs[key % len(configs)]
                        op = Op(next(next_id), name, "write", key, "write_behind", "session", key % len(configs) + 1,
                                time.monotonic())  # fmt: skip
                        url = f"http://127.0.0.1:{owner.port}/wb"
                        params = {"k": key}
                        method = "POST"
                    elif on_wb:
                        op = Op(next(next_id), name, "read", key, WB_API, "session", proc + 1, time.monotonic())
                        url = f"{base}/r"
                        params = {"k": key, "api": WB_API, "mode": "session"}
                        method = "GET"
                    elif not anonymous and rng.random() < scenario.write_ratio:
                        django = rng.random() < scenario.django_writes
                        invalidate = not (scenario.cdc and rng.random() < scenario.cdc_only)
                        orm = django and rng.random() < scenario.orm_writes
                        api = ("django_orm" if orm else "django_sql") if django else "asgi"
                        op = Op(next(next_id), name, "write", key, api, "session", proc + 1, time.monotonic())
                        url = f"{base}/dj/w" if django else f"{base}/w"
                        params = {"k": key, "inv": "app" if invalidate else "cdc", "orm": int(orm)}
                        method = "POST"
                    else:
                        api = rng.choice(scenario.apis)
                        mode = mode_for(rng, api, varied=scenario.modes)
                        op = Op(next(next_id), name, "read", key, api, mode, proc + 1, time.monotonic())
                        django = api in ("django", "dj_cache")
                        url = f"{base}/dj/r" if django else f"{base}/r"
                        params = {"k": key, "api": api, "mode": mode}
                        method = "GET"
                    ops.append(op)
                    op.token_sent = TOKEN_COOKIE in client.cookies
                    op.invoked = time.monotonic()
                    try:
                        response = await client.request(method, url, params=params)
                        op.completed = time.monotonic()
                        body = response.json()
                    except Exception as exc:
                        op.error = f"{type(exc).__name__}: {exc}"
                        if op.kind == "read":
                            op.completed = time.monotonic()
                        continue  # a write without an answer has an unknown outcome
                    if response.status_code == 200 and body.get("v") is not None:
                        op.ok = True
                        op.version = int(body["v"])
                        op.loaded = bool(body.get("loaded"))
                        op.nodes = tuple(body.get("nodes") or ())
                        op.pos = body.get("pos")
                        op.invalidated = bool(body.get("inv"))
                        sent_reads += op.kind == "read"
                    else:
                        op.error = f"HTTP {response.status_code}: {body.get('error', body)}"
                        if op.kind == "write":
                            op.completed = None  # the commit may or may not have happened
                    if scenario.think:
                        await asyncio.sleep(rng.uniform(0, scenario.think))

        fault_task = asyncio.ensure_future(faults())
        try:
            await asyncio.gather(*(session(i) for i in range(scenario.sessions)))
        finally:
            fault_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await fault_task
        say(f"seed {scenario.seed}: {len(ops)} operations; collecting")
        async with httpx.AsyncClient() as probe:
            stats = await services.stats(probe)
    finally:
        logs = await asyncio.to_thread(services.stop)
        if worker is not None and cdc_task is not None:
            await asyncio.sleep(0.5)  # late CDC applications are recorded but bound nothing
            stop_cdc.set()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(cdc_task, 30)
            with contextlib.suppress(Exception):
                await worker.drop_slot()
            await worker.close()
            await worker.cache.aclose()
        if flusher is not None:
            flusher.stop()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(flush_task, 30)
            await flusher.aclose()
            await flusher.writer.aclose()
        await asyncio.to_thread(restore, stack)
        with psycopg.connect(stack.primary.dsn, autocommit=True) as conn:
            conn.execute(f"DROP TABLE IF EXISTS {table}")
            if wb_table is not None:
                conn.execute(f"DROP TABLE IF EXISTS {wb_table}")

    verdict = check(ops, applied, scenario)
    return RunResult(scenario, verdict, ops, start, applied, faults_done, stats, time.monotonic() - began, logs)


def history_of(
    ops: Sequence[Op], applied: dict[tuple[int, int], float], bound: float
) -> tuple[list[WriteOp], list[ReadOp]]:
    """The client's record as the checker's operations, with each read's claims."""
    writes: list[WriteOp] = []
    reads: list[ReadOp] = []
    for op in ops:
        key = history_key(op)
        if op.kind == "write":
            version = op.version if op.ok else None
            invalidated = op.completed if (op.ok and op.invalidated) else None
            if version is not None and (op.key, version) in applied:
                cdc = applied[(op.key, version)]
                invalidated = cdc if invalidated is None else min(invalidated, cdc)
            # A write-behind write only enqueues: the session's token does not move.
            writes.append(WriteOp(op.id, op.session, key, op.invoked, op.completed if op.ok else None,
                                  version, invalidated, moves_position=op.api != "write_behind"))  # fmt: skip
        elif op.ok and op.completed is not None and op.version is not None:
            claims, observes = claims_for(op.api, op.mode, op.loaded, bound)
            # What a request without the session's token saw is not carried to the next one.
            observes = observes and op.token_sent
            reads.append(ReadOp(op.id, op.session, key, op.invoked, op.completed, op.version, claims, observes,
                                op.api))  # fmt: skip
    # A write whose answer was lost but whose version the CDC worker saw: learn it.
    seen = {(w.key, w.version) for w in writes if w.version is not None}
    extra = {(str(k), v): t for (k, v), t in applied.items() if (str(k), v) not in seen}
    if extra:
        # Versions are per key; an unknown write of that key gets the CDC's version
        # only when exactly one unknown write could have made it.
        for i, w in enumerate(writes):
            if w.version is None:
                candidates = [(k, v) for (k, v) in extra if k == w.key]
                if len(candidates) == 1:
                    k, v = candidates[0]
                    writes[i] = replace(w, version=v, invalidated=extra.pop((k, v)))
    return writes, reads


def check(ops: Sequence[Op], applied: dict[tuple[int, int], float], scenario: Scenario) -> Verdict:
    writes, reads = history_of(ops, applied, scenario.bound)
    return check_history(writes, reads)


def run(stack: Stack, scenario: Scenario, *, progress: Progress | None = None) -> RunResult:
    """:func:`run_scenario` from synchronous code."""
    return asyncio.run(run_scenario(stack, scenario, progress=progress))


def totals(results: Sequence[RunResult]) -> dict[str, Any]:
    """Operations checked and violations per property over several runs."""
    per: dict[str, dict[str, int]] = {name: {"checked": 0, "exercised": 0, "violations": 0} for name in PROPERTIES}
    for result in results:
        for name, count in result.verdict.counts.items():
            per[name]["checked"] += count.checked
            per[name]["exercised"] += count.exercised
            per[name]["violations"] += count.violations
    return {
        "runs": len(results),
        "operations": sum(len(r.ops) for r in results),
        "reads": sum(r.reads for r in results),
        "writes": sum(r.writes for r in results),
        "failed": sum(r.failed for r in results),
        "violations": sum(len(r.verdict.violations) for r in results),
        "properties": per,
        "failing_seeds": [r.scenario.seed for r in results if not r.verdict.ok],
    }


__all__ = ["CACHE_APIS", "HISTORY_FILE", "Op", "RunResult", "check", "history_of", "prepare_stack", "recheck",
           "restore", "run", "run_scenario", "save_history", "totals"]  # fmt: skip
