"""The replica router: reads on replicas that have replayed the session's writes, writes
on the primary with the causal token learned in the commit's own round trip.

A thin loop around ``readscale._core.replicas.routing``: build the read's target from its mode
and the causal context, ask the core for a step (try a replica, wait, fall back), run
the guard, and act. The lag observer (``readscale._async.replicas.observer``, run in the
background every ``poll_interval``) keeps each replica's position and health current.

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

import logging
import random
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, assert_never

import psycopg
from psycopg import sql
from psycopg.pq import TransactionStatus

from readscale._async.replicas.nodes import GUARD_SQL, AsyncNode, position_sql
from readscale._async.replicas.observer import AsyncLagObserver
from readscale._async.replicas.primary import AsyncPrimary
from readscale._core.postgres.lsn import parse_lsn
from readscale._core.replicas.causal import CausalToken
from readscale._core.replicas.health import ReplicaStatus
from readscale._core.replicas.routing import (
    FallBack,
    ReadRequest,
    Refuse,
    SettleFirst,
    StayOn,
    TryReplica,
    UsePrimary,
    Wait,
    plan_read,
    plan_unsettled,
)
from readscale._core.replicas.settings import (
    PRIMARY,
    BoundedStaleness,
    Latest,
    ReadMode,
    ReplicaSettings,
    Session,
    TimeWindow,
)
from readscale._shared.cache.fill_scope import current_fill, fill_requirements, report_primary_read, report_read_lsn
from readscale._shared.primitives.locks import async_sleep
from readscale._shared.replicas.causal_context import CausalContext, current_context, current_mode
from readscale._shared.replicas.topology import RouterStats, Topology
from readscale.errors import ConfigurationError, ReadscaleError, ReplicaUnavailableError

__all__ = ["AsyncReplicaRouter"]

log = logging.getLogger("readscale")
Row = tuple[Any, ...]
# SQLSTATEs after which the node, not the query, is at fault (connection exceptions and
# shutdowns), and the hot-standby conflict a replica raises while replaying (retryable).
_NODE_FAILURE_STATES = ("08", "57P01", "57P02", "57P03")
_RECOVERY_CONFLICT = "40001"


@dataclass
class _Plan:
    """One read's target and progress through the routing loop."""

    mode: ReadMode
    request: ReadRequest
    guard: bool  # run the guard and merge the position (every mode but the time window)
    primary: bool  # straight to the primary: the time-window rule, or a fill that must read it
    wait_until: float
    give_up_at: float
    attempt: int = 0
    waited: bool = False
    exclude: set[str] = field(default_factory=set)
    stay_on: str | None = None  # the unsettled node this read tries first (its guard settles it)
    marks: dict[str, int] = field(default_factory=dict)  # the unsettled marks that attempt clears


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


def _at_least(lsn: int | None, floor: int | None) -> int | None:
    """The later of a session's token and a cache fill's floor (the key's tombstone)."""
    if floor is None:
        return lsn
    return floor if lsn is None else max(lsn, floor)


