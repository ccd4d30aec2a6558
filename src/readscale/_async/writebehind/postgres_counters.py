"""The PostgreSQL writer's counters: each sums record's increments added exactly once.

Written once, async; ``readscale._sync.writebehind.postgres_counters`` is generated from
this file. Each sums record of the queue is added to the counter table in one statement
that also inserts the record's id into the applied table
(``readscale_writebehind_applied``, created if missing), ``ON CONFLICT DO NOTHING``, and
adds only the sums of the ids it inserted: a redelivered record adds nothing, and two
flushers racing on one record serialise on its id. The counter table's other columns
need defaults (a counter's first increment inserts its row).

Refusals: a key ``key_from`` cannot convert, or a batch the database refuses for its data
(then applied again key by key, one savepoint each), leaves the refused deltas apart with
their errors; they are noted on the applied id, so a redelivery after a crash finds them
again, and the flusher dead-letters them. :class:`AsyncPostgresCounters` is a part of
:class:`~readscale.writebehind.AsyncPostgresWriter`, which owns the connection.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import psycopg
from psycopg import sql

from readscale._async.writebehind.dead_letters import first_line
from readscale._core.writebehind.flush import FailureKind
from readscale._core.writebehind.records import CounterRecord, IncrementsApplied, RefusedIncrement, parse_stream_id
from readscale.errors import ConfigurationError

APPLIED_TABLE = "readscale_writebehind_applied"

_APPLIED_DDL = (
    "CREATE TABLE IF NOT EXISTS {} (queue text NOT NULL, id_ms bigint NOT NULL, id_seq bigint NOT NULL, "
    "applied_at timestamptz NOT NULL DEFAULT now(), rejected jsonb, PRIMARY KEY (queue, id_ms, id_seq))"
)

_COUNTER_TYPES = ("smallint", "integer", "bigint", "numeric", "real", "double precision")

# SQLSTATE class 42 (syntax error or access rule violation: an undefined table or column,
# no unique key for ON CONFLICT, a missing privilege) and 3F (invalid schema): found by
# the start check, they are the configuration's fault.
CONFIG_SQLSTATE_CLASSES = ("42", "3F")


def raise_if_uncommitted(tx: psycopg.AsyncTransaction) -> None:
    """Call after a transaction block that raised nothing: psycopg leaves a block whose
    connection broke inside it (the server went away after answering the last statement,
    as a primary stopping does to sessions idle in a transaction, and the client read
    that with the answer) without COMMIT and without an error. Taken for a commit, the
    flusher would acknowledge records the database never kept; this makes it the
    transient failure it is (the batch is written again). The block's own status, not
    the connection's: a COMMIT answered before the server went away did commit (found
    in review: ``conn.broken`` took that for a failure and wrote the batch again)."""
    if tx.status is not tx.Status.COMMITTED:
        raise psycopg.OperationalError("the connection broke before COMMIT: the transaction was not committed")


class AsyncPostgresCounters:
    """The counter statements of one writer, composed once (:meth:`build`) from the
    counter table's columns, and what runs them on the writer's connection.

    ``key_from`` turns a cache key into the key column's value, ``failure_kind`` is the
    writer's verdict on an error, ``target`` names the writer in a configuration error."""

    def __init__(
        self,
        *,
        counter_table: str,
        counter_column: str,
        key_column: str,
        applied_table: str,
        create_applied_table: bool,
        key_from: Callable[[str], Any] | None,
        failure_kind: Callable[[Exception], FailureKind],
        target: Callable[[], str],
    ) -> None:
        self.counter_table = counter_table
        self.counter_column = counter_column
        self.key_column = key_column
        self.applied_table = applied_table
        self.create_applied_table = create_applied_table
        self._key_from = key_from
        self._failure_kind = failure_kind
        self._target = target
        self._statement: sql.Composed | None = None
        self._one: sql.Composed | None = None
        self._applied: sql.Composed | None = None

    async def check(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Run the statement on nothing (the writer's start check, rolled back)."""
        if self._statement is not None:
            await conn.execute(self._statement, self._params("readscale-check", [], []))

    async def apply(
        self, conn: psycopg.AsyncConnection[Any], queue: str, records: Sequence[CounterRecord]
    ) -> IncrementsApplied:
        """Add each sums record's deltas once, in one transaction; a delta the database
        refuses is returned, the rest applied."""
        assert self._statement is not None
        unconverted: list[tuple[tuple[int, int], RefusedIncrement]] = []
        ids: list[tuple[int, int]] = []
        entries: list[tuple[int, int, Any, int]] = []
        for record in records:
            ms, seq = parse_stream_id(record.entry_id)
            ids.append((ms, seq))
            for key, delta in record.deltas.items():
                try:
                    entries.append((ms, seq, self._key_from(key) if self._key_from is not None else key, delta))
                except Exception as exc:
                    why = f"key_from refused key {key!r}: {exc}"
                    unconverted.append(((ms, seq), RefusedIncrement(key, delta, why, "key_from")))
        try:
            async with conn.transaction() as tx:
                cur = await conn.execute(self._statement, self._params(queue, ids, entries))
                fresh = {(int(ms), int(seq)) for ms, seq in await cur.fetchall()}
                refused = [r for at, r in unconverted if at in fresh]
                await self._note_refused(conn, queue, fresh, refused)
            raise_if_uncommitted(tx)
        except psycopg.Error as exc:
            if self._failure_kind(exc) is not FailureKind.RECORD:
                raise
            fresh, refused = await self._apply_one_by_one(conn, queue, ids, entries, unconverted)
        earlier = await self._refused_before(conn, queue, [i for i in ids if i not in fresh])
        return IncrementsApplied(len(fresh), len(ids) - len(fresh), tuple(refused + earlier))

    async def prune(self, conn: psycopg.AsyncConnection[Any], queue: str, before_ms: int) -> int:
        """Forget the ids of applied sums records of ``queue`` older than ``before_ms``."""
        assert self._applied is not None
        query = sql.SQL("DELETE FROM {} WHERE queue = %s AND id_ms < %s").format(self._applied)
        cur = await conn.execute(query, (queue, before_ms))
        return max(cur.rowcount, 0)

    def _params(
        self, queue: str, ids: Sequence[tuple[int, int]], entries: Sequence[tuple[int, int, Any, int]]
    ) -> tuple[Any, ...]:
        return (
            [i[0] for i in ids],
            [i[1] for i in ids],
            queue,
            [e[0] for e in entries],
            [e[1] for e in entries],
            [e[2] for e in entries],
            [e[3] for e in entries],
        )

    async def _note_refused(
        self,
        conn: psycopg.AsyncConnection[Any],
        queue: str,
        fresh: set[tuple[int, int]],
        refused: list[RefusedIncrement],
    ) -> None:
        """Keep refused deltas with a record applied now, so a redelivery (after a crash
        before they were dead-lettered) finds and dead-letters them too."""
        if not refused or not fresh:
            return
        assert self._applied is not None
        ms, seq = min(fresh)
        text = json.dumps([[r.key, r.delta, r.error, r.error_type] for r in refused])
        query = sql.SQL("UPDATE {} SET rejected = %s::jsonb WHERE queue = %s AND id_ms = %s AND id_seq = %s").format(
            self._applied
        )
        await conn.execute(query, (text, queue, ms, seq))

    async def _refused_before(
        self, conn: psycopg.AsyncConnection[Any], queue: str, ids: list[tuple[int, int]]
    ) -> list[RefusedIncrement]:
        if not ids:
            return []
        assert self._applied is not None
        query = sql.SQL(
            "SELECT a.rejected FROM {} a JOIN unnest(%s::bigint[], %s::bigint[]) AS i(ms, seq) "
            "ON a.id_ms = i.ms AND a.id_seq = i.seq WHERE a.queue = %s AND a.rejected IS NOT NULL"
        ).format(self._applied)
        cur = await conn.execute(query, ([i[0] for i in ids], [i[1] for i in ids], queue))
        out: list[RefusedIncrement] = []
        for (rejected,) in await cur.fetchall():
            out += [RefusedIncrement(str(k), int(d), str(e), str(t)) for k, d, e, t in rejected]
        return out

    async def _apply_one_by_one(
        self,
        conn: psycopg.AsyncConnection[Any],
        queue: str,
        ids: list[tuple[int, int]],
        entries: list[tuple[int, int, Any, int]],
        unconverted: list[tuple[tuple[int, int], RefusedIncrement]],
    ) -> tuple[set[tuple[int, int]], list[RefusedIncrement]]:
        """The batch was refused for its data: the same in one transaction, one key per
        savepoint, keeping the keys the database refuses apart (with their errors)."""
        assert self._applied is not None
        assert self._one is not None
        async with conn.transaction() as tx:
            query = sql.SQL(
                "INSERT INTO {} (queue, id_ms, id_seq) SELECT %s, ms, seq FROM unnest(%s::bigint[], %s::bigint[]) "
                "AS i(ms, seq) ON CONFLICT DO NOTHING RETURNING id_ms, id_seq"
            ).format(self._applied)
            cur = await conn.execute(query, (queue, [i[0] for i in ids], [i[1] for i in ids]))
            fresh = {(int(ms), int(seq)) for ms, seq in await cur.fetchall()}
            refused = [r for at, r in unconverted if at in fresh]
            sums: dict[Any, int] = {}
            for ms, seq, key, delta in entries:
                if (ms, seq) in fresh:
                    sums[key] = sums.get(key, 0) + delta
            for key in sorted(sums, key=str):
                try:
                    async with conn.transaction():  # a savepoint
                        await conn.execute(self._one, (key, sums[key]))
                except psycopg.Error as exc:
                    if self._failure_kind(exc) is not FailureKind.RECORD:
                        raise
                    refused.append(RefusedIncrement(str(key), sums[key], first_line(exc), type(exc).__name__))
            await self._note_refused(conn, queue, fresh, refused)
        raise_if_uncommitted(tx)
        return fresh, refused

    async def build(
        self, conn: psycopg.AsyncConnection[Any], table: sql.SQL, found: dict[str, tuple[str, bool, bool]]
    ) -> None:
        """Check the counter table (``table`` as the server quotes it, ``found`` its
        columns) and the applied table; compose the counter statements."""
        for column in (self.key_column, self.counter_column):
            if column not in found:
                raise ConfigurationError(
                    f"{self._target()}: table {self.counter_table} has no column {column!r} (it has {', '.join(found)})"
                )
        counter_type = found[self.counter_column][0]
        if counter_type.split("(")[0] not in _COUNTER_TYPES:
            raise ConfigurationError(
                f"{self._target()}: column {self.counter_column!r} is {counter_type}, not a number"
            )
        own = (self.key_column, self.counter_column)
        required = [c for c, (_, gen, req) in found.items() if req and not gen and c not in own]
        if required:
            raise ConfigurationError(
                f"{self._target()}: table {self.counter_table} has NOT NULL columns without a default "
                f"({', '.join(required)}); a counter's first increment inserts a row with only its key and count"
            )
        applied = sql.Identifier(*self.applied_table.split(".", 1))
        if self.create_applied_table:
            try:
                await conn.execute(sql.SQL(_APPLIED_DDL).format(applied))
            except psycopg.Error as exc:
                if exc.sqlstate and exc.sqlstate[:2] in CONFIG_SQLSTATE_CLASSES:
                    ddl = _APPLIED_DDL.format(self.applied_table)
                    raise ConfigurationError(
                        f"{self._target()}: cannot create {self.applied_table} ({first_line(exc)}); create it as "
                        f"an owner: {ddl}"
                    ) from exc
                raise
        key_type = sql.SQL(found[self.key_column][0])
        ident = sql.Identifier
        self._applied = sql.Composed([applied])
        self._statement = sql.SQL(
            "WITH ids AS (SELECT * FROM unnest(%s::bigint[], %s::bigint[]) AS i(ms, seq)), "
            "fresh AS (INSERT INTO {applied} (queue, id_ms, id_seq) SELECT %s, ms, seq FROM ids "
            "ON CONFLICT DO NOTHING RETURNING id_ms, id_seq), "
            "sums AS (SELECT d.k, sum(d.d) AS d FROM unnest(%s::bigint[], %s::bigint[], %s::{key_type}[], "
            "%s::bigint[]) AS d(ms, seq, k, d) JOIN fresh ON fresh.id_ms = d.ms AND fresh.id_seq = d.seq "
            "GROUP BY d.k), "
            "added AS (INSERT INTO {table} AS t ({key}, {counter}) SELECT k, d::{counter_type} FROM sums ORDER BY k "
            "ON CONFLICT ({key}) DO UPDATE SET {counter} = coalesce(t.{counter}, 0) + EXCLUDED.{counter}) "
            "SELECT id_ms, id_seq FROM fresh"
        ).format(
            applied=applied,
            table=table,
            key=ident(self.key_column),
            counter=ident(self.counter_column),
            key_type=key_type,
            counter_type=sql.SQL(counter_type),
        )
        self._one = sql.SQL(
            "INSERT INTO {table} AS t ({key}, {counter}) VALUES (%s::{key_type}, %s::{counter_type}) "
            "ON CONFLICT ({key}) DO UPDATE SET {counter} = coalesce(t.{counter}, 0) + EXCLUDED.{counter}"
        ).format(
            table=table,
            key=ident(self.key_column),
            counter=ident(self.counter_column),
            key_type=key_type,
            counter_type=sql.SQL(counter_type),
        )


__all__ = ["APPLIED_TABLE", "CONFIG_SQLSTATE_CLASSES", "AsyncPostgresCounters"]
