"""``readscale writebehind``: run the flusher, look at the queue, requeue dead letters.

The commands; how their results are shown is ``_writebehind_output.py``."""

from __future__ import annotations

import asyncio
import importlib
import inspect
import logging
import signal
import time
from typing import Annotated, Any

import typer

from readscale import PostgresSettings, RedisSettings
from readscale.cli._metrics import MetricsPortOption, serve_metrics
from readscale.cli._output import console, err_console, errors_to_exit, fail, print_json, usage_error
from readscale.cli._writebehind_output import configure_logging, print_status, stats_table, summary
from readscale.settings import check_dsn

log = logging.getLogger("readscale.cli.writebehind")

app = typer.Typer(
    help="Write-behind: run the flusher that applies queued writes to the database, inspect the queue.",
    no_args_is_help=True,
)

RedisOption = Annotated[
    str,
    typer.Option(
        "--redis-url",
        envvar="READSCALE_REDIS_URL",
        help="The Redis holding the queue (the cache's Redis); password, ACL user and TLS also from "
        "READSCALE_REDIS_PASSWORD, _USERNAME, _SSL_CA_CERTS...",
    ),
]
QueueOption = Annotated[str, typer.Option(help="The queue's name (WriteBehindSettings.queue).")]
PrefixOption = Annotated[str, typer.Option(help="The cache's key prefix (AsyncCache.prefix).")]
GroupOption = Annotated[str, typer.Option(help="The flushers' consumer group.")]


