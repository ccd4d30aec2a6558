"""One database node of a replica router: its connection pool and its probe connection.

Readers and writers borrow connections from the node's pool (autocommit, so readscale
decides where transactions begin and end). The lag observer and reads waiting for a
replica to catch up use one separate probe connection per node, reconnected on demand,
so a full pool never blinds the observer. Replica connections start with
``default_transaction_isolation = read committed``: a one-round-trip read sends the
guard and the query in one pipeline, which is safe only when every statement takes a
new snapshot (shared/notes/verified-postgres.md section 4).
"""

from __future__ import annotations

import logging
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import AsyncConnectionPool

from readscale._core.postgres.dsn import scrub, secrets_of
from readscale._core.postgres.lsn import parse_lsn
from readscale._core.replicas.health import PrimarySample, ReplicaSample
from readscale._core.replicas.settings import PRIMARY, ReplicaSettings
from readscale._shared.primitives.locks import AsyncLock
from readscale._shared.replicas.topology import Topology
from readscale.settings import connection_string

__all__ = ["GUARD_SQL", "AsyncNode", "mark_failed", "node_failed", "position_sql"]

log = logging.getLogger("readscale")

GUARD_SQL = "SELECT pg_last_wal_replay_lsn()::text"
_PRIMARY_PROBE = """
SELECT pg_is_in_recovery(),
       (SELECT system_identifier FROM pg_control_system()),
       CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_lsn()::text END,
       CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_walfile_name(pg_current_wal_lsn()) END
"""
_REPLICA_PROBE = """
SELECT pg_is_in_recovery(),
       (SELECT system_identifier FROM pg_control_system()),
       pg_last_wal_receive_lsn()::text,
       pg_last_wal_replay_lsn()::text,
       (SELECT status FROM pg_stat_wal_receiver),
       (SELECT timeline_id FROM pg_control_checkpoint()),
       extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8
"""
_WAL_LAYOUT = "SELECT current_setting('wal_block_size')::int, pg_size_bytes(current_setting('wal_segment_size'))"
_READ_COMMITTED = "-c default_transaction_isolation=read\\ committed"
# SQLSTATEs after which the node, not the query, is at fault (connection exceptions and
# shutdowns).
_NODE_FAILURE_STATES = ("08", "57P01", "57P02", "57P03")


def position_sql(source: str) -> str:
    """The primary's WAL position (``write`` or ``insert`` pointer) and its WAL file name."""
    fn = "pg_current_wal_insert_lsn()" if source == "insert" else "pg_current_wal_lsn()"
    return f"SELECT {fn}::text, pg_walfile_name({fn})"


def node_failed(conn: psycopg.AsyncConnection[Any], exc: BaseException) -> bool:
    """Whether ``exc`` on ``conn`` is the node's fault (the connection broke, the server
    went away or shut down) rather than the query's."""
    if conn.broken:
        return True
    state = getattr(exc, "sqlstate", None) or ""
    return isinstance(exc, psycopg.OperationalError) and state.startswith(_NODE_FAILURE_STATES)


def mark_failed(topology: Topology, name: str) -> None:
    """Count a failed read on ``name``; enough of them take it out of rotation."""
    if topology.record_failure(name) == "out":
        log.warning(
            "readscale: %s taken out of rotation after failed reads",
            name,
            extra={"event": "replica_ejected_after_failures", "node": name},
        )


def unsigned(system_identifier: int) -> int:
    """pg_control_system() shows the unsigned 64-bit identifier as a signed bigint."""
    return system_identifier % (1 << 64)


def _lsn(text: str | None) -> int | None:
    return None if text is None else parse_lsn(text)


def node_conninfo(dsn: str, settings: ReplicaSettings, *, replica: bool, name: str = PRIMARY) -> str:
    """The node's connection string: ``dsn`` checked, the router's options added, and
    ``settings.postgres`` (credentials, TLS) applied last so that it wins."""
    where = f"ReplicaSettings.replicas[{name!r}]" if replica else "ReplicaSettings.primary"
    dsn = connection_string(dsn, None, name=where)
    extra: dict[str, Any] = {
        "connect_timeout": max(1, round(settings.connect_timeout)),
        "fallback_application_name": "readscale",
    }
    if replica:
        options = str(conninfo_to_dict(dsn).get("options") or "")
        extra["options"] = f"{options} {_READ_COMMITTED}".strip()
    return connection_string(make_conninfo(dsn, **extra), settings.postgres, name=where)


