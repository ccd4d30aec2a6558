"""``readscale stack``: start, inspect, break and stop the local stack of real servers."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from readscale.cli._output import (
    console,
    errors_to_exit,
    print_json,
    progress_line,
    terminate_as_interrupt,
)
from readscale.stack import REPLICATION_MODES, Stack, StackConfig

app = typer.Typer(
    help="The local stack: real PostgreSQL, Redis, Redis Cluster, Memcached and Varnish.",
    no_args_is_help=True,
)

DirOption = Annotated[
    Path | None,
    typer.Option("--dir", help="Stack folder (default: $READSCALE_STACK_DIR or ./.readscale/stack)."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
NodeArg = Annotated[
    str,
    typer.Argument(help="Node name, as `readscale stack status` shows it (r1, redis, cluster3...)."),
]


def _endpoint_rows(endpoints: dict[str, Any]) -> list[tuple[str, str, str]]:
    rows: list[tuple[str, str, str]] = []
    pg = endpoints.get("postgres")
    if pg:
        rows.append(("primary", "PostgreSQL primary", pg["primary"]["dsn"]))
        rows += [(r["name"], f"PostgreSQL replica ({pg['mode']})", r["dsn"]) for r in pg["replicas"]]
        if pg["primary"].get("app_dsn"):
            rows.append(("app role", "PostgreSQL application role (password not shown)", pg["primary"]["app_dsn"]))
    if "redis" in endpoints:
        rows.append(("redis", "Redis", endpoints["redis"]["url"]))
    if "redis_cluster" in endpoints:
        rows.append(("cluster", "Redis Cluster (3+3)", " ".join(endpoints["redis_cluster"]["nodes"])))
    if "sentinel" in endpoints:
        rows.append(("sentinel", "Redis Sentinel (1 master + 2 replicas)", endpoints["sentinel"]["url"]))
    if "memcached" in endpoints:
        rows.append(("memcached", "Memcached", endpoints["memcached"]["address"]))
    for v in endpoints.get("varnish_nodes") or ([endpoints["varnish"]] if "varnish" in endpoints else []):
        rows.append((v["name"], f"Varnish -> {v['backend']}", v["url"]))
    if "prometheus" in endpoints:
        p = endpoints["prometheus"]
        rows.append(("prometheus", f"Prometheus scraping {len(p['targets'])} target(s)", p["url"]))
    return rows


@app.command()
def up(
    replicas: Annotated[int, typer.Option(min=0, max=8, help="PostgreSQL streaming replicas.")] = 2,
    mode: Annotated[
        str, typer.Option(help="Replication: async, sync (r1 is synchronous) or semi-sync (ANY 1).")
    ] = "async",
    cluster: Annotated[
        bool, typer.Option("--cluster", help="Also a Redis Cluster of 3 primaries + 3 replicas.")
    ] = False,
    sentinel: Annotated[
        bool,
        typer.Option("--sentinel", help="Also a Redis Sentinel group: a master, two replicas, three sentinels."),
    ] = False,
    memcached: Annotated[bool, typer.Option("--memcached", help="Also Memcached.")] = False,
    varnish: Annotated[bool, typer.Option("--varnish", help="Also Varnish with readscale's VCL.")] = False,
    varnish_backend: Annotated[str, typer.Option(help="The URL Varnish proxies to.")] = "http://127.0.0.1:8000",
    varnish_probe: Annotated[
        str | None, typer.Option(help="Health-probe path on the backend (enables stale-if-error).")
    ] = None,
    varnish_nodes: Annotated[
        int, typer.Option(min=1, max=8, help="With --varnish: how many Varnish nodes (an edge tier to purge).")
    ] = 1,
    varnish_max_life: Annotated[
        int | None,
        typer.Option(min=1, help="With --varnish: serve nothing longer than this many seconds after storing it."),
    ] = None,
    prometheus: Annotated[
        bool, typer.Option("--prometheus", help="Also Prometheus (Debian's package), scraping the targets below.")
    ] = False,
    prometheus_target: Annotated[
        list[str] | None, typer.Option(help="A /metrics URL for Prometheus to scrape (repeatable).")
    ] = None,
    no_postgres: Annotated[bool, typer.Option("--no-postgres", help="Skip PostgreSQL.")] = False,
    no_redis: Annotated[bool, typer.Option("--no-redis", help="Skip the standalone Redis.")] = False,
    redis_aof: Annotated[
        bool,
        typer.Option(
            "--redis-aof",
            help="Run the standalone Redis with AOF, appendfsync always: what write-behind's default mode "
            "(durable) needs.",
        ),
    ] = False,
    redis_appendfsync: Annotated[
        str,
        typer.Option(help="With --redis-aof: always (write-behind mode durable) or everysec (mode fast)."),
    ] = "always",
    redis_password: Annotated[
        str | None,
        typer.Option(
            envvar="READSCALE_STACK_REDIS_PASSWORD",
            help="Require this password on the standalone Redis (better from the environment than the command line).",
        ),
    ] = None,
    redis_tls: Annotated[bool, typer.Option("--redis-tls", help="The standalone Redis speaks TLS only.")] = False,
    pg_tls: Annotated[
        bool, typer.Option("--pg-tls", help="PostgreSQL with SSL on (a certificate signed by the stack's own CA).")
    ] = False,
    pg_user: Annotated[
        str | None, typer.Option(help="Also create this login role (SCRAM password; TLS only with --pg-tls).")
    ] = None,
    pg_password: Annotated[
        str | None, typer.Option(envvar="READSCALE_STACK_PG_PASSWORD", help="The --pg-user role's password.")
    ] = None,
    directory: DirOption = None,
    as_json: JsonOption = False,
) -> None:
    """Start the servers and print every endpoint."""
    if mode not in REPLICATION_MODES:
        raise typer.BadParameter(f"choose one of {', '.join(REPLICATION_MODES)}", param_hint="--mode")
    with errors_to_exit(), terminate_as_interrupt():
        config = StackConfig(
            postgres=not no_postgres,
            replicas=replicas,
            mode=mode,
            postgres_tls=pg_tls,
            postgres_user=pg_user,
            postgres_password=pg_password,
            redis=not no_redis,
            redis_aof=redis_aof,
            redis_appendfsync=redis_appendfsync,
            redis_password=redis_password,
            redis_tls=redis_tls,
            cluster=cluster,
            sentinel=sentinel,
            memcached=memcached,
            varnish=varnish,
            varnish_backend=varnish_backend,
            varnish_probe=varnish_probe,
            varnish_nodes=varnish_nodes,
            varnish_max_life=varnish_max_life,
            prometheus=prometheus,
            prometheus_targets=tuple(prometheus_target or ()),
        )
        began = time.perf_counter()
        with progress_line(not as_json, "starting the stack") as progress:
            stack = Stack(directory, progress=progress).up(config)
        endpoints = stack.endpoints()
        if as_json:
            print_json(endpoints)
            return
        table = Table(title=f"readscale stack up in {time.perf_counter() - began:.1f}s ({stack.root})")
        table.add_column("node")
        table.add_column("what")
        table.add_column("endpoint", overflow="fold")
        for row in _endpoint_rows(endpoints):
            table.add_row(*row)
        console.print(table)
        console.print("Stop it with [bold]readscale stack down[/]; see it with [bold]readscale stack status[/].")


@app.command()
def status(directory: DirOption = None, as_json: JsonOption = False) -> None:
    """Show every server of the stack and whether it answers."""
    with errors_to_exit():
        stack = Stack.load(directory)
        rows = stack.status()
        if as_json:
            print_json({"root": str(stack.root), "nodes": rows, "endpoints": stack.endpoints()})
            return
        table = Table(title=f"readscale stack ({stack.root})")
        for column in ("node", "kind", "port", "pid", "state"):
            table.add_column(column)
        table.add_column("endpoint", overflow="fold")
        for row in rows:
            state = (
                "[green]ready[/]" if row["ready"] else ("[yellow]running[/]" if row["running"] else "[red]stopped[/]")
            )
            endpoint = row.get("dsn") or row.get("url") or row.get("address") or ""
            table.add_row(row["name"], row["kind"], str(row["port"]), str(row["pid"] or "-"), state, endpoint)
        console.print(table)


@app.command()
def down(directory: DirOption = None) -> None:
    """Stop every server and remove the stack's folder."""
    with errors_to_exit(), terminate_as_interrupt():
        stack = Stack.load(directory)
        count = len(stack.nodes)
        began = time.perf_counter()
        stack.down()
        console.print(f"stopped {count} servers and removed {stack.root} in {time.perf_counter() - began:.1f}s")


