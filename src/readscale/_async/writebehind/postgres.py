"""A ready-made batch writer for PostgreSQL (psycopg 3): one upsert statement per batch.

Each batch is one transaction holding one statement::

    INSERT INTO items AS t (key, version, value)
    SELECT u.k, u.v, u.doc FROM unnest($1::text[], $2::bigint[], $3::jsonb[]) AS u(k, v, doc)
    ON CONFLICT (key) DO UPDATE SET version = EXCLUDED.version, value = EXCLUDED.value
    WHERE t.version < EXCLUDED.version

so a batch costs one round trip and one commit whatever its size, and the ``WHERE``
makes it idempotent by version: a row moves only forward. The flusher's coalescing
guarantees one record per key per batch, which ``ON CONFLICT DO UPDATE`` requires.

Two table shapes:

- ``value_column="value"`` (default): the whole value in one column, jsonb or json
  (JSON text), bytea (the codec's bytes), or any other type (a JSON scalar, cast).
- ``value_column=None``: the value is a JSON object whose fields fill the columns of the
  same names (``jsonb_populate_record``, so PostgreSQL converts each to its column's
  type); ``columns`` picks them (default: every column but the key, the version and
  generated ones).

Counters (``counter_column``): each sums record of the queue is added to the counter
table exactly once, by a part of the writer, :mod:`.postgres_counters` (the statement,
the applied table, the refused deltas).

Errors: SQLSTATE classes 22 (data exception) and 23 (integrity constraint), and
``RAISE``/``ASSERT`` in a trigger (P0001, P0004), are the data's fault; everything else
(connection lost, server restarting, deadlock) is transient: the flusher retries it and
dead-letters nothing. :meth:`AsyncPostgresWriter.check` (the flusher's start check)
turns a missing table or column, a missing unique key, or a missing privilege into a
:class:`ConfigurationError` naming it, so a flusher that cannot work stops at once.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import msgspec
import psycopg
from psycopg import sql

from readscale._async.writebehind.dead_letters import first_line
from readscale._async.writebehind.postgres_counters import (
    APPLIED_TABLE,
    CONFIG_SQLSTATE_CLASSES,
    AsyncPostgresCounters,
    raise_if_uncommitted,
)
from readscale._core.postgres.dsn import DsnOptions
from readscale._core.writebehind.flush import FailureKind
from readscale._core.writebehind.records import CounterRecord, IncrementsApplied, RecordRejected, WriteRecord
from readscale.errors import ConfigurationError
from readscale.settings import connection_string

RECORD_SQLSTATE_CLASSES = ("22", "23")
RECORD_SQLSTATES = ("P0001", "P0004")

_COLUMNS = """
SELECT a.attname, format_type(a.atttypid, a.atttypmod), (a.attgenerated <> '' OR a.attidentity <> ''),
       a.attnotnull AND NOT a.atthasdef
