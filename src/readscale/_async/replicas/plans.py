"""A replica read's plan: the target its mode, the causal context and the cache fill it
runs in set, and what the session's unsettled reads saw, settled into it.

Monotonic reads (issue 12) hold here: before a ``Session`` or ``Latest`` read is routed,
the nodes the session read through another library (``route_read``, the integrations'
hooks) are either where this read goes first (its guard settles them) or have their
positions read and merged now (``readscale._core.replicas.routing.plan_unsettled``), so
the target covers what they saw. Read-your-writes holds in the target itself: the
context's token, reconciled with the primary the router sees (a token of another
cluster or timeline resets). The routed read (``readscale._async.replicas.reads``)
drives the plan; the planner owns no state of its own beyond what it is given.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import assert_never

import psycopg

from readscale._async.replicas.nodes import GUARD_SQL, AsyncNode, mark_failed, node_failed
from readscale._async.replicas.primary import AsyncPrimary
from readscale._core.postgres.lsn import parse_lsn
from readscale._core.replicas.causal import CausalToken
from readscale._core.replicas.routing import ReadRequest, SettleFirst, StayOn, plan_unsettled
from readscale._core.replicas.settings import (
    PRIMARY,
    BoundedStaleness,
    Latest,
    ReadMode,
    ReplicaSettings,
    Session,
    TimeWindow,
)
from readscale._shared.cache.fill_scope import current_fill, fill_requirements
from readscale._shared.replicas.causal_context import CausalContext, Settler, current_mode
from readscale._shared.replicas.topology import Topology
from readscale.errors import ReplicaUnavailableError

__all__ = ["AsyncReadPlanner", "ReadPlan"]

log = logging.getLogger("readscale")


@dataclass
class ReadPlan:
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


class AsyncReadPlanner:
    """Plans reads for one router (``owner``: the key of its unsettled reads in a causal
    context) and settles what the session's unsettled reads saw into the context."""

    def __init__(
        self,
        owner: Settler,
        settings: ReplicaSettings,
        replicas: dict[str, AsyncNode],
        topology: Topology,
        writer: AsyncPrimary,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._owner = owner
        self._settings = settings
        self._replicas = replicas
        self._topology = topology
        self._writer = writer
        self._clock = clock
        self._wall_clock = wall_clock

    async def prepare(self, mode: ReadMode | None, context: CausalContext, *, sticky: bool) -> ReadPlan:
        """The read's plan, after settling what the session's unsettled reads saw: either
        the read stays on their node (its guard settles them) or their positions are read
        and merged first, so the target covers them. ``sticky``: the context is a
        session's own (not the router's default), so the read may stay on their node."""
        mode = mode or current_mode() or self._settings.default_mode
        if not isinstance(mode, Session | Latest):  # these do not promise monotonic reads
            return await self._plan(mode, context)
        marks = context.unsettled(self._owner)
        plan = await self._plan(mode, context, settles=marks)
        if not marks or isinstance(mode, Latest):
            return plan
        step = plan_unsettled(marks.keys(), self._topology.views(self._clock()), plan.request, sticky=sticky)
        match step:
            case StayOn(name=name):
                plan.stay_on, plan.marks = name, {name: marks[name]}
                return plan
            case SettleFirst(nodes=nodes):
                await self.settle(context, {n: marks[n] for n in nodes})
                return await self._plan(mode, context)
            case None:
                return plan
            case _:
                assert_never(step)

    async def _plan(self, mode: ReadMode, context: CausalContext, *, settles: dict[str, int] | None = None) -> ReadPlan:
        now = self._clock()
        wait_until = now + self._settings.wait_budget
        give_up_at = wait_until + self._settings.protection.max_wait
        fill = current_fill()
        if fill is not None and fill.primary_only and not isinstance(mode, TimeWindow):
            # A cache fill after an invalidation of unknown position: only the primary
            # is known to hold the change (readscale.cache). No wait for a replica.
            self.reconcile(context)
            return ReadPlan(mode, ReadRequest(), True, True, wait_until, give_up_at)
        match mode:
            case Session():
                token = self.reconcile(context)
                request = _within_fill(ReadRequest(min_lsn=None if token is None else token.lsn))
                return ReadPlan(mode, request, True, False, wait_until, give_up_at)
            case Latest():
                try:
                    latest = await self._writer.latest()
                except ReplicaUnavailableError:
                    self._topology.count("refusals")
                    raise
                if settles:  # the primary's position now bounds what every earlier read saw
                    context.observe(latest)
                    context.settled(self._owner, settles)
                token = self.reconcile(context)
                target = latest.lsn if token is None else max(latest.lsn, token.lsn)
                request = _within_fill(ReadRequest(min_lsn=target))
                return ReadPlan(mode, request, True, False, wait_until, give_up_at)
            case BoundedStaleness(max_staleness=bound):
                request = _within_fill(ReadRequest(max_staleness=bound))
                return ReadPlan(mode, request, True, False, wait_until, give_up_at)
            case TimeWindow(window=window):
                written = context.written_at
                within = written is not None and self._wall_clock() - written < window
                if fill is not None and not (within and self._topology.primary_up):
                    # A cache fill needs a guarded read that meets its floor and bound.
                    return ReadPlan(mode, _within_fill(ReadRequest()), True, False, wait_until, give_up_at)
                return ReadPlan(
                    mode, ReadRequest(), False, within and self._topology.primary_up, wait_until, give_up_at
                )
            case _:
                assert_never(mode)

    async def leave(self, plan: ReadPlan, context: CausalContext) -> None:
        """The read tried its unsettled node and could not read its position there (no
        connection, the guard failed): read it another way before going elsewhere."""
        name, marks = plan.stay_on, plan.marks
        plan.stay_on, plan.marks = None, {}
        if name is None:
            return
        await self.settle(context, marks)
        token = self.reconcile(context)
        if token is not None and (plan.request.min_lsn is None or token.lsn > plan.request.min_lsn):
            plan.request = ReadRequest(min_lsn=token.lsn, max_staleness=plan.request.max_staleness)

    async def settle(self, context: CausalContext, marks: dict[str, int]) -> None:
        """Read each marked node's position now and merge it; a node that cannot tell is
        bounded by the primary's current position (no replica replays past it)."""
        bound_by_primary = PRIMARY in marks
        for name in sorted(set(marks) - {PRIMARY}):
            self._topology.count("settles")
            lsn = await self._replay_position(name) if name in self._replicas else None
            if lsn is None:
                bound_by_primary = True
            else:
                self.observe(context, lsn)
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
                    extra={"event": "replica_position_unknown", "nodes": sorted(marks), "reason": str(exc)},
                )
        context.settled(self._owner, marks)

    async def _replay_position(self, name: str) -> int | None:
        """A replica's replay position now, on a pooled connection (None if it cannot tell)."""
        node = self._replicas[name]
        timeout = min(self._settings.acquire_timeout, self._settings.connect_timeout)
        try:
            conn = await node.pool.getconn(timeout=timeout)
        except psycopg.OperationalError:
            return None
        try:
            row = await (await conn.execute(GUARD_SQL)).fetchone()
        except psycopg.Error as exc:
            if node_failed(conn, exc):
                mark_failed(self._topology, name)
            return None
        finally:
            await node.pool.putconn(conn)
        if row is None or row[0] is None:
            self._topology.record_not_replica(name)
            return None
        lsn = parse_lsn(row[0])
        self._topology.note_position(name, lsn)
        return lsn

    def observe(self, context: CausalContext, lsn: int) -> None:
        """Merge a replica's position into the context, as a token of the cluster seen now."""
        identity = self._topology.identity
        if identity is not None:
            context.observe(identity.at(lsn))

    def reconcile(self, context: CausalContext) -> CausalToken | None:
        """The context's token, checked against the cluster seen now (counted when reset)."""
        resets = context.resets
        token = context.reconcile(self._topology.identity)
        if context.resets != resets:
            self._topology.count("tokens_reset")
        return token
