"""A SQLAlchemy session that reads from replicas and writes to the primary, by WAL position.

    engines = {name: create_engine(dsn) for name, dsn in settings.replica_dsns}
    Session = routing_sessionmaker(router, primary=create_engine(PRIMARY_URL), replicas=engines)
    with causal_context(), Session() as session:
        session.add(Item(id=1, price=9)); session.commit()   # the token is learned after COMMIT
        session.get(Item, 1)                                # a replica that replayed it, or the primary

One engine per node, named as in the router's settings. Rules of :class:`RoutingSession`:

- A session transaction's first read asks the router for a node (``route_read``: a
  replica whose replay position passed the causal token, checked by a guard on that
  server before the read's snapshot, or the primary as a rate-limited fallback) and
  stays on it until the transaction ends.
- Flushes, INSERT/UPDATE/DELETE, ``SELECT ... FOR UPDATE``, text that is not plainly a
  read, and statements with ``execution_options(readscale_primary=True)`` go to the
  primary, and so does every read after them in the same transaction.
- After a commit that wrote, the router reads the primary's WAL position (one extra
  round trip after COMMIT: SQLAlchemy owns the commit) and merges it into the causal
  context, as a write.
- Monotonic reads: a transaction's statements run after its routing guard and may see
  more. Each engine's ``after_cursor_execute`` event marks its node once a statement
  finished (no round trip); the session's next transaction stays on that node (its
  guard settles the mark) or reads the node's position before it goes elsewhere, and
  the middlewares settle what is left before they store the token.

For asyncio, :func:`async_routing_sessionmaker` takes an ``AsyncReplicaRouter`` and
``AsyncEngine`` objects (SQLAlchemy runs the session's sync code in a greenlet, from
which the router is awaited). Reads use the mode of :func:`~readscale.replicas.use_mode`
or the session's ``mode``.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from typing import Any

try:
    from sqlalchemy import event
    from sqlalchemy.engine import Connection, Engine
    from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
    from sqlalchemy.orm import Session, SessionTransaction, sessionmaker
    from sqlalchemy.sql.dml import UpdateBase
    from sqlalchemy.sql.elements import TextClause
    from sqlalchemy.util import await_only
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "readscale.sqlalchemy needs SQLAlchemy 2 with asyncio support: pip install 'readscale[sqlalchemy]'"
    ) from exc

from readscale._async.replicas.router import AsyncReplicaRouter
from readscale._core.replicas.settings import PRIMARY, ReadMode
from readscale._shared.cache.fill_scope import current_fill, report_primary_read, report_unknown_read
from readscale._shared.replicas.causal_context import current_mode
from readscale._sync.replicas.router import ReplicaRouter
from readscale.errors import ConfigurationError
from readscale.replicas._sql import is_read_sql

__all__ = ["RoutingSession", "async_routing_sessionmaker", "routing_sessionmaker"]


def _writes(clause: Any) -> bool:
    if clause is None:
        return False
    if isinstance(clause, UpdateBase):
        return True
    options = getattr(clause, "_execution_options", None) or {}
    if options.get("readscale_primary"):
        return True
    if getattr(clause, "_for_update_arg", None) is not None:
        return True
    if isinstance(clause, TextClause):
        return not is_read_sql(clause.text)
    return False


_tracked: weakref.WeakKeyDictionary[Engine, dict[int, Any]] = weakref.WeakKeyDictionary()


def _track(engine: Engine, router: ReplicaRouter | AsyncReplicaRouter, node: str) -> None:
    """Mark ``node`` as read in the active causal context after each statement on
    ``engine`` (once per engine and router)."""
    listeners = _tracked.setdefault(engine, {})
    if id(router) in listeners:
        return

    def after_cursor_execute(*args: Any) -> None:
        router.note_read(node)

    event.listen(engine, "after_cursor_execute", after_cursor_execute)
    listeners[id(router)] = after_cursor_execute


class RoutingSession(Session):
    """A :class:`~sqlalchemy.orm.Session` whose reads go where the replica router says."""

    def __init__(
        self,
        bind: Engine | Connection | None = None,
        *,
        router: ReplicaRouter | AsyncReplicaRouter,
        primary: Engine,
        replicas: Mapping[str, Engine],
        mode: ReadMode | None = None,
        **kwargs: Any,
    ) -> None:
        names = {name for name, _ in router.settings.replica_dsns}
        missing = names - set(replicas)
        if missing:
            raise ConfigurationError(f"RoutingSession needs an engine for every replica; missing: {sorted(missing)}")
        super().__init__(bind=primary if bind is None else bind, **kwargs)
        self._readscale_router = router
        self._readscale_engines: dict[str, Engine] = {PRIMARY: primary, **replicas}
        self._readscale_mode = mode
        self._readscale_node: str | None = None
        self._readscale_fill: object | None = None
        self._readscale_wrote = False
        for name, engine in self._readscale_engines.items():
            _track(engine, router, name)

    def get_bind(self, mapper: Any = None, *, clause: Any = None, bind: Any = None, **kwargs: Any) -> Any:
        if bind is not None:
            return bind
        if self._readscale_wrote or self._flushing or _writes(clause):
            self._readscale_wrote = True
            report_primary_read()  # a cache fill running this read learns its source
            return self._readscale_engines[PRIMARY]
        fill = current_fill()
        if self._readscale_node is None:
            self._readscale_node = self._route()  # routed for the fill, if any (readscale.cache)
            self._readscale_fill = fill
        elif fill is not None and fill is not self._readscale_fill:
            # The node was chosen before this cache fill began: its freshness for the fill
            # is unknown unless it is the primary (the fill is refused, visibly).
            if self._readscale_node == PRIMARY:
                report_primary_read()
            else:
                report_unknown_read()
        return self._readscale_engines[self._readscale_node]

    def _route(self) -> str:
        router = self._readscale_router
        mode = current_mode() or self._readscale_mode
        if isinstance(router, AsyncReplicaRouter):
            return str(await_only(router.route_read(mode)))
        return router.route_read(mode)

    def _readscale_committed(self) -> None:
        if not self._readscale_wrote:
            return
        router = self._readscale_router
        if isinstance(router, AsyncReplicaRouter):
            await_only(router.observe_commit())
        else:
            router.observe_commit()


@event.listens_for(RoutingSession, "after_commit")
def _learn_position(session: Session) -> None:
    if isinstance(session, RoutingSession):
        session._readscale_committed()


@event.listens_for(RoutingSession, "after_transaction_end")
def _forget_node(session: Session, transaction: SessionTransaction) -> None:
    if isinstance(session, RoutingSession) and transaction.parent is None:
        session._readscale_node = None
        session._readscale_wrote = False


def routing_sessionmaker(
    router: ReplicaRouter,
    *,
    primary: Engine,
    replicas: Mapping[str, Engine],
    mode: ReadMode | None = None,
    **kwargs: Any,
) -> sessionmaker[RoutingSession]:
    """A sessionmaker of :class:`RoutingSession` over one engine per node."""
    return sessionmaker(class_=RoutingSession, router=router, primary=primary, replicas=replicas, mode=mode, **kwargs)


def async_routing_sessionmaker(
    router: AsyncReplicaRouter,
    *,
    primary: AsyncEngine,
    replicas: Mapping[str, AsyncEngine],
    mode: ReadMode | None = None,
    **kwargs: Any,
) -> async_sessionmaker[AsyncSession]:
    """An async_sessionmaker whose sessions route like :class:`RoutingSession`."""
    return async_sessionmaker(
        sync_session_class=RoutingSession,
        router=router,
        primary=primary.sync_engine,
        replicas={name: engine.sync_engine for name, engine in replicas.items()},
        mode=mode,
        **kwargs,
    )
