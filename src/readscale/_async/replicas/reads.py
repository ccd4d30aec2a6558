"""The routed read: ask ``readscale._core.replicas.routing.plan_read`` for the node of
each attempt, check out a connection to it, run the guard, accept the node or try again,
and count what served the read.

The guard (``pg_last_wal_replay_lsn()``) runs on the read's own connection before its
statements, so a replica it accepts has replayed the plan's target (read-your-writes);
what a read merges into the causal context is a position read on its node *after* its
statements (monotonic reads): ``fetch`` sends ``guard; query; guard`` in one round trip,
``read()`` reads the position when its block ends (:meth:`AsyncReads.merge_seen`). A
failed or stale attempt on the read's unsettled node settles it before the read moves
on (``readscale._async.replicas.plans``).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any, assert_never

import psycopg
from psycopg import sql
from psycopg.pq import TransactionStatus

from readscale._async.replicas.nodes import GUARD_SQL, AsyncNode, mark_failed, node_failed, position_sql
from readscale._async.replicas.observer import AsyncLagObserver
from readscale._async.replicas.plans import AsyncReadPlanner, ReadPlan
from readscale._async.replicas.primary import AsyncPrimary
from readscale._core.postgres.lsn import parse_lsn
from readscale._core.replicas.routing import FallBack, Refuse, TryReplica, UsePrimary, Wait, plan_read
from readscale._core.replicas.settings import PRIMARY, ReplicaSettings
from readscale._shared.cache.fill_scope import current_fill, report_primary_read, report_read_lsn
from readscale._shared.primitives.locks import async_sleep
from readscale._shared.replicas.causal_context import CausalContext, Settler
from readscale._shared.replicas.topology import Topology
from readscale._shared.tracing import CLIENT, TRACING, maybe_span, note, span
from readscale.errors import ReadscaleError, ReplicaUnavailableError

__all__ = ["AsyncReads", "Row"]

Row = tuple[Any, ...]
# The hot-standby conflict a replica raises while replaying (retryable).
_RECOVERY_CONFLICT = "40001"


def _read_attributes(plan: ReadPlan) -> dict[str, str]:
    """What a routed read's span says of it (only built while tracing)."""
    return {"db.system.name": "postgresql", "readscale.replicas.mode": type(plan.mode).__name__}


def _statements(*parts: Any) -> Any:
    """Statements as one query text (``str`` or ``psycopg.sql`` objects)."""
    if all(isinstance(p, str) for p in parts):
        return "; ".join(parts)
    return sql.SQL("; ").join(sql.SQL(p) if isinstance(p, str) else p for p in parts)


async def _last_row(cur: psycopg.AsyncClientCursor[Any]) -> Row | None:
    """The first row of the last result of a multi-statement query (the position)."""
    while cur.nextset():
        pass
    return await cur.fetchone()


