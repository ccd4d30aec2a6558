"""``readscale cdc run``: the change-data-capture worker as a process."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.live import Live
from rich.table import Table

from readscale.cli._metrics import MetricsPortOption, serve_metrics
from readscale.cli._output import console, errors_to_exit, terminate_as_interrupt

app = typer.Typer(help="Change-data-capture: invalidate the cache from PostgreSQL's WAL.", no_args_is_help=True)


def _table(stats: object, started: float) -> Table:
    table = Table(title=f"readscale cdc ({time.monotonic() - started:.0f}s)")
    for column in ("transactions", "changes", "keys", "tags", "lag (bytes)", "slot resets", "errors"):
        table.add_column(column, justify="right")
    table.add_row(
        *(
            str(getattr(stats, name))
            for name in (
                "transactions", "changes", "keys_invalidated", "tags_invalidated", "lag_bytes", "slot_resets", "errors"
            )
        )
    )  # fmt: skip
    return table


@app.command()
def run(
    dsn: Annotated[
        str,
        typer.Option(
            envvar="READSCALE_PG_DSN",
            help="PostgreSQL primary DSN (logical slots live on the primary). Credentials and TLS may also come "
            "from READSCALE_PG_USER, _PASSWORD, _SSLMODE, _SSLROOTCERT, _SSLCERT, _SSLKEY.",
        ),
    ],
    rules: Annotated[Path, typer.Option(exists=True, dir_okay=False, help="TOML file of \\[\\[rule]] tables.")],
    redis_url: Annotated[
        str,
        typer.Option(
            envvar="READSCALE_REDIS_URL",
            help="The cache's Redis (password, ACL user and TLS also from READSCALE_REDIS_PASSWORD, _USERNAME, "
            "_SSL_CA_CERTS...).",
        ),
    ] = "redis://127.0.0.1:6379/0",
    slot: Annotated[str, typer.Option(help="Replication slot name (created if missing).")] = "readscale_cdc",
    prefix: Annotated[str, typer.Option(help="The cache's key prefix.")] = "rs:",
    tombstones: Annotated[
        bool,
        typer.Option(help="Tombstones carry the commit's LSN (off: the position is unknown, fills read the primary)."),
    ] = True,
    tombstone_ttl: Annotated[
        float | None,
        typer.Option(
            envvar="READSCALE_TOMBSTONE_TTL",
            help="Seconds a tombstone refuses older fills: the application's caches must use the same value "
            "(the cache server keeps the first one and refuses another). Default 35.",
        ),
    ] = None,
    epoch_tag: Annotated[str | None, typer.Option(help="Tag bumped if the slot is lost.")] = None,
    bus: Annotated[bool, typer.Option(help="Announce invalidations on the bus (other processes' L1).")] = True,
    purge_varnish: Annotated[
        str | None,
        typer.Option(
            help="Also purge the same keys and tags at this Varnish (readscale's VCL); several nodes: "
            "comma-separated URLs, each purged on its own (docs/edge.md)."
        ),
    ] = None,
    soft_purge: Annotated[
        bool, typer.Option(help="Soft-purge at the edge (the old page is served once more while it refetches).")
    ] = False,
    once: Annotated[bool, typer.Option("--once", help="Apply what is pending and exit.")] = False,
    metrics_port: MetricsPortOption = None,
) -> None:
    """Apply invalidations from the WAL until stopped (Ctrl-C or SIGTERM)."""
    from readscale import PostgresSettings, RedisSettings
    from readscale._shared.primitives.locks import Event
    from readscale._sync.backends.redis import RedisBackend
    from readscale._sync.cache.bus import InvalidationBus
    from readscale._sync.cache.cache import Cache
    from readscale.cdc import CdcSettings, CdcWorker, load_rules
    from readscale.errors import CacheUnavailableError
    from readscale.settings import check_dsn

    with errors_to_exit(), terminate_as_interrupt():
        check_dsn(dsn, name="--dsn")
        postgres = PostgresSettings.from_env()
        rule_list = load_rules(rules)
        settings = RedisSettings.from_env(url=redis_url)
        cache = Cache(
            RedisBackend(settings),
            bus=InvalidationBus(settings) if bus else None,
            prefix=prefix,
            tombstone_ttl=tombstone_ttl,
        )
        purger = None
        if purge_varnish:
            from readscale._sync.purge.varnish import VarnishPurger

            purger = VarnishPurger([u.strip() for u in purge_varnish.split(",") if u.strip()])
        worker = CdcWorker(
            cache,
            rule_list,
            CdcSettings(
                dsn=dsn, slot=slot, tombstones=tombstones, epoch_tag=epoch_tag, soft_purge=soft_purge, postgres=postgres
            ),
            purger=purger,
        )
        from readscale.metrics import BusCollector, CacheCollector, CdcCollector, PurgeCollector

        buses = [cache.bus] if cache.bus is not None else []
        purgers = [purger] if purger is not None else []
        serve_metrics(metrics_port, CdcCollector(worker), CacheCollector(cache.stats), BusCollector(*buses),
                      PurgeCollector(*purgers))  # fmt: skip
        started = time.monotonic()
        try:
            worker.check_database()  # a missing table, column or permission: one line and exit 2
            try:
                cache.check()  # another tombstone_ttl than the application's: one line and exit 2
            except CacheUnavailableError as exc:  # checked on the cache's first call instead
                console.print(f"[yellow]the cache is not reachable yet ({exc}); retrying[/]")
            if once:
                while worker.run_once():
                    pass
                console.print(_table(worker.stats, started))
                return
            stop = Event()
            with Live(_table(worker.stats, started), console=console, refresh_per_second=2) as live:
                try:
                    worker.run(stop, tick=lambda: live.update(_table(worker.stats, started)))
                except KeyboardInterrupt:
                    console.print("stopping: the last batch is either confirmed or will be delivered again")
        finally:
            worker.close()
            cache.close()
