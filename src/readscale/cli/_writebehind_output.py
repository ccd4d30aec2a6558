"""How ``readscale writebehind`` shows what it does: the log, the flusher's live table
and status lines, the queue's status (the commands are in ``writebehind.py``)."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

from rich.logging import RichHandler
from rich.markup import escape
from rich.table import Table

from readscale.cli._output import console, err_console


def configure_logging(verbose: bool) -> None:
    """Rich on a terminal; plain one-line records otherwise (a service's log)."""
    handler: logging.Handler
    if err_console.is_terminal:
        handler = RichHandler(console=err_console, show_path=False, markup=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler], force=True)


def stats_table(stats: Any, consumer: str, queue: str, started: float) -> Table:
    table = Table(title=f"flusher {consumer} · queue {queue} · up {time.monotonic() - started:.0f}s", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    rows = [
        ("queue length", stats.queue_length),
        ("flush lag", f"{stats.flush_lag * 1000:.0f} ms"),
        ("records read", stats.records_read),
        ("rows applied / skipped", f"{stats.rows_applied} / {stats.rows_skipped}"),
        ("coalesced", stats.coalesced),
        ("transactions", stats.transactions),
        ("mean batch", f"{stats.batch_sizes.sum / stats.batch_sizes.count:.1f}" if stats.batch_sizes.count else "-"),
        ("reclaimed", stats.reclaimed),
        ("retries", stats.retries),
        ("dead letters", stats.dead_letters),
        ("counter sums applied / duplicates", f"{stats.sums_applied} / {stats.sums_duplicates}"),
        ("redis errors", stats.redis_errors),
        ("durability", "ok" if stats.durability_ok else "REFUSED (see the log)"),
        ("aof_delayed_fsync", "-" if stats.aof_delayed_fsync < 0 else stats.aof_delayed_fsync),
    ]
    for name, value in rows:
        table.add_row(name, str(value))
    return table


def summary(stats: Any) -> str:
    return (
        f"queue {stats.queue_length}, read {stats.records_read}, applied {stats.rows_applied}, "
        f"skipped {stats.rows_skipped}, transactions {stats.transactions}, retries {stats.retries}, "
        f"dead letters {stats.dead_letters}, counter sums {stats.sums_applied}, lag {stats.flush_lag * 1000:.0f} ms, "
        f"aof_delayed_fsync {stats.aof_delayed_fsync}"
    )


def print_status(info: dict[str, Any]) -> None:
    """The queue's status (``_status``'s dict) as lines and tables."""
    queue = info["queue"]
    console.print(
        f"queue [bold]{queue}[/] ({info['stream']}): {info['length']} records, {info['pending']} pending, "
        f"{info['dead_letters']} dead letters, {info['pending_counters']} counters summing",
        soft_wrap=True,
    )
    for mode, verdict in info["modes"].items():
        console.print(f"mode {mode}: {escape(verdict)}", soft_wrap=True, highlight=False)
    if info["consumers"]:
        table = Table(title="flushers")
        for column in ("name", "pending", "idle"):
            table.add_column(column)
        for c in info["consumers"]:
            table.add_row(c["name"], str(c["pending"]), f"{c['idle_s']:.1f}s")
        console.print(table)
    if info["oldest_dead_letters"]:
        table = Table(title="oldest dead letters")
        for column in ("id", "key", "version", "error"):
            table.add_column(column)
        for d in info["oldest_dead_letters"]:
            first_line = (d["error"].splitlines() or [""])[0]
            table.add_row(d["id"], d["key"], str(d["version"]), f"{d['error_type']}: {first_line}")
        console.print(table)


__all__ = ["configure_logging", "print_status", "stats_table", "summary"]