def _within_fill(request: ReadRequest) -> ReadRequest:
    """``request`` tightened by the cache fill it runs in, if any (readscale.cache): at or
    past the fill's floor, and no staler than its bound."""
    floor, bound = fill_requirements()
    if floor is None and bound is None:
        return request
    staleness = request.max_staleness
    if bound is not None:
        staleness = bound if staleness is None else min(staleness, bound)
    return ReadRequest(min_lsn=_at_least(request.min_lsn, floor), max_staleness=staleness)


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
        self._on_read = on_read
        self._clock = clock
        self._wall_clock = wall_clock
        self._primary = AsyncNode(PRIMARY, settings.primary, settings, replica=False)
        self._replicas = {name: AsyncNode(name, dsn, settings, replica=True) for name, dsn in settings.replica_dsns}
        self._topology = Topology(settings, clock())
        self._writer = AsyncPrimary(self._primary, self._topology, settings, wall_clock)
        self._position_sql = position_sql(settings.token_source)
        self._rng = random.Random(settings.seed)
        self._observer = AsyncLagObserver(self._primary, self._replicas, self._topology, settings, clock)
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

    def _node(self, name: str) -> AsyncNode:
        return self._primary if name == PRIMARY else self._replicas[name]

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

    # -- planning a read -----------------------------------------------------------------

    async def _prepare(self, mode: ReadMode | None, context: CausalContext) -> _Plan:
        """The read's plan, after settling what the session's unsettled reads saw: either
        the read stays on their node (its guard settles them) or their positions are read
        and merged first, so the target covers them."""
        mode = mode or current_mode() or self.settings.default_mode
        if not isinstance(mode, Session | Latest):  # these do not promise monotonic reads
            return await self._plan(mode, context)
        marks = context.unsettled(self)
        plan = await self._plan(mode, context, settles=marks)
        if not marks or isinstance(mode, Latest):
            return plan
        sticky = context is not self.default_context
        step = plan_unsettled(marks.keys(), self._topology.views(self._clock()), plan.request, sticky=sticky)
        match step:
            case StayOn(name=name):
                plan.stay_on, plan.marks = name, {name: marks[name]}
                return plan
            case SettleFirst(nodes=nodes):
                await self._settle_marks(context, {n: marks[n] for n in nodes})
                return await self._plan(mode, context)
            case None:
                return plan
            case _:
                assert_never(step)

    async def _plan(self, mode: ReadMode, context: CausalContext, *, settles: dict[str, int] | None = None) -> _Plan:
        now = self._clock()
        wait_until = now + self.settings.wait_budget
        give_up_at = wait_until + self.settings.protection.max_wait
        fill = current_fill()
        if fill is not None and fill.primary_only and not isinstance(mode, TimeWindow):
            # A cache fill after an invalidation of unknown position: only the primary
            # is known to hold the change (readscale.cache). No wait for a replica.
            self._reconcile(context)
            return _Plan(mode, ReadRequest(), True, True, wait_until, give_up_at)
        match mode:
            case Session():
                token = self._reconcile(context)
                request = _within_fill(ReadRequest(min_lsn=None if token is None else token.lsn))
                return _Plan(mode, request, True, False, wait_until, give_up_at)
            case Latest():
                try:
                    latest = await self._writer.latest()
                except ReplicaUnavailableError:
                    self._topology.count("refusals")
                    raise
                if settles:  # the primary's position now bounds what every earlier read saw
                    context.observe(latest)
                    context.settled(self, settles)
                token = self._reconcile(context)
                target = latest.lsn if token is None else max(latest.lsn, token.lsn)
                request = _within_fill(ReadRequest(min_lsn=target))
                return _Plan(mode, request, True, False, wait_until, give_up_at)
            case BoundedStaleness(max_staleness=bound):
                request = _within_fill(ReadRequest(max_staleness=bound))
                return _Plan(mode, request, True, False, wait_until, give_up_at)
            case TimeWindow(window=window):
                written = context.written_at
                within = written is not None and self._wall_clock() - written < window
                if fill is not None and not (within and self._topology.primary_up):
                    # A cache fill needs a guarded read that meets its floor and bound.
                    return _Plan(mode, _within_fill(ReadRequest()), True, False, wait_until, give_up_at)
                return _Plan(mode, ReadRequest(), False, within and self._topology.primary_up, wait_until, give_up_at)
            case _:
                assert_never(mode)

    async def _leave(self, plan: _Plan, context: CausalContext) -> None:
        """The read tried its unsettled node and could not read its position there (no
        connection, the guard failed): read it another way before going elsewhere."""
        name, marks = plan.stay_on, plan.marks
        plan.stay_on, plan.marks = None, {}
        if name is None:
            return
        await self._settle_marks(context, marks)
        token = self._reconcile(context)
        if token is not None and (plan.request.min_lsn is None or token.lsn > plan.request.min_lsn):
            plan.request = ReadRequest(min_lsn=token.lsn, max_staleness=plan.request.max_staleness)

    async def _settle_marks(self, context: CausalContext, marks: dict[str, int]) -> None:
        """Read each marked node's position now and merge it; a node that cannot tell is
        bounded by the primary's current position (no replica replays past it)."""
        bound_by_primary = PRIMARY in marks
        for name in sorted(set(marks) - {PRIMARY}):
            self._topology.count("settles")
            lsn = await self._replay_position(name) if name in self._replicas else None
            if lsn is None:
                bound_by_primary = True
            else:
                self._observe(context, lsn)
        if bound_by_primary:
            self._topology.count("settles")
            try:
                context.observe(await self._writer.latest())
            except ReplicaUnavailableError as exc:
                self._topology.count("positions_unknown")
                log.warning(
                    "readscale: could not learn how far earlier reads on %s saw (%s): the session's next read "
                    "may see older data",
                    ", ".join(sorted(marks)),
                    exc,
                    extra={"nodes": sorted(marks), "reason": str(exc)},
                )
        context.settled(self, marks)

    async def _replay_position(self, name: str) -> int | None:
        """A replica's replay position now, on a pooled connection (None if it cannot tell)."""
        node = self._replicas[name]
        timeout = min(self.settings.acquire_timeout, self.settings.connect_timeout)
        try:
            conn = await node.pool.getconn(timeout=timeout)
        except psycopg.OperationalError:
            return None
        try:
            row = await (await conn.execute(GUARD_SQL)).fetchone()
        except psycopg.Error as exc:
            if self._node_failed(conn, exc):
                self._mark_failed(name)
            return None
        finally:
            await node.pool.putconn(conn)
        if row is None or row[0] is None:
            self._topology.record_not_replica(name)
            return None
        lsn = parse_lsn(row[0])
        self._topology.note_position(name, lsn)
        return lsn

    def _observe(self, context: CausalContext, lsn: int) -> None:
        identity = self._topology.identity
        if identity is not None:
            context.observe(identity.at(lsn))

    async def settle(self, context: CausalContext | None = None) -> None:
        """Merge what the context's unsettled reads saw into its token: one position read
        per node read through another library (``route_read``, the Django router, the
        SQLAlchemy session) since the session's last read. The middlewares call this before
        the token leaves; call it before :func:`~readscale.replicas.dump_token` in async
        code. Costs nothing when there is nothing to settle."""
        context = context or self.context
        marks = context.unsettled(self)
        if marks:
            await self._settle_marks(context, marks)

    def note_read(self, node: str) -> None:
        """Record that a statement another library ran on ``node`` (a replica's name or
        ``"primary"``) just finished: what it saw is merged before the session's next read
        moves to another node or its token leaves. For integrations' statement hooks."""
        self.context.note_read(self, node)

    def _reconcile(self, context: CausalContext) -> CausalToken | None:
        resets = context.resets
        token = context.reconcile(self._topology.identity)
        if context.resets != resets:
            self._topology.count("tokens_reset")
        return token

    def _retry_hint(self) -> float:
        return self._writer.retry_hint()

    async def _choose(self, plan: _Plan) -> str:
        """The node for the read's next attempt: a replica to guard, or the primary."""
        if plan.primary:
            return PRIMARY
        if plan.stay_on is not None and plan.stay_on not in plan.exclude:
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
                    return name
                case Wait(seconds=seconds):
                    if not plan.waited:
                        plan.waited = True
                        self._topology.count("waits")
                    plan.attempt += 1
                    await async_sleep(seconds)
                    await self._observer.refresh_positions()
                case FallBack(reason=reason):
                    fallback = self._topology.plan_fallback(
                        now=now, give_up_at=plan.give_up_at, attempt=plan.attempt, retry_hint=self._retry_hint()
                    )
                    match fallback:
                        case UsePrimary():
                            return PRIMARY
                        case Wait(seconds=seconds):
                            plan.attempt += 1
                            await async_sleep(seconds)
                            await self._observer.refresh_positions()
                        case Refuse(reason=refusal, retry_after=retry_after):
                            self._topology.count("refusals")
                            raise ReplicaUnavailableError(
                                f"{reason}, and {refusal}; retry in {retry_after:.3g} s",
                                backend="postgresql",
                                retry_after=retry_after,
                            )
                        case _:
                            assert_never(fallback)
                case _:
                    assert_never(step)

    async def _checkout(self, name: str, plan: _Plan) -> psycopg.AsyncConnection[Any] | None:
        """A pooled connection to ``name``; None (and ``name`` skipped) if a replica's pool is exhausted."""
        node = self._node(name)
        if name == PRIMARY:
            try:
                conn = await node.pool.getconn()
            except psycopg.OperationalError as exc:
                self._topology.count("refusals")
                raise ReplicaUnavailableError(
                    f"no connection to the primary within {self.settings.acquire_timeout} s for a fallback read",
                    backend="postgresql",
                    retry_after=self._retry_hint(),
                ) from exc
        else:
            try:
                conn = await node.pool.getconn(
                    timeout=min(self.settings.acquire_timeout, self.settings.connect_timeout)
                )
            except psycopg.OperationalError:
                plan.exclude.add(name)
                return None
        self._topology.begin_read(name)
        return conn

    async def _release(self, name: str, conn: psycopg.AsyncConnection[Any], *, served: bool) -> None:
        self._topology.end_read(name, served=served)
        await self._node(name).pool.putconn(conn)

    def _node_failed(self, conn: psycopg.AsyncConnection[Any], exc: BaseException) -> bool:
        if conn.broken:
            return True
        state = getattr(exc, "sqlstate", None) or ""
        return isinstance(exc, psycopg.OperationalError) and state.startswith(_NODE_FAILURE_STATES)

    def _mark_failed(self, name: str) -> None:
        if self._topology.record_failure(name) == "out":
            log.warning("readscale: %s taken out of rotation after failed reads", name)

    def _accept(self, name: str, lsn: int | None, plan: _Plan, context: CausalContext, seen: int | None = None) -> bool:
        """Judge a guard's result; merge the replica's position into the context if it
        passes (``seen``: the position read after the read's statement, when there is one).

        A guard on the read's unsettled node settles it whatever it finds: it runs after
        the session's earlier statements there, so it bounds what they saw."""
        if lsn is None:  # pg_last_wal_replay_lsn() is NULL: this node is not a replica
            self._topology.record_not_replica(name)
            plan.exclude.add(name)
            return False
        self._topology.note_position(name, lsn)
        if name == plan.stay_on:
            self._observe(context, lsn)
            context.settled(self, plan.marks)
            plan.stay_on, plan.marks = None, {}
        request = plan.request
        stale = request.min_lsn is not None and lsn < request.min_lsn
        if not stale and request.max_staleness is not None:
            staleness = self._topology.staleness(lsn, self._clock())
            stale = staleness is None or staleness > request.max_staleness
        if stale:
            self._topology.count("guard_misses")
            return False
        if seen is not None and seen > lsn:
            self._topology.note_position(name, seen)
            lsn_seen = seen
        else:
            lsn_seen = lsn
        self._observe(context, lsn_seen)
        if current_fill() is not None:  # a cache fill in progress learns how fresh its source is (at least)
            report_read_lsn(lsn, staleness=self._topology.staleness(lsn, self._clock()))
        return True

    def _count_read(self, name: str, plan: _Plan, position: int | None = None) -> None:
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

    # -- reads -----------------------------------------------------------------------------

    async def _open_read(self, plan: _Plan, context: CausalContext) -> tuple[str, psycopg.AsyncConnection[Any]]:
        """Route and guard: a node that may serve the read, with a connection to it."""
        while True:
            name = await self._choose(plan)
            conn = await self._checkout(name, plan)
            if conn is None:
                await self._leave(plan, context)
                continue
            if name == PRIMARY or not plan.guard:
                return name, conn
            try:
                row = await (await conn.execute(GUARD_SQL)).fetchone()
            except psycopg.Error as exc:
                await self._release(name, conn, served=False)
                if self._node_failed(conn, exc):
                    self._mark_failed(name)
                plan.exclude.add(name)
                await self._leave(plan, context)
                continue
            if self._accept(name, None if row is None or row[0] is None else parse_lsn(row[0]), plan, context):
                return name, conn
            await self._release(name, conn, served=False)
            await self._leave(plan, context)

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
        name, conn = await self._open_read(plan, context)
        if plan.guard:
            context.open_read(self, name)
        served = settled = False
        try:
            yield conn
            served = True
            if plan.guard:
                settled = await self._merge_seen(name, conn, context)
        except BaseException as exc:
            if self._node_failed(conn, exc):
                self._mark_failed(name)
            raise
        finally:
            if plan.guard:
                context.close_read(self, name, settled=settled)
            if served:
                self._count_read(name, plan)
            await self._release(name, conn, served=served)

    async def _merge_seen(self, name: str, conn: psycopg.AsyncConnection[Any], context: CausalContext) -> bool:
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
            if isinstance(exc, psycopg.Error) and self._node_failed(conn, exc):
                self._mark_failed(name)
            return False
        if row is None or row[0] is None:
            return False
        lsn = parse_lsn(row[0])
        self._topology.note_position(name, lsn)
        self._observe(context, lsn)
        return True

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
        retried = False
        while True:
            name = await self._choose(plan)
            conn = await self._checkout(name, plan)
            if conn is None:
                await self._leave(plan, context)
                continue
            served = False
            try:
                try:
                    lsn, seen, rows = await self._fetch_on(name, conn, plan, context, query, params)
                except psycopg.Error as exc:
                    failed = self._node_failed(conn, exc)
                    if not (failed or (name != PRIMARY and exc.sqlstate == _RECOVERY_CONFLICT)):
                        raise
                    if failed:
                        self._mark_failed(name)
                    if retried:
                        self._topology.count("refusals")
                        raise ReplicaUnavailableError(
                            f"the read failed on {name} after a retry: {exc}",
                            backend=name,
                            retry_after=self._retry_hint(),
                        ) from exc
                    retried = True
                    self._topology.count("retries")
                    plan.exclude.add(name)
                else:
                    if name == PRIMARY or not plan.guard or self._accept(name, lsn, plan, context, seen):
                        served = True
                        self._count_read(name, plan, lsn if name == PRIMARY else None)
                        return rows
            finally:
                await self._release(name, conn, served=served)
            await self._leave(plan, context)  # a failed or stale attempt: settle before moving on

    async def fetch_one(self, query: Any, params: Any = None, *, mode: ReadMode | None = None) -> Row | None:
        """:meth:`fetch`, first row only (None if there is none)."""
        rows = await self.fetch(query, params, mode=mode)
        return rows[0] if rows else None

    async def _fetch_on(
        self,
        name: str,
        conn: psycopg.AsyncConnection[Any],
        plan: _Plan,
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
        name, conn = await self._open_read(plan, context)
        try:
            self._count_read(name, plan)
        finally:
            await self._release(name, conn, served=True)
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
