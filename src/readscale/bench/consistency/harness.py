"""The consistency harness: run a :class:`Scenario` against real servers, record every
operation, and check the history (``readscale._core.consistency.history``).

One run:

1. a fresh table of rows ``(id, version)``; every write increments a row's version on the
   primary in its own transaction and returns it, so versions per key are exact;
2. two or more service processes (``readscale.bench.consistency.service``), each with its
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

Here, the run itself; its parts: the servers and their faults (``faults``), the processes
beside the sessions (``processes``), what the client recorded and its check (``record``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg

from readscale.bench.consistency.config import ServiceConfig
from readscale.bench.consistency.faults import BUS_NODE, L2_NODE, apply_fault, ensure_backend, restore
from readscale.bench.consistency.processes import WITNESS, Services, cdc_backend, start_flusher, witness_cache
from readscale.bench.consistency.record import HISTORY_FILE, Op, RunResult, check, save_history
from readscale.bench.consistency.scenario import WB_API, Scenario, mode_for
from readscale.replicas import DEFAULT_COOKIE
from readscale.stack import Stack

__all__ = ["run", "run_scenario"]

TOKEN_COOKIE = DEFAULT_COOKIE  # the middlewares' cookie
#: How far past its duration a seed may run to reach ``Scenario.min_reads``.
MIN_READS_GRACE = 6.0
Progress = Callable[[str], None]


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
    await asyncio.to_thread(ensure_backend, stack, scenario.backend)
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
    services = Services(configs, workdir)
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
            flusher, flush_task = await start_flusher(stack, l2, prefix, wb_queue, wb_table)

        if scenario.cdc:
            from readscale import RedisSettings

            cache_cls = witness_cache(AsyncCache, applied)
            cdc_cache = cache_cls(
                cdc_backend(stack, scenario.backend, l2),
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
                    await asyncio.to_thread(apply_fault, stack, fault, scenario.bus, scenario.backend)
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


def run(stack: Stack, scenario: Scenario, *, progress: Progress | None = None) -> RunResult:
    """:func:`run_scenario` from synchronous code."""
    return asyncio.run(run_scenario(stack, scenario, progress=progress))