class AsyncReads:
    """One router's routed reads over its primary and replicas (``owner``: the router,
    the key of its unsettled reads in a causal context). Owns the choice's random
    source; the nodes, the topology, the writer, the observer and the planner are the
    router's, shared with it."""

    def __init__(
        self,
        owner: Settler,
        settings: ReplicaSettings,
        primary: AsyncNode,
        replicas: dict[str, AsyncNode],
        topology: Topology,
        writer: AsyncPrimary,
        observer: AsyncLagObserver,
        planner: AsyncReadPlanner,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_read: Callable[[str], None] | None = None,
    ) -> None:
        self._owner = owner
        self._settings = settings
        self._primary = primary
        self._replicas = replicas
        self._topology = topology
        self._writer = writer
        self._observer = observer
        self._planner = planner
        self._clock = clock
        self._on_read = on_read
        self._position_sql = position_sql(settings.token_source)
        self._rng = random.Random(settings.seed)

    def _node(self, name: str) -> AsyncNode:
        return self._primary if name == PRIMARY else self._replicas[name]

    # -- one attempt: the node, a connection, the guard's verdict ---------------------------

    async def _choose(self, plan: ReadPlan) -> str:
        """The node for the read's next attempt: a replica to guard, or the primary."""
        if plan.primary:
            note("readscale.replicas.node", PRIMARY)
            return PRIMARY
        if plan.stay_on is not None and plan.stay_on not in plan.exclude:
            note("readscale.replicas.node", plan.stay_on)
            return plan.stay_on
        while True:
            now = self._clock()
            views = self._topology.views(now)
            step = plan_read(
                views, plan.request, now=now, wait_until=plan.wait_until, attempt=plan.attempt, rng=self._rng,
                exclude=plan.exclude,
            )  # fmt: skip
            match step:
                case TryReplica(name=name):
                    self._observer.refresh_if_unsure(views, plan.request, now)
                    note("readscale.replicas.node", name)
                    return name
                case Wait(seconds=seconds):
                    if not plan.waited:
                        plan.waited = True
                        self._topology.count("waits")
                        note("readscale.replicas.waited", True)
                    plan.attempt += 1
                    await async_sleep(seconds)
                    await self._observer.refresh_positions()
                case FallBack(reason=reason):
                    fallback = self._topology.plan_fallback(
                        now=now, give_up_at=plan.give_up_at, attempt=plan.attempt, retry_hint=self._writer.retry_hint()
                    )
                    note("readscale.replicas.fallback_reason", reason)
                    match fallback:
                        case UsePrimary():
                            note("readscale.replicas.node", PRIMARY)
                            note("readscale.replicas.fallback", True)
                            return PRIMARY
                        case Wait(seconds=seconds):
                            plan.attempt += 1
                            await async_sleep(seconds)
                            await self._observer.refresh_positions()
                        case Refuse(reason=refusal, retry_after=retry_after):
                            self._topology.count("refusals")
                            note("readscale.replicas.refused", refusal)
                            raise ReplicaUnavailableError(
                                f"{reason}, and {refusal}; retry in {retry_after:.3g} s",
                                backend="postgresql",
                                retry_after=retry_after,
                            )
                        case _:
                            assert_never(fallback)
                case _:
                    assert_never(step)

    async def _checkout(self, name: str, plan: ReadPlan) -> psycopg.AsyncConnection[Any] | None:
        """A pooled connection to ``name``; None (and ``name`` skipped) if a replica's pool is exhausted."""
        node = self._node(name)
        if name == PRIMARY:
            try:
                conn = await node.pool.getconn()
            except psycopg.OperationalError as exc:
                self._topology.count("refusals")
                raise ReplicaUnavailableError(
                    f"no connection to the primary within {self._settings.acquire_timeout} s for a fallback read",
                    backend="postgresql",
                    retry_after=self._writer.retry_hint(),
                ) from exc
        else:
            try:
                conn = await node.pool.getconn(
                    timeout=min(self._settings.acquire_timeout, self._settings.connect_timeout)
                )
            except psycopg.OperationalError:
                plan.exclude.add(name)
                return None
        self._topology.begin_read(name)
        return conn

    async def release(self, name: str, conn: psycopg.AsyncConnection[Any], *, served: bool) -> None:
        """Give ``conn`` back to ``name``'s pool and end the read in flight there."""
        self._topology.end_read(name, served=served)
        await self._node(name).pool.putconn(conn)

    def _accept(
        self, name: str, lsn: int | None, plan: ReadPlan, context: CausalContext, seen: int | None = None
    ) -> bool:
        """Judge a guard's result; merge the replica's position into the context if it
        passes (``seen``: the position read after the read's statement, when there is one).

        A guard on the read's unsettled node settles it whatever it finds: it runs after
        the session's earlier statements there, so it bounds what they saw."""
        if lsn is None:  # pg_last_wal_replay_lsn() is NULL: this node is not a replica
            note("readscale.replicas.guard", "not_replica")
            self._topology.record_not_replica(name)
            plan.exclude.add(name)
            return False
        self._topology.note_position(name, lsn)
        if name == plan.stay_on:
            self._planner.observe(context, lsn)
            context.settled(self._owner, plan.marks)
            plan.stay_on, plan.marks = None, {}
        request = plan.request
        stale = request.min_lsn is not None and lsn < request.min_lsn
        if not stale and request.max_staleness is not None:
            staleness = self._topology.staleness(lsn, self._clock())
            stale = staleness is None or staleness > request.max_staleness
        if stale:
            self._topology.count("guard_misses")
            note("readscale.replicas.guard", "behind")
            return False
        note("readscale.replicas.guard", "passed")
        if seen is not None and seen > lsn:
            self._topology.note_position(name, seen)
            lsn_seen = seen
        else:
            lsn_seen = lsn
        self._planner.observe(context, lsn_seen)
        if current_fill() is not None:  # a cache fill in progress learns how fresh its source is (at least)
            report_read_lsn(lsn, staleness=self._topology.staleness(lsn, self._clock()))
        return True

    def count(self, name: str, plan: ReadPlan, position: int | None = None) -> None:
        """Count a read served by ``name``; a cache fill in progress learns its source
        (``position``: the primary's, read before the query, when known)."""
        if self._on_read is not None:
            self._on_read(name)  # runs in the reader's own task: contextvars see the request
        if name == PRIMARY:
            report_primary_read(position)
        if name != PRIMARY:
            self._topology.count("replica_reads")
        elif plan.primary and not plan.guard:
            self._topology.count("time_window_primary_reads")
        else:
            self._topology.count("primary_reads")

    # -- a read held open: route and guard, then its position when it ends ------------------

    async def open(self, plan: ReadPlan, context: CausalContext) -> tuple[str, psycopg.AsyncConnection[Any]]:
        """Route and guard: a node that may serve the read, with a connection to it."""
        if TRACING.tracer is None:
            return await self._open(plan, context)
        with span("readscale.replicas.route", _read_attributes(plan)):
            return await self._open(plan, context)

    async def _open(self, plan: ReadPlan, context: CausalContext) -> tuple[str, psycopg.AsyncConnection[Any]]:
        while True:
            name = await self._choose(plan)
            conn = await self._checkout(name, plan)
            if conn is None:
                await self._planner.leave(plan, context)
                continue
            if name == PRIMARY or not plan.guard:
                return name, conn
            with maybe_span("readscale.replicas.attempt", self._node(name).span_attributes(), CLIENT):
                failure: psycopg.Error | None = None
                try:
                    row = await (await conn.execute(GUARD_SQL)).fetchone()
                except psycopg.Error as exc:
                    failure, row = exc, None
                    note("readscale.replicas.guard", "failed")
                    note("error.type", type(exc).__qualname__)
                lsn = None if row is None or row[0] is None else parse_lsn(row[0])
                accepted = failure is None and self._accept(name, lsn, plan, context)
            if failure is not None:
                await self.release(name, conn, served=False)
                if node_failed(conn, failure):
                    mark_failed(self._topology, name)
                plan.exclude.add(name)
                await self._planner.leave(plan, context)
                continue
            if accepted:
                return name, conn
            await self.release(name, conn, served=False)
            await self._planner.leave(plan, context)

    async def merge_seen(self, name: str, conn: psycopg.AsyncConnection[Any], context: CausalContext) -> bool:
        """Read ``name``'s position on the block's connection and merge it: an upper bound
        of what the block saw, whatever isolation level it used. False if it cannot be
        read there (the connection is busy or broken): the caller leaves it unsettled."""
        status = conn.info.transaction_status
        if conn.closed or conn.broken or status in (TransactionStatus.ACTIVE, TransactionStatus.UNKNOWN):
            return False
        position = self._position_sql if name == PRIMARY else GUARD_SQL
        try:
            if status == TransactionStatus.INERROR:  # nothing else runs in it; the pool would roll back
                cur = await conn.execute(f"ROLLBACK; {position}")
                cur.nextset()
            else:  # the function reads shared memory, not the open transaction's snapshot
                cur = await conn.execute(position)
            row = await cur.fetchone()
            if name == PRIMARY:
                await self._writer.stamp(conn, row, context, write=False)
                return True
        except (psycopg.Error, ReadscaleError) as exc:
            if isinstance(exc, psycopg.Error) and node_failed(conn, exc):
                mark_failed(self._topology, name)
            return False
        if row is None or row[0] is None:
            return False
        lsn = parse_lsn(row[0])
        self._topology.note_position(name, lsn)
        self._planner.observe(context, lsn)
        return True

    # -- a read in one round trip, retried once on another node -----------------------------

    async def fetch(self, plan: ReadPlan, context: CausalContext, query: Any, params: Any) -> list[Row]:
        """Run ``query`` on a node ``plan`` allows; once more on another if the node fails
        mid-read (connection lost, shut down, a recovery conflict)."""
        if TRACING.tracer is None:
            return await self._fetch(plan, context, query, params)
        with span("readscale.replicas.read", _read_attributes(plan)):
            return await self._fetch(plan, context, query, params)

    async def _fetch(self, plan: ReadPlan, context: CausalContext, query: Any, params: Any) -> list[Row]:
        retried = False
        while True:
            name = await self._choose(plan)
            conn = await self._checkout(name, plan)
            if conn is None:
                await self._planner.leave(plan, context)
                continue
            served = False
            attempt = maybe_span("readscale.replicas.attempt", self._node(name).span_attributes(), CLIENT)
            try:
                with attempt:
                    try:
                        lsn, seen, rows = await self._fetch_on(name, conn, plan, context, query, params)
                    except psycopg.Error as exc:
                        failed = node_failed(conn, exc)
                        if not (failed or (name != PRIMARY and exc.sqlstate == _RECOVERY_CONFLICT)):
                            raise
                        if failed:
                            mark_failed(self._topology, name)
                        note("readscale.replicas.guard", "failed")
                        note("error.type", type(exc).__qualname__)
                        if retried:
                            self._topology.count("refusals")
                            raise ReplicaUnavailableError(
                                f"the read failed on {name} after a retry: {exc}",
                                backend=name,
                                retry_after=self._writer.retry_hint(),
                            ) from exc
                        retried = True
                        self._topology.count("retries")
                        plan.exclude.add(name)
                    else:
                        if name == PRIMARY or not plan.guard or self._accept(name, lsn, plan, context, seen):
                            served = True
                            self.count(name, plan, lsn if name == PRIMARY else None)
                            return rows
            finally:
                await self.release(name, conn, served=served)
            await self._planner.leave(plan, context)  # a failed or stale attempt: settle before moving on

    async def _fetch_on(
        self,
        name: str,
        conn: psycopg.AsyncConnection[Any],
        plan: ReadPlan,
        context: CausalContext,
        query: Any,
        params: Any,
    ) -> tuple[int | None, int | None, list[Row]]:
        """Run the read on ``conn``; on a replica between the guard and the position, in
        one round trip. Returns (the guard's position, the position after, the rows); on
        the primary, (its position before the query inside a cache fill, else None;
        None; the rows).

        Guard, query and position go as statements of one simple-protocol query
        (parameters bound client-side): each statement takes its own snapshot under READ
        COMMITTED, which replica connections are set to, so the guard finishes before the
        read's snapshot is taken (verified-postgres.md section 4) and the position after
        it bounds what the snapshot saw. A fallback read on the primary is followed by the
        primary's position the same way; inside a cache fill it is also preceded by it, so
        the entry records a position the read saw everything before (no extra round trip).
        """
        if not plan.guard:  # the time-window rule: no guard, no position
            return None, None, await (await conn.execute(query, params)).fetchall()
        cur = psycopg.AsyncClientCursor(conn)
        if name == PRIMARY:
            if current_fill() is None:
                await cur.execute(_statements(query, self._position_sql), params)
                rows = await cur.fetchall()
                await self._writer.stamp(conn, await _last_row(cur), context, write=False)
                return None, None, rows
            await cur.execute(_statements(self._position_sql, query, self._position_sql), params)
            before = await self._writer.stamp(conn, await cur.fetchone(), context, write=False)
            cur.nextset()
            rows = await cur.fetchall()
            await self._writer.stamp(conn, await _last_row(cur), context, write=False)
            return before.lsn, None, rows
        await cur.execute(_statements(GUARD_SQL, query, GUARD_SQL), params)
        row = await cur.fetchone()
        cur.nextset()
        rows = await cur.fetchall()
        after = await _last_row(cur)
        lsn = None if row is None or row[0] is None else parse_lsn(row[0])
        seen = None if after is None or after[0] is None else parse_lsn(after[0])
        return lsn, seen, rows
