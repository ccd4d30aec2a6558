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

Errors: SQLSTATE classes 22 (data exception) and 23 (integrity constraint), and
``RAISE``/``ASSERT`` in a trigger (P0001, P0004), are the data's fault; everything else
(connection lost, server restarting, deadlock, a missing table) is transient: the
flusher retries it and dead-letters nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import msgspec
import psycopg
from psycopg import sql

from readscale._core.dsn import DsnOptions
from readscale._core.writebehind import FailureKind
from readscale.errors import ConfigurationError
from readscale.settings import connection_string
from readscale.writebehind_common import RecordRejected, WriteRecord

RECORD_SQLSTATE_CLASSES = ("22", "23")
RECORD_SQLSTATES = ("P0001", "P0004")

_COLUMNS = """
SELECT a.attname, format_type(a.atttypid, a.atttypmod), (a.attgenerated <> '' OR a.attidentity <> '')
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
    """

    def __init__(
        self,
        dsn: str | None = None,
        *,
        table: str,
        key_column: str = "key",
        version_column: str = "version",
        value_column: str | None = "value",
        columns: Sequence[str] | None = None,
        key_from: Callable[[str], Any] | None = None,
        connect: Callable[[], Awaitable[psycopg.AsyncConnection[Any]]] | None = None,
        application_name: str = "readscale-writebehind",
        postgres: DsnOptions | None = None,
    ) -> None:
        if dsn is None and connect is None:
            raise ConfigurationError("AsyncPostgresWriter needs a dsn or a connect function")
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
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._statement: sql.Composed | None = None
        self._doc_kind = "json"  # "json": JSON text; "bytes": the codec's bytes
        self._json = msgspec.json.Encoder()

    # -- the batch writer protocol ------------------------------------------------------------

    async def write_batch(self, records: Sequence[WriteRecord]) -> int:
        """Upsert ``records`` in one transaction; returns how many rows changed."""
        conn = await self._connection()
        assert self._statement is not None
        params = self._params(records)
        try:
            async with conn.transaction():
                cur = await conn.execute(self._statement, params)
                applied = cur.rowcount
        except (psycopg.OperationalError, psycopg.InterfaceError):
            await self._drop_connection()
            raise
        return max(applied, 0)

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
            if self._statement is None:
                self._statement = await self._build(conn)
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

    async def _build(self, conn: psycopg.AsyncConnection[Any]) -> sql.Composed:
        """Read the table's columns and types once and compose the upsert."""
        cur = await conn.execute("SELECT %s::regclass::text", (self.table,))
        row = await cur.fetchone()
        assert row is not None
        table = sql.SQL(row[0])  # the server's own quoting of the name
        cur = await conn.execute(_COLUMNS, (self.table,))
        found = {name: (type_, bool(generated)) for name, type_, generated in await cur.fetchall()}

        def type_of(column: str) -> str:
            if column not in found:
                raise ConfigurationError(f"table {self.table} has no column {column!r} (it has {', '.join(found)})")
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


__all__ = ["AsyncPostgresWriter"]