class AsyncNode:
    """A primary or a replica: a pool for reads and writes, a probe for the observer."""

    def __init__(self, name: str, dsn: str, settings: ReplicaSettings, *, replica: bool) -> None:
        self.name = name
        self.replica = replica
        self.conninfo = node_conninfo(dsn, settings, replica=replica, name=name)
        self._settings = settings
        self.pool = AsyncConnectionPool(
            self.conninfo,
            min_size=settings.min_pool_size,
            max_size=settings.max_pool_size,
            kwargs={"autocommit": True},
            timeout=settings.acquire_timeout,
            name=f"readscale-{name}",
            open=False,
        )
        self._probe: psycopg.AsyncConnection[Any] | None = None
        self._probe_lock = AsyncLock()
        self._connect_error: str | None = None  # the last connection failure logged
        self.wal_layout: tuple[int, int] | None = None  # (block size, segment size), primary only
        self._span_attributes: dict[str, str | int] | None = None

    def span_attributes(self) -> dict[str, str | int]:
        """What a span of an attempt on this node says of it (semantic conventions for
        database client spans; no credentials). Built on the first traced attempt."""
        if self._span_attributes is None:
            params = conninfo_to_dict(self.conninfo)
            attributes: dict[str, str | int] = {"db.system.name": "postgresql", "readscale.replicas.node": self.name}
            host, port, dbname = params.get("host"), params.get("port"), params.get("dbname")
            if host:
                attributes["server.address"] = str(host)
            if port and str(port).isdigit():
                attributes["server.port"] = int(str(port))
            if dbname:
                attributes["db.namespace"] = str(dbname)
            self._span_attributes = attributes
        return self._span_attributes

    async def open(self) -> None:
        await self.pool.open(wait=False)

    async def close(self) -> None:
        await self.pool.close()
        probe, self._probe = self._probe, None
        if probe is not None:
            await probe.close()

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        """A new probe connection. A failure is logged once until it changes or the node
        answers again: a wrong password or a refused TLS handshake must be visible, not
        only a node that seems down. The message names no secret (libpq's never quote
        the password; scrubbed anyway)."""
        try:
            conn = await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True)
        except psycopg.OperationalError as exc:
            message = scrub(" ".join(str(exc).split()), secrets_of(self.conninfo))
            if message != self._connect_error:
                self._connect_error = message
                log.warning(
                    "readscale: cannot connect to %s: %s",
                    self.name,
                    message,
                    extra={"event": "replica_connect_failed", "node": self.name, "reason": message},
                )
            raise
        if self._connect_error is not None:
            log.warning(
                "readscale: %s accepts connections again",
                self.name,
                extra={"event": "replica_reconnected", "node": self.name},
            )
            self._connect_error = None
        return conn

    async def _probe_conn(self) -> psycopg.AsyncConnection[Any]:
        async with self._probe_lock:
            if self._probe is None or self._probe.closed or self._probe.broken:
                self._probe = await self._connect()
                if not self.replica and self.wal_layout is None:
                    row = await (await self._probe.execute(_WAL_LAYOUT)).fetchone()
                    assert row is not None
                    self.wal_layout = (int(row[0]), int(row[1]))
            return self._probe

    async def _drop_probe(self) -> None:
        async with self._probe_lock:
            probe, self._probe = self._probe, None
        if probe is not None:
            await probe.close()

    async def _probe_row(self, sql: str) -> tuple[Any, ...] | None:
        """One row from the probe connection; None if the node did not answer.

        Any database error counts as a failed check (and is logged when it is not a
        connection failure): the observer must keep running whatever one node does.
        """
        try:
            conn = await self._probe_conn()
            row = await (await conn.execute(sql)).fetchone()
        except psycopg.Error as exc:
            if not isinstance(exc, psycopg.OperationalError):
                log.warning(
                    "readscale: probing %s failed: %s",
                    self.name,
                    exc,
                    extra={"event": "replica_probe_failed", "node": self.name, "reason": str(exc)},
                )
            await self._drop_probe()
            return None
        return row

    async def probe_primary(self) -> PrimarySample | None:
        row = await self._probe_row(_PRIMARY_PROBE)
        if row is None:
            return None
        in_recovery, system, current, walfile = row
        timeline = None if walfile is None else int(walfile[:8], 16)
        return PrimarySample(bool(in_recovery), unsigned(int(system)), _lsn(current), timeline)

    async def probe_replica(self) -> ReplicaSample | None:
        row = await self._probe_row(_REPLICA_PROBE)
        if row is None:
            return None
        in_recovery, system, receive, replay, status, timeline, age = row
        return ReplicaSample(
            in_recovery=bool(in_recovery),
            system_identifier=unsigned(int(system)),
            receive_lsn=_lsn(receive),
            replay_lsn=_lsn(replay),
            receiver_status=status,
            timeline=None if timeline is None else int(timeline),
            replay_timestamp_age=None if age is None else float(age),
        )

    async def probe_position(self) -> int | None:
        """The replica's replay position through the probe (waits for catch-up use this)."""
        row = await self._probe_row(GUARD_SQL)
        return None if row is None else _lsn(row[0])