@app.command()
def smoke(directory: DirOption = None, as_json: JsonOption = False) -> None:
    """Write a row on the primary and read it back from every replica (and Redis, if up)."""
    from readscale.stack.smoke import run_smoke

    with errors_to_exit():
        result = run_smoke(Stack.load(directory))
        if as_json:
            print_json(result)
            return
        table = Table(title="smoke: a write on the primary, read back everywhere")
        for column in ("step", "node", "result", "ms"):
            table.add_column(column)
        for step in result["steps"]:
            table.add_row(step["step"], step["node"], str(step["result"]), f"{step['ms']:.1f}")
        console.print(table)


def _fault(action: str, name: str, directory: Path | None, *args: float) -> None:
    with errors_to_exit():
        stack = Stack.load(directory)
        getattr(stack, action)(name, *args)
        console.print(f"{action.replace('_', ' ')}: {name} done")


@app.command()
def pause(name: NodeArg, directory: DirOption = None) -> None:
    """Pause a replica's WAL replay: its lag grows until `resume`."""
    _fault("pause_replay", name, directory)


@app.command()
def resume(name: NodeArg, directory: DirOption = None) -> None:
    """Resume a replica's WAL replay."""
    _fault("resume_replay", name, directory)


@app.command()
def delay(
    name: NodeArg,
    seconds: Annotated[float, typer.Argument(min=0, help="Apply delay in seconds (0 removes it).")],
    directory: DirOption = None,
) -> None:
    """Hold back a replica's replay by a fixed delay (recovery_min_apply_delay)."""
    _fault("set_apply_delay", name, directory, seconds)


@app.command()
def stop(name: NodeArg, directory: DirOption = None) -> None:
    """Stop a server cleanly."""
    _fault("stop", name, directory)


@app.command()
def kill(name: NodeArg, directory: DirOption = None) -> None:
    """SIGKILL a server and its children (a crash)."""
    _fault("kill", name, directory)


@app.command("kill-master")
def kill_master(directory: DirOption = None) -> None:
    """SIGKILL the Sentinel group's current master: the sentinels promote a replica."""
    with errors_to_exit():
        name = Stack.load(directory).kill_sentinel_master()
        console.print(f"kill: {name} (the master) done")


@app.command()
def start(name: NodeArg, directory: DirOption = None) -> None:
    """Start a stopped or killed server again, on the same port and data."""
    _fault("start", name, directory)