def _load_writer(spec: str) -> Any:
    """``module:attribute``: a batch writer, or a callable returning one."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        usage_error(f"--writer takes module:attribute, got {spec!r}")
    try:
        target = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        usage_error(f"cannot load the writer {spec!r}: {exc}")
    writer = target
    if inspect.isclass(target) or (callable(target) and not hasattr(target, "write_batch")):
        try:
            writer = target()
        except Exception as exc:
            fail(f"the writer factory {spec!r} failed: {type(exc).__name__}: {exc}")
    if not inspect.iscoroutinefunction(getattr(writer, "write_batch", None)) or not hasattr(writer, "failure_kind"):
        usage_error(f"{spec!r} is not an async batch writer (async write_batch(records) and failure_kind(exc))")
    return writer


async def _run_flusher(flusher: Any, report_every: float, writer: Any, where: str) -> bool:
    """Run until SIGTERM/SIGINT; true when the last batch was finished, false when a
    second signal abandoned it (its records stay pending for the next flusher)."""
    from rich.live import Live

    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(
        # From "running" on, SIGTERM stops it cleanly; a refusal at start comes before it.
        flusher.run(on_started=lambda: log.info("flusher %s running: %s", flusher.consumer, where))
    )
    signals = 0

    def on_signal() -> None:
        nonlocal signals
        signals += 1
        if signals == 1:
            log.info("stopping: finishing the batch in hand (signal again to leave it pending)")
            flusher.stop()
        else:
            task.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    started = time.monotonic()
    settings = flusher.settings
    clean = True
    try:
        if err_console.is_terminal:
            with Live(console=err_console, refresh_per_second=2, transient=False) as live:
                while not task.done():
                    await asyncio.wait([task], timeout=0.5)
                    live.update(stats_table(flusher.stats, flusher.consumer, settings.queue, started))
        else:
            next_report = time.monotonic() + report_every
            while not task.done():
                # --report-every 0 means no status lines, not a busy loop
                await asyncio.wait([task], timeout=min(0.5, report_every) if report_every else 0.5)
                if report_every and time.monotonic() >= next_report:
                    log.info("%s", summary(flusher.stats))
                    next_report = time.monotonic() + report_every
        try:
            await task
        except asyncio.CancelledError:
            clean = False
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await flusher.aclose()
        close = getattr(writer, "aclose", None)
        if close is not None:
            await close()
    return clean


@app.command()
def run(
    redis_url: RedisOption,
    dsn: Annotated[
        str | None,
        typer.Option(
            "--dsn",
            envvar="READSCALE_PG_DSN",
            help="PostgreSQL primary (with --table); credentials and TLS also from READSCALE_PG_USER, _PASSWORD, "
            "_SSLMODE, _SSLROOTCERT...",
        ),
    ] = None,
    table: Annotated[
        str | None, typer.Option(help="Table to upsert value writes into (schema-qualified allowed).")
    ] = None,
    key_column: Annotated[str, typer.Option(help="Its key column (primary key or unique).")] = "key",
    version_column: Annotated[str, typer.Option(help="Its version column (bigint).")] = "version",
    value_column: Annotated[str, typer.Option(help="The column holding the whole value (jsonb, json, bytea...).")] = (
        "value"
    ),
    columns: Annotated[
        str | None,
        typer.Option(help="Instead of one value column: comma-separated columns filled from the value's fields."),
    ] = None,
    counter_column: Annotated[
        str | None,
        typer.Option(help="The column counter increments add to (in --counter-table, default --table)."),
    ] = None,
    counter_table: Annotated[
        str | None, typer.Option(help="The counters' table, keyed by --key-column (default: --table).")
    ] = None,
    writer: Annotated[
        str | None,
        typer.Option(help="module:attribute of your own async batch writer (or a factory), instead of --dsn/--table."),
    ] = None,
    mode: Annotated[
        str,
        typer.Option(
            help="The producers' durability mode, checked against the Redis at start: durable (appendfsync always), "
            "fast (everysec) or volatile (no check). A Redis that cannot keep it: exit 2."
        ),
    ] = "durable",
    assume_config: Annotated[
        list[str] | None,
        typer.Option(
            help="name=value of a Redis setting to take as given where CONFIG GET is disabled (managed Redis), e.g. "
            "appendfsync=always. Repeatable."
        ),
    ] = None,
    queue: QueueOption = "default",
    prefix: PrefixOption = "rs:",
    group: GroupOption = "readscale-flusher",
    consumer: Annotated[
        str | None, typer.Option(help="This flusher's name (default: the host name); keep it across restarts.")
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Most records per batch (and transaction).")] = 500,
    batch_wait_ms: Annotated[float, typer.Option(min=0, help="A batch closes this long after its first record.")] = 50,
    claim_idle: Annotated[
        float, typer.Option(min=0.001, help="Seconds before another flusher's pending records are claimed.")
    ] = 30.0,
    max_attempts: Annotated[int, typer.Option(min=1, help="Failures alone before a record is dead-lettered.")] = 5,
    report_every: Annotated[float, typer.Option(min=0, help="Seconds between status lines (not on a terminal).")] = 5,
    check_every: Annotated[
        float,
        typer.Option(
            min=0.01, help="Seconds between checks of the Redis's persistence settings and aof_delayed_fsync."
        ),
    ] = 10.0,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log every batch decision.")] = False,
    metrics_port: MetricsPortOption = None,
) -> None:
    """Run the flusher until SIGTERM or Ctrl-C (the batch in hand is committed and
    acknowledged first; a second signal leaves it pending for the next flusher)."""
    from readscale._async.writebehind.flusher import AsyncFlusher
    from readscale._core.writebehind.settings import FlusherSettings

    configure_logging(verbose)
    with errors_to_exit():
        assumed: dict[str, str] = {}
        for item in assume_config or []:
            name, sep, value = item.partition("=")
            if not sep or not name.strip() or not value.strip():
                usage_error(f"--assume-config takes name=value, got {item!r}")
            assumed[name.strip()] = value.strip()
        if writer is not None:
            if dsn or table or counter_column:
                usage_error("give either --writer or --dsn with --table/--counter-column")
            batch_writer = _load_writer(writer)
            target = writer
        else:
            if not dsn or not (table or counter_column):
                usage_error("the flusher needs --dsn and --table or --counter-column (or --writer module:attribute)")
            from readscale._async.writebehind.postgres import AsyncPostgresWriter

            check_dsn(dsn, name="--dsn")
            column_list = [c.strip() for c in columns.split(",") if c.strip()] if columns else None
            batch_writer = AsyncPostgresWriter(
                dsn,
                table=table,
                key_column=key_column,
                version_column=version_column,
                value_column=None if column_list else value_column,
                columns=column_list,
                postgres=PostgresSettings.from_env(),
                counter_column=counter_column,
                counter_table=counter_table,
            )
            parts = [f"table {table}"] if table else []
            if counter_column:
                parts.append(f"counters {counter_table or table}.{counter_column}")
            target = ", ".join(parts)
        settings = FlusherSettings(
            queue=queue,
            prefix=prefix,
            group=group,
            consumer=consumer,
            batch_size=batch_size,
            batch_wait=batch_wait_ms / 1000,
            claim_idle=claim_idle,
            max_attempts=max_attempts,
            mode=mode,
            assume_config=assumed,
            recheck_every=check_every,
        )
        redis = RedisSettings.from_env(url=redis_url)
        flusher = AsyncFlusher(batch_writer, redis, settings=settings)
        from readscale.metrics import WriteBehindCollector

        serve_metrics(metrics_port, WriteBehindCollector(flusher.stats))
        where = f"queue {queue!r} on {redis.safe_url} (mode {settings.durability.value}) -> {target}"
        clean = asyncio.run(_run_flusher(flusher, report_every, batch_writer, where))
        log.info("flusher %s stopped: %s", flusher.consumer, summary(flusher.stats))
        if not clean:
            log.warning("the batch in hand was left pending; the next flusher writes it")
            raise typer.Exit(130)


async def _status(redis_url: str, prefix: str, queue: str, group: str, count: int) -> dict[str, Any]:
    from readscale._async.writebehind.queue import AsyncWriteQueue

    wq = AsyncWriteQueue.from_url(
        RedisSettings.from_env(url=redis_url, socket_timeout_ms=5000.0), prefix=prefix, queue=queue
    )
    from readscale._core.writebehind.modes import WriteBehindMode, check_mode

    try:
        consumers = await wq.consumers(group)
        dead = await wq.dead_letters(count)
        facts = await wq.server_facts()
        modes = {}
        for mode in WriteBehindMode:
            refusal = check_mode(mode, facts)
            modes[mode.value] = "kept" if refusal is None else refusal.line(wq.where)
        return {
            "queue": queue,
            "stream": wq.keys.stream,
            "length": await wq.length(),
            "pending": await wq.pending(group),
            "pending_counters": await wq.pending_sums(),
            "modes": modes,
            "aof_delayed_fsync": facts.delayed_fsyncs,
            "consumers": [{"name": c.name, "pending": c.pending, "idle_s": c.idle} for c in consumers],
            "dead_letters": await wq.dead_letter_count(),
            "oldest_dead_letters": [
                {
                    "id": d.id,
                    "key": d.key,
                    "version": d.version,
                    "error_type": d.error_type,
                    "error": d.error,
                    "attempts": d.attempts,
                }
                for d in dead
            ],
        }
    finally:
        await wq.aclose()


@app.command()
def status(
    redis_url: RedisOption,
    queue: QueueOption = "default",
    prefix: PrefixOption = "rs:",
    group: GroupOption = "readscale-flusher",
    dead: Annotated[int, typer.Option(min=0, help="How many dead letters to show.")] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
) -> None:
    """Show the queue: its length, what is pending in which flusher, the dead letters."""
    with errors_to_exit():
        info = asyncio.run(_status(redis_url, prefix, queue, group, dead))
    if as_json:
        print_json(info)
        return
    print_status(info)


async def _requeue(redis_url: str, prefix: str, queue: str, ids: list[str]) -> int:
    from readscale._async.writebehind.queue import AsyncWriteQueue

    wq = AsyncWriteQueue.from_url(
        RedisSettings.from_env(url=redis_url, socket_timeout_ms=5000.0), prefix=prefix, queue=queue
    )
    try:
        if not ids:
            moved = 0
            while batch := await wq.dead_letters(500):
                moved += await wq.requeue_dead_letters([d.id for d in batch])
            return moved
        return await wq.requeue_dead_letters(ids)
    finally:
        await wq.aclose()


@app.command()
def requeue(
    redis_url: RedisOption,
    ids: Annotated[list[str] | None, typer.Argument(help="Dead-letter ids (as `status` shows them).")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Requeue every dead letter.")] = False,
    queue: QueueOption = "default",
    prefix: PrefixOption = "rs:",
) -> None:
    """Put dead letters back on the queue (once their cause is fixed), same versions."""
    if not ids and not all_:
        usage_error("name the dead letters to requeue, or pass --all")
    with errors_to_exit():
        moved = asyncio.run(_requeue(redis_url, prefix, queue, [] if all_ else list(ids or [])))
    console.print(f"requeued {moved} dead letter(s)")