FROM pg_attribute a
WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
"""


class AsyncPostgresWriter:
    """Upserts batches of write-behind records into one PostgreSQL table.

    Arguments:
        dsn: the primary's connection string (or pass ``connect``).
        table: the table, optionally schema-qualified. Its key column needs a primary
            key or unique constraint; its version column a ``bigint``.
        key_column, version_column: their names.
        value_column: the column holding the whole value, or None to spread a JSON
            object's fields over ``columns`` (see the module docstring).
        columns: the columns filled from the value's fields when ``value_column`` is None.
        key_from: turns a cache key into the key column's value (``"user:42"`` -> ``42``);
            default: the key as text (PostgreSQL casts it to the column's type).
        connect: an async function returning a new autocommit connection, instead of ``dsn``.
        postgres: credentials and TLS applied to ``dsn``
            (:class:`readscale.settings.PostgresSettings`).
        counter_column: the column counter increments add to (None: this writer takes
            no increments); in ``counter_table`` (default: ``table``), keyed by
            ``key_column``. Its other columns need defaults.
        applied_table: where the ids of applied sums records are kept (exactly once);
            created if missing when ``create_applied_table``.

    ``table`` may be None for a writer of counters only.
    """

    def __init__(
        self,
        dsn: str | None = None,
        *,
        table: str | None,
        key_column: str = "key",
        version_column: str = "version",
        value_column: str | None = "value",
        columns: Sequence[str] | None = None,
        key_from: Callable[[str], Any] | None = None,
        connect: Callable[[], Awaitable[psycopg.AsyncConnection[Any]]] | None = None,
        application_name: str = "readscale-writebehind",
        postgres: DsnOptions | None = None,
        counter_column: str | None = None,
        counter_table: str | None = None,
        applied_table: str = APPLIED_TABLE,
        create_applied_table: bool = True,
    ) -> None:
        if dsn is None and connect is None:
            raise ConfigurationError("AsyncPostgresWriter needs a dsn or a connect function")
        if table is None and counter_column is None:
            raise ConfigurationError(
                "AsyncPostgresWriter needs table= (value writes), counter_column= (counters), or both"
            )
        if counter_column is not None and (counter_table or table) is None:
            raise ConfigurationError("counter_column needs counter_table= (or table=) to name its table")
        # Checked (and credentials/TLS applied) now: a bad DSN fails here, masked.
        self._conninfo = None if dsn is None else connection_string(dsn, postgres, name="AsyncPostgresWriter dsn")
        if value_column is not None and columns:
            raise ConfigurationError("give value_column (one column holds the value) or columns, not both")
        self.dsn = dsn
        self.table = table
        self.key_column = key_column
        self.version_column = version_column
        self.value_column = value_column
        self.columns = tuple(columns) if columns else None
        self._key_from = key_from
        self._connect = connect
        self._application_name = application_name
        self.counter_column = counter_column
        self.counter_table = counter_table or table
        self.applied_table = applied_table
        self.create_applied_table = create_applied_table
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._statement: sql.Composed | None = None
        self._counters: AsyncPostgresCounters | None = None
        if counter_column is not None and self.counter_table is not None:
            self._counters = AsyncPostgresCounters(counter_table=self.counter_table, counter_column=counter_column,
                                                   key_column=key_column, applied_table=applied_table,
                                                   create_applied_table=create_applied_table, key_from=key_from,
                                                   failure_kind=self.failure_kind, target=self._target)  # fmt: skip
        self._built = False
        self._doc_kind = "json"  # "json": JSON text; "bytes": the codec's bytes
        self._json = msgspec.json.Encoder()

    # -- the batch writer protocol ------------------------------------------------------------

    async def check(self) -> None:
        """The flusher's start check: the tables and columns exist, the key column has a
        unique key, this role may insert and update, and (for counters) the applied
        table is there. Raises :class:`ConfigurationError` (one line naming what is
        wrong); a database that cannot be reached raises psycopg's error (transient)."""
        conn = await self._connection()
        try:
            async with conn.transaction(force_rollback=True):
                if self._statement is not None:
                    await conn.execute(self._statement, ([], [], []))
                if self._counters is not None:
                    await self._counters.check(conn)
        except psycopg.Error as exc:
            if exc.sqlstate and exc.sqlstate[:2] in CONFIG_SQLSTATE_CLASSES:
                raise ConfigurationError(f"{self._target()}: {first_line(exc)}") from exc
            raise

    async def write_batch(self, records: Sequence[WriteRecord]) -> int:
        """Upsert ``records`` in one transaction; returns how many rows changed."""
        if self.table is None:
            raise ConfigurationError(
                "this AsyncPostgresWriter has no table= for value writes, and the queue holds some"
            )
        conn = await self._connection()
        assert self._statement is not None
        params = self._params(records)
        try:
            async with conn.transaction() as tx:
                cur = await conn.execute(self._statement, params)
                applied = cur.rowcount
            raise_if_uncommitted(tx)
        except (psycopg.OperationalError, psycopg.InterfaceError):
            await self._drop_connection()
            raise
        return max(applied, 0)

    async def apply_increments(self, queue: str, records: Sequence[CounterRecord]) -> IncrementsApplied:
        """Add each sums record's deltas once (see the module docstring), in one
        transaction; a delta the database refuses is returned, the rest applied."""
        if self.counter_column is None:
            raise ConfigurationError(
                "the queue holds counter increments, and this AsyncPostgresWriter has no counter_column= "
                "(--counter-column) to add them to; they stay queued"
            )
        conn = await self._connection()
        assert self._counters is not None
        try:
            return await self._counters.apply(conn, queue, records)
        except (psycopg.OperationalError, psycopg.InterfaceError):
            await self._drop_connection()
            raise

    async def prune_applied(self, queue: str, before_ms: int) -> int:
        """Forget the ids of applied sums records of ``queue`` older than ``before_ms``."""
        conn = await self._connection()
        assert self._counters is not None
        return await self._counters.prune(conn, queue, before_ms)

    def failure_kind(self, exc: Exception) -> FailureKind:
        if isinstance(exc, RecordRejected):
            return FailureKind.RECORD
        if isinstance(exc, psycopg.Error) and exc.sqlstate is not None:
            state = exc.sqlstate
            if state[:2] in RECORD_SQLSTATE_CLASSES or state in RECORD_SQLSTATES:
                return FailureKind.RECORD
        return FailureKind.TRANSIENT

    async def aclose(self) -> None:
        await self._drop_connection()

    def _target(self) -> str:
        parts = []
        if self.table is not None:
            parts.append(f"table {self.table}")
        if self.counter_column is not None:
            parts.append(f"counter {self.counter_table}.{self.counter_column}")
        return "write-behind writer (" + ", ".join(parts) + ")"

    # -- internals -----------------------------------------------------------------------------

    def _params(self, records: Sequence[WriteRecord]) -> tuple[list[Any], list[int], list[Any]]:
        keys: list[Any] = []
        docs: list[Any] = []
        # In key order, so concurrent flushers lock rows in one order and do not deadlock.
        records = sorted(records, key=lambda r: r.key)
        for record in records:
            try:
                keys.append(self._key_from(record.key) if self._key_from is not None else record.key)
            except Exception as exc:
                raise RecordRejected(f"key_from refused key {record.key!r}: {exc}") from exc
            if self._doc_kind == "bytes":
                docs.append(record.payload)
            elif record.codec == "json":
                docs.append(record.payload.decode())
            else:
                try:
                    docs.append(self._json.encode(record.value).decode())
                except (TypeError, msgspec.EncodeError, ValueError, OverflowError) as exc:
                    raise RecordRejected(f"value of {record.key!r} has no JSON form: {exc}") from exc
        return keys, [r.version for r in records], docs

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        if self._conn is not None and not self._conn.closed and not self._conn.broken:
            return self._conn
        await self._drop_connection()
        if self._connect is not None:
            conn = await self._connect()
        else:
            assert self._conninfo is not None
            conn = await psycopg.AsyncConnection.connect(
                self._conninfo, autocommit=True, application_name=self._application_name
            )
        if not conn.autocommit:
            await conn.set_autocommit(True)
        try:
            if not self._built:
                if self.table is not None:
                    self._statement = await self._build(conn)
                if self._counters is not None:
                    table, found = await self._table(conn, self._counters.counter_table)
                    await self._counters.build(conn, table, found)
                self._built = True
        except BaseException:
            await conn.close()
            raise
        self._conn = conn
        return conn

    async def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.closed:
            with contextlib.suppress(psycopg.Error):
                await conn.close()

    async def _table(
        self, conn: psycopg.AsyncConnection[Any], name: str
    ) -> tuple[sql.SQL, dict[str, tuple[str, bool, bool]]]:
        """The table's name as the server quotes it, and its columns: name -> (type,
        generated, NOT NULL without a default). A missing table is a ConfigurationError."""
        try:
            cur = await conn.execute("SELECT %s::regclass::text", (name,))
        except psycopg.Error as exc:
            if exc.sqlstate and exc.sqlstate[:2] in CONFIG_SQLSTATE_CLASSES:
                raise ConfigurationError(f"{self._target()}: table {name!r}: {first_line(exc)}") from exc
            raise
        row = await cur.fetchone()
        assert row is not None
        cur = await conn.execute(_COLUMNS, (name,))
        found = {c: (str(t), bool(g), bool(required)) for c, t, g, required in await cur.fetchall()}
        return sql.SQL(row[0]), found  # the server's own quoting of the name

    async def _build(self, conn: psycopg.AsyncConnection[Any]) -> sql.Composed:
        """Read the table's columns and types once and compose the upsert."""
        assert self.table is not None
        table, columns = await self._table(conn, self.table)
        found = {name: (type_, generated) for name, (type_, generated, _) in columns.items()}

        def type_of(column: str) -> str:
            if column not in found:
                raise ConfigurationError(
                    f"{self._target()}: table {self.table} has no column {column!r} (it has {', '.join(found)})"
                )
            return str(found[column][0])

        key_type = type_of(self.key_column)
        type_of(self.version_column)
        ident = sql.Identifier
        exprs: list[sql.Composable]
        source: sql.Composable
        if self.value_column is not None:
            value_type = type_of(self.value_column)
            targets = [self.value_column]
            if value_type == "bytea":
                self._doc_kind, doc_type, exprs = "bytes", "bytea", [sql.SQL("u.doc")]
            elif value_type in ("jsonb", "json"):
                doc_type, exprs = "jsonb", [sql.SQL("u.doc::{}").format(sql.SQL(value_type))]
            else:
                doc_type, exprs = "jsonb", [sql.SQL("(u.doc #>> '{{}}')::{}").format(sql.SQL(value_type))]
            source = sql.SQL("")
        else:
            skip = {self.key_column, self.version_column}
            targets = list(self.columns or [c for c, (_, gen) in found.items() if c not in skip and not gen])
            for column in targets:
                type_of(column)
            if not targets:
                raise ConfigurationError(f"table {self.table} has no column to fill besides the key and the version")
            doc_type = "jsonb"
            exprs = [sql.SQL("r.{}").format(ident(c)) for c in targets]
            source = sql.SQL(" CROSS JOIN LATERAL jsonb_populate_record(NULL::{}, u.doc) AS r").format(table)
        return sql.SQL(
            "INSERT INTO {table} AS t ({key}, {version}, {targets}) "
            "SELECT u.k, u.v, {exprs} FROM unnest(%s::{key_type}[], %s::bigint[], %s::{doc_type}[]) AS u(k, v, doc)"
            "{source} ON CONFLICT ({key}) DO UPDATE SET {version} = EXCLUDED.{version}, {updates} "
            "WHERE t.{version} < EXCLUDED.{version}"
        ).format(
            table=table,
            key=ident(self.key_column),
            version=ident(self.version_column),
            targets=sql.SQL(", ").join(ident(c) for c in targets),
            exprs=sql.SQL(", ").join(exprs),
            key_type=sql.SQL(key_type),
            doc_type=sql.SQL(doc_type),
            source=source,
            updates=sql.SQL(", ").join(sql.SQL("{c} = EXCLUDED.{c}").format(c=ident(c)) for c in targets),
        )


__all__ = ["APPLIED_TABLE", "AsyncPostgresWriter"]
