"""The replica router: reads on replicas that have replayed the session's writes, writes
on the primary with the causal token learned in the commit's own round trip.

A thin face over its parts: the read's plan from its mode and the causal context
(``readscale._async.replicas.plans``), the routed read that asks the core for a step (try
a replica, wait, fall back), runs the guard and acts (``readscale._async.replicas.reads``),
the primary's transactions (``readscale._async.replicas.primary``), and the lag observer
(``readscale._async.replicas.observer``, run in the background every ``poll_interval``)
that keeps each replica's position and health current.

What each read merges into the causal context (monotonic reads): a position read on its
node *after* its statements, never only the guard's, since a snapshot taken after the
guard may see more. ``fetch`` sends ``guard; query; position`` in one round trip;
``read()`` reads the position on its own connection when the block ends; reads another
library runs (``route_read`` and the integrations' hooks) stay unsettled on their node
until the session's next read stays there (its guard is that read) or reads the
position before it moves (``readscale._core.replicas.routing.plan_unsettled``), or until
:meth:`settle` (the middlewares call it before the token leaves).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Any

import psycopg

from readscale._async.replicas.nodes import AsyncNode, mark_failed, node_failed
from readscale._async.replicas.observer import AsyncLagObserver
from readscale._async.replicas.plans import AsyncReadPlanner, ReadPlan
from readscale._async.replicas.primary import AsyncPrimary
from readscale._async.replicas.reads import AsyncReads, Row
from readscale._core.replicas.causal import CausalToken
from readscale._core.replicas.health import ReplicaStatus
from readscale._core.replicas.settings import PRIMARY, ReadMode, ReplicaSettings
from readscale._shared.replicas.causal_context import CausalContext, current_context
from readscale._shared.replicas.topology import RouterStats, Topology
from readscale.errors import ConfigurationError

__all__ = ["AsyncReplicaRouter"]


class AsyncReplicaRouter:
    """Read/write splitting over one primary and its streaming replicas.

    ``async with router.write() as conn``: one transaction on the primary; at its end
    the router commits and learns the primary's WAL position in the same round trip,
    merging it into the causal context. ``async with router.read() as conn``: a
    connection to one node (a replica that has replayed the context's token, or the
    primary as a rate-limited fallback) for the whole block. ``await router.fetch(sql)``:
    an idempotent autocommit read in one round trip (guard and query pipelined), retried
    once on another node if its node fails mid-read.

    ``on_read(node)`` is called once per served read with the node's name (``primary``,
    ``r1``...), in the reader's own task: per-request accounting, metrics.

    The causal context is the active :func:`~readscale.replicas.causal_context`, or
    the router's own ``default_context`` (one for the whole process: always correct,
    but every reader then waits for every writer's position).
    """

    def __init__(
        self,
        settings: ReplicaSettings,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        on_read: Callable[[str], None] | None = None,
    ) -> None:
        self.settings = settings
        self._primary = AsyncNode(PRIMARY, settings.primary, settings, replica=False)
        self._replicas = {name: AsyncNode(name, dsn, settings, replica=True) for name, dsn in settings.replica_dsns}
        self._topology = Topology(settings, clock())
        self._writer = AsyncPrimary(self._primary, self._topology, settings, wall_clock)
        self._observer = AsyncLagObserver(self._primary, self._replicas, self._topology, settings, clock)
        self._planner = AsyncReadPlanner(
            self, settings, self._replicas, self._topology, self._writer, clock=clock, wall_clock=wall_clock
        )
        self._reads = AsyncReads(
            self,
            settings,
            self._primary,
            self._replicas,
            self._topology,
            self._writer,
            self._observer,
            self._planner,
            clock=clock,
            on_read=on_read,
        )
        self._open = False
        self.default_context = CausalContext()

    # -- lifecycle ---------------------------------------------------------------------

    async def open(self) -> None:
        """Open the pools, poll every node once, start the lag observer."""
        if self._open:
            return
        for node in self._nodes():
            await node.open()
        self._open = True
        await self._observer.start()

    async def close(self) -> None:
        """Stop the observer and close every pool (a closed router cannot be reopened)."""
        await self._observer.stop()
        self._open = False
        for node in self._nodes():
            await node.close()

    async def __aenter__(self) -> AsyncReplicaRouter:
        await self.open()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def _nodes(self) -> list[AsyncNode]:
        return [self._primary, *self._replicas.values()]

    def _check_open(self) -> None:
        if not self._open:
            raise ConfigurationError("the replica router is not open: use `async with router` or call open() first")

    @property
    def context(self) -> CausalContext:
        """The causal context reads and writes use here."""
        return current_context() or self.default_context

    # -- the lag observer ----------------------------------------------------------------

    async def poll(self) -> None:
        """Poll every node once: positions, lag, health (the observer does this on its own)."""
        await self._observer.poll()

    def status(self) -> list[ReplicaStatus]:
        """Every node's health, position, lag (bytes and seconds), reads in flight and served."""
        return self._topology.status()

    def stats(self) -> RouterStats:
        return self._topology.stats()

    # -- a read's plan, and what the session's unsettled reads saw ---------------------------

    async def _prepare(self, mode: ReadMode | None, context: CausalContext) -> ReadPlan:
        """The read's plan (``readscale._async.replicas.plans``): a session's own context,
        not the router's default, may keep the read on its unsettled node."""
        return await self._planner.prepare(mode, context, sticky=context is not self.default_context)

    async def settle(self, context: CausalContext | None = None) -> None:
        """Merge what the context's unsettled reads saw into its token: one position read
        per node read through another library (``route_read``, the Django router, the
        SQLAlchemy session) since the session's last read. The middlewares call this before
        the token leaves; call it before :func:`~readscale.replicas.dump_token` in async
        code. Costs nothing when there is nothing to settle."""
        context = context or self.context
        marks = context.unsettled(self)
        if marks:
            await self._planner.settle(context, marks)

    def note_read(self, node: str) -> None:
        """Record that a statement another library ran on ``node`` (a replica's name or
        ``"primary"``) just finished: what it saw is merged before the session's next read
        moves to another node or its token leaves. For integrations' statement hooks."""
        self.context.note_read(self, node)

    # -- reads -----------------------------------------------------------------------------

    @asynccontextmanager
    async def read(self, mode: ReadMode | None = None) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """A connection to one node for the block, fresh enough for ``mode``.

        Raises ReplicaUnavailableError when no replica is fresh within the wait budget and
        the primary's fallback limit is spent. A failure inside the block is not retried
        (your code ran); use :meth:`fetch` for reads that may be.

        When the block ends, the node's position is read on its connection (one round
        trip; a transaction the block left failed is rolled back first) and merged, so
        the session's next read sees at least what the block's statements saw. Reads in
        the same session while the block is open stay on its node or read its position
        first. If the block raises, or the position cannot be read on its connection, the
        node stays unsettled and the next read settles it.
        """
        self._check_open()
        context = self.context
        plan = await self._prepare(mode, context)
        name, conn = await self._reads.open(plan, context)
        if plan.guard:
            context.open_read(self, name)
        served = settled = False
        try:
            yield conn
            served = True
            if plan.guard:
                settled = await self._reads.merge_seen(name, conn, context)
        except BaseException as exc:
            if node_failed(conn, exc):
                mark_failed(self._topology, name)
            raise
        finally:
            if plan.guard:
                context.close_read(self, name, settled=settled)
            if served:
                self._reads.count(name, plan)
            await self._reads.release(name, conn, served=served)

    async def fetch(self, query: Any, params: Any = None, *, mode: ReadMode | None = None) -> list[Row]:
        """Run one idempotent read in autocommit and return its rows.

        On a replica the guard and the query travel in one pipeline (one round trip). If
        the node fails mid-read (connection lost, shut down, a recovery conflict), the
        read runs once more on another node; a second failure raises
        ReplicaUnavailableError. Errors of the query itself propagate unchanged.
        """
        self._check_open()
        context = self.context
        plan = await self._prepare(mode, context)
        return await self._reads.fetch(plan, context, query, params)

    async def fetch_one(self, query: Any, params: Any = None, *, mode: ReadMode | None = None) -> Row | None:
        """:meth:`fetch`, first row only (None if there is none)."""
        rows = await self.fetch(query, params, mode=mode)
        return rows[0] if rows else None

    async def route_read(self, mode: ReadMode | None = None) -> str:
        """Choose and guard a node for a read that another library will run (Django, SQLAlchemy).

        Returns the replica's name, or ``"primary"``. The guard ran on a connection of
        the chosen server before this returns, so any statement started afterwards on
        that server sees the context's token. What those statements see beyond it is
        unsettled on that node: the session's next read stays there (its guard settles
        it) or reads the node's position before going elsewhere, and the middlewares
        settle it before the token leaves. Statements that finish after the session's
        next read started should call :meth:`note_read` (the integrations' hooks do).
        """
        self._check_open()
        context = self.context
        plan = await self._prepare(mode, context)
        name, conn = await self._reads.open(plan, context)
        try:
            self._reads.count(name, plan)
        finally:
            await self._reads.release(name, conn, served=True)
        if plan.guard:
            context.note_read(self, name)
        return name

    # -- writes ----------------------------------------------------------------------------

    @asynccontextmanager
    async def write(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """One transaction on the primary, committed at the end of the block.

        The commit and the read of the primary's WAL position go in one round trip
        (``COMMIT; SELECT pg_current_wal_lsn()``; never read inside the transaction), and
        the position is merged into the causal context. An exception in the block rolls
        back. Raises PrimaryUnavailableError if the primary cannot be reached; if the
        connection breaks during COMMIT, the error says the outcome is unknown.
        """
        self._check_open()
        context = self.context
        marks = context.unsettled(self)  # the commit's position will bound what they saw
        async with self._writer.transaction(context) as conn:
            yield conn
        if marks:
            context.settled(self, marks)

    async def observe_commit(self) -> CausalToken:
        """Learn the primary's position after a commit made on another connection (an
        ORM's own) and merge it into the causal context as a write. One round trip. It
        also settles the session's earlier reads: no replica replays past the primary."""
        self._check_open()
        context = self.context
        marks = context.unsettled(self)
        token = await self._writer.observe_commit(context)
        if marks:
            context.settled(self, marks)
        return token
