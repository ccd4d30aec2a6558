"""The bench's flusher process and its database: the queue, the table and the batching
every contender of ``readscale bench writes`` shares."""

from __future__ import annotations

import multiprocessing
import signal
from typing import Any

TABLE_WB = "bench_writebehind"
DATABASE = "readscale_bench"
QUEUE = "bench"
PREFIX = "bench:"
BATCH_SIZE = 500
BATCH_WAIT = 0.05


def _flusher_main(url: str, dsn: str, ready: Any, mode: str = "durable") -> None:
    """The flusher process: runs until SIGTERM, then exits (its backend's stats with it)."""
    from readscale._core.writebehind.settings import FlusherSettings
    from readscale._sync.writebehind.flusher import Flusher
    from readscale._sync.writebehind.postgres import PostgresWriter

    writer = PostgresWriter(dsn, table=TABLE_WB)
    settings = FlusherSettings(queue=QUEUE, prefix=PREFIX, consumer="bench", batch_size=BATCH_SIZE,
                               batch_wait=BATCH_WAIT, block=0.2, mode=mode)  # fmt: skip
    flusher = Flusher(writer, url, settings=settings)
    signal.signal(signal.SIGTERM, lambda signum, frame: flusher.stop())
    ready.set()
    try:
        flusher.run()
    finally:
        flusher.close()
        writer.close()


class FlusherProcess:
    def __init__(self, url: str, dsn: str, mode: str = "durable") -> None:
        ctx = multiprocessing.get_context("spawn")
        ready = ctx.Event()
        self.proc = ctx.Process(target=_flusher_main, args=(url, dsn, ready, mode), daemon=True)
        self.proc.start()
        if not ready.wait(60):
            raise RuntimeError("the bench's flusher process did not start")

    def stop(self) -> None:
        if self.proc.is_alive():
            self.proc.terminate()  # SIGTERM: a clean stop
            self.proc.join(30)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(5)


def create_database(admin_dsn: str) -> str:
    """A database of the bench's own (its transaction count is the bench's alone); its DSN."""
    import psycopg
    from psycopg.conninfo import make_conninfo

    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute("CREATE DATABASE readscale_bench")
    dsn = make_conninfo(admin_dsn, dbname=DATABASE)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE bench_writebehind (key text PRIMARY KEY, version bigint NOT NULL, value jsonb NOT NULL)"
        )
        conn.execute("CREATE TABLE bench_direct (key text PRIMARY KEY, value jsonb NOT NULL)")
    return dsn


__all__ = ["BATCH_SIZE", "BATCH_WAIT", "DATABASE", "PREFIX", "QUEUE", "TABLE_WB", "FlusherProcess", "create_database"]
