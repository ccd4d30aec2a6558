"""The primary's side of the replica router: writes, and the WAL positions that become tokens.

Facts this relies on (shared/notes/verified-postgres.md section 3, measured on
PostgreSQL 15): after an explicit ``COMMIT``, ``SELECT pg_current_wal_lsn()`` sent in
the same simple query (one round trip) is at or past the commit record, so a replica
that replayed it shows the write. Reading the position inside the transaction, or
after a write that ran in an implicit transaction of the same query, is not: the
commit record does not exist yet. Under ``synchronous_commit = off`` only the insert
pointer is past the commit, and it must be pulled back from a page header
(``normalize_insert_lsn``). A token names its history: the primary's system identifier
and the timeline of the WAL it wrote (``pg_walfile_name``).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus

from readscale._async.replicas.nodes import AsyncNode, position_sql, unsigned
from readscale._core.postgres.lsn import normalize_insert_lsn, parse_lsn
from readscale._core.replicas.causal import CausalToken
from readscale._core.replicas.settings import PRIMARY, ReplicaSettings
from readscale._shared.replicas.causal_context import CausalContext
from readscale._shared.replicas.topology import Topology
from readscale.errors import PrimaryUnavailableError, ReadscaleError, ReplicaUnavailableError

__all__ = ["AsyncPrimary"]

Row = tuple[Any, ...]
_DEFAULT_WAL_LAYOUT = (8192, 16 * 1024 * 1024)


class AsyncPrimary:
    """Writes on the primary and the positions they leave, stamped as causal tokens."""

    def __init__(
        self, node: AsyncNode, topology: Topology, settings: ReplicaSettings, wall_clock: Callable[[], float]
    ) -> None:
        self.node = node
        self._topology = topology
        self._settings = settings
        self._wall_clock = wall_clock
        self._position_sql = position_sql(settings.token_source)

    def retry_hint(self) -> float:
        return self._settings.poll_interval * self._settings.health.readmit_after

    def _failed(self, conn: psycopg.AsyncConnection[Any]) -> None:
        if conn.broken:
            self._topology.record_failure(PRIMARY)

    async def connection(self, purpose: str) -> psycopg.AsyncConnection[Any]:
        """A pooled connection to the primary (give it back with :meth:`release`)."""
        if not self._topology.primary_up:
            raise PrimaryUnavailableError(
                f"the primary is down ({self._topology.primary_reason()}): cannot {purpose}",
                retry_after=self.retry_hint(),
            )
        try:
            return await self.node.pool.getconn()
        except psycopg.OperationalError as exc:
            raise PrimaryUnavailableError(
                f"no connection to the primary within {self._settings.acquire_timeout} s: cannot {purpose}",
                retry_after=self.retry_hint(),
            ) from exc

    async def release(self, conn: psycopg.AsyncConnection[Any]) -> None:
        await self.node.pool.putconn(conn)

    @asynccontextmanager
    async def transaction(self, context: CausalContext) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """BEGIN; the block; COMMIT with the position in the same round trip."""
        conn = await self._begin()
        try:
            try:
                yield conn
            except BaseException:
                await self._rollback(conn)
                raise
            await self._commit(conn, context)
            self._topology.count("writes")
        finally:
            await self.release(conn)

    async def _begin(self) -> psycopg.AsyncConnection[Any]:
        """A primary connection inside BEGIN. A pooled connection found dead at BEGIN (the
        primary restarted since it was made) is replaced once: nothing of the caller's ran."""
        for attempt in (1, 2):
            conn = await self.connection("write")
            try:
                await conn.execute("BEGIN")
            except psycopg.OperationalError as exc:
                await self.release(conn)
                if conn.broken and attempt == 1:
                    continue
                self._failed(conn)
                raise PrimaryUnavailableError(
                    f"the primary failed at BEGIN: {exc}", retry_after=self.retry_hint()
                ) from exc
            return conn
        raise AssertionError("unreachable")  # pragma: no cover

    async def _rollback(self, conn: psycopg.AsyncConnection[Any]) -> None:
        if conn.broken or conn.info.transaction_status == TransactionStatus.IDLE:
            return
        # The pool rolls back too, and discards a connection that fails here.
        with contextlib.suppress(psycopg.Error):
            await conn.execute("ROLLBACK")

    async def _commit(self, conn: psycopg.AsyncConnection[Any], context: CausalContext) -> None:
        status = conn.info.transaction_status
        if status == TransactionStatus.INERROR:
            await self._rollback(conn)
            raise ReadscaleError(
                "a statement failed inside router.write() and its error was caught: "
                "PostgreSQL aborted the transaction, so it was rolled back, not committed"
            )
        try:
            if status == TransactionStatus.INTRANS:
                cur = await conn.execute(f"COMMIT; {self._position_sql}")
                cur.nextset()
            else:  # the block committed on its own: a position read now is still after it
                cur = await conn.execute(self._position_sql)
            row = await cur.fetchone()
        except psycopg.OperationalError as exc:
            if not conn.broken:
                raise
            self._failed(conn)
            raise PrimaryUnavailableError(
                f"the connection to the primary broke during COMMIT: the transaction may or may not have committed "
                f"({exc})",
                retry_after=self.retry_hint(),
            ) from exc
        context.record_write(await self._token(conn, row), self._wall_clock())

    async def observe(self, conn: psycopg.AsyncConnection[Any], context: CausalContext, *, write: bool) -> CausalToken:
        """Read the primary's position now on ``conn`` and merge it into ``context``."""
        row = await (await conn.execute(self._position_sql)).fetchone()
        return await self.stamp(conn, row, context, write=write)

    async def stamp(
        self, conn: psycopg.AsyncConnection[Any], row: Row | None, context: CausalContext, *, write: bool
    ) -> CausalToken:
        """Merge a position row (``position_sql``'s) into ``context``."""
        token = await self._token(conn, row)
        if write:
            context.record_write(token, self._wall_clock())
        else:
            context.observe(token)
        return token

    async def observe_commit(self, context: CausalContext) -> CausalToken:
        """After a commit made on another connection: the primary's position, as a write."""
        conn = await self.connection("learn the primary's position")
        try:
            return await self.observe(conn, context, write=True)
        except psycopg.OperationalError as exc:
            self._failed(conn)
            raise PrimaryUnavailableError(
                f"could not read the primary's position: {exc}", retry_after=self.retry_hint()
            ) from exc
        finally:
            await self.release(conn)

    async def latest(self) -> CausalToken:
        """The primary's current position, the target of a ``latest`` read."""
        try:
            conn = await self.connection("serve a latest read")
        except PrimaryUnavailableError as exc:
            raise ReplicaUnavailableError(
                f"a latest read needs the primary's current position: {exc}",
                backend=PRIMARY,
                retry_after=exc.retry_after,
            ) from exc
        try:
            row = await (await conn.execute(self._position_sql)).fetchone()
            return await self._token(conn, row)
        except psycopg.OperationalError as exc:
            self._failed(conn)
            raise ReplicaUnavailableError(
                f"a latest read needs the primary's current position: {exc}",
                backend=PRIMARY,
                retry_after=self.retry_hint(),
            ) from exc
        finally:
            await self.release(conn)

    async def _token(self, conn: psycopg.AsyncConnection[Any], row: Row | None) -> CausalToken:
        if row is None or row[0] is None:
            raise ReadscaleError("the primary returned no WAL position: is it in recovery?")
        lsn = parse_lsn(row[0])
        if self._settings.token_source == "insert":  # noqa: S105 - a WAL function, not a secret
            block, segment = self.node.wal_layout or _DEFAULT_WAL_LAYOUT
            lsn = normalize_insert_lsn(lsn, block_size=block, segment_size=segment)
        identity = self._topology.identity
        if identity is None:
            sysrow = await (await conn.execute("SELECT system_identifier FROM pg_control_system()")).fetchone()
            assert sysrow is not None
            system = unsigned(int(sysrow[0]))
        else:
            system = identity.system_identifier
        return self._topology.learn_identity(system, row[1]).at(lsn)
