"""The SQLAlchemy routing session, sync and async, on the stack's real replicas."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from sqlalchemy import Integer, String, create_engine, select, text, update
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from readscale import AsyncReplicaRouter, ReplicaRouter, causal_context
from readscale.sqlalchemy import RoutingSession, async_routing_sessionmaker, routing_sessionmaker
from readscale.stack import Stack
from tests.replica_helpers import (
    GAP,
    LATE,
    READ_SQL,
    MonotonicHistory,
    monotonic_sessions_in_threads,
    prepare_monotonic,
    r2_delayed,
    restore_replicas,
    router_settings,
    steady_writes,
)

pytestmark = pytest.mark.stack


class Base(DeclarativeBase):
    pass


class Item(Base):
    __tablename__ = "sa_probe"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    value: Mapped[str] = mapped_column(String)


def url(dsn: str, driver: str = "psycopg") -> str:
    return dsn.replace("postgresql://", f"postgresql+{driver}://", 1)


@pytest.fixture
def stack(pg_stack: Stack) -> Iterator[Stack]:
    engine = create_engine(url(pg_stack.primary.dsn))
    Base.metadata.drop_all(engine)
    Base.metadata.create_all(engine)
    engine.dispose()
    restore_replicas(pg_stack)
    try:
        yield pg_stack
    finally:
        restore_replicas(pg_stack)


def test_reads_see_the_sessions_commits_and_a_transaction_stays_on_one_node(stack: Stack) -> None:
    primary = create_engine(url(stack.primary.dsn))
    replicas = {r.name: create_engine(url(r.dsn)) for r in stack.replicas}
    with ReplicaRouter(router_settings(stack, wait_budget=0.05)) as router:
        make_session = routing_sessionmaker(router, primary=primary, replicas=replicas)
        with causal_context() as ctx:
            with make_session() as session:
                session.add(Item(id=1, value="first"))
                session.commit()
            assert ctx.token is not None, "the commit's position was learned"
            stack.pause_replay("r1")
            stack.pause_replay("r2")
            with make_session() as session:
                session.execute(update(Item).where(Item.id == 1).values(value="second"))
                session.commit()
            with make_session() as session:
                assert session.get(Item, 1).value == "second", "read-your-writes: replicas paused, so the primary"
            stack.resume_replay("r1")
            stack.resume_replay("r2")
            before = router.stats()
            with make_session() as session:
                for _ in range(5):
                    assert session.scalar(select(Item.value).where(Item.id == 1)) == "second"
                assert session.scalar(text("SELECT count(*) FROM sa_probe")) == 1
            after = router.stats()
            assert after.replica_reads + after.primary_reads - before.replica_reads - before.primary_reads == 1, (
                "one routing decision per transaction"
            )
            with make_session() as session:
                session.add(Item(id=2, value="in flight"))
                session.flush()
                # After a write the transaction stays on the primary: it sees its own row.
                assert session.scalar(select(Item.value).where(Item.id == 2)) == "in flight"
                session.rollback()
            with make_session() as session:
                assert session.get(Item, 2) is None
                assert session.scalar(select(Item.id).where(Item.id == 1).with_for_update()) == 1
    primary.dispose()
    for engine in replicas.values():
        engine.dispose()


def test_a_session_needs_an_engine_for_every_replica(stack: Stack) -> None:
    from readscale.errors import ConfigurationError

    primary = create_engine(url(stack.primary.dsn))
    router = ReplicaRouter(router_settings(stack))
    with pytest.raises(ConfigurationError, match="missing"):
        RoutingSession(router=router, primary=primary, replicas={})
    primary.dispose()


@pytest.mark.anyio
async def test_the_async_session_routes_through_the_async_router(stack: Stack) -> None:
    primary = create_async_engine(url(stack.primary.dsn))
    replicas = {r.name: create_async_engine(url(r.dsn)) for r in stack.replicas}
    async with AsyncReplicaRouter(router_settings(stack, wait_budget=0.05)) as router:
        make_session = async_routing_sessionmaker(router, primary=primary, replicas=replicas)
        with causal_context() as ctx:
            async with make_session() as session:
                session.add(Item(id=10, value="async"))
                await session.commit()
            assert ctx.token is not None
            stack.pause_replay("r1")
            stack.pause_replay("r2")
            async with make_session() as session:
                await session.execute(update(Item).where(Item.id == 10).values(value="async 2"))
                await session.commit()
            async with make_session() as session:
                assert await session.scalar(select(Item.value).where(Item.id == 10)) == "async 2"
        stats = router.stats()
    assert stats.primary_reads >= 1, "paused replicas: the fallback served the read-your-write"
    await primary.dispose()
    for engine in replicas.values():
        await engine.dispose()


# -- monotonic reads (issue 12, defect 1) ---------------------------------------------------
#
# A session transaction is routed once, at its first statement, and stays on that node;
# its later statements see commits the routing guard did not. The next transaction may
# be routed elsewhere: it must not land on a replica behind what the last one saw.


def late_transaction(session: Session) -> tuple[Any, Any]:
    """A transaction whose last statement runs LATE seconds after the one that routed it."""
    session.execute(text(READ_SQL)).one()
    time.sleep(LATE)
    value, port = session.execute(text(READ_SQL)).one()
    return value, port


def quick_transaction(session: Session) -> tuple[Any, Any]:
    value, port = session.execute(text(READ_SQL)).one()
    return value, port


@pytest.fixture
def monotonic_stack(stack: Stack) -> Iterator[Stack]:
    prepare_monotonic(stack)
    with r2_delayed(stack):
        yield stack


def test_a_session_never_reads_older_data_than_its_last_transaction_saw(monotonic_stack: Stack) -> None:
    stack = monotonic_stack
    primary = create_engine(url(stack.primary.dsn), pool_size=20)
    replicas = {r.name: create_engine(url(r.dsn), pool_size=20) for r in stack.replicas}
    settings = router_settings(stack, wait_budget=1.0, max_pool_size=20, poll_interval=0.05)
    with ReplicaRouter(settings) as router:
        make_session = routing_sessionmaker(router, primary=primary, replicas=replicas)

        def first(i: int) -> tuple[Any, Any]:
            with make_session() as session:
                return late_transaction(session)

        def second(i: int) -> tuple[Any, Any]:
            with make_session() as session:
                return quick_transaction(session)

        history = monotonic_sessions_in_threads(stack, first, second, scope=causal_context)
    primary.dispose()
    for engine in replicas.values():
        engine.dispose()
    assert history.would_go_back() > 0, history.summary()
    assert history.go_backs() == [], history.summary()


@pytest.mark.anyio
async def test_an_async_session_never_reads_older_data_than_its_last_transaction_saw(
    monotonic_stack: Stack,
) -> None:
    stack = monotonic_stack
    primary = create_async_engine(url(stack.primary.dsn), pool_size=20)
    replicas = {r.name: create_async_engine(url(r.dsn), pool_size=20) for r in stack.replicas}
    settings = router_settings(stack, wait_budget=1.0, max_pool_size=20, poll_interval=0.05)
    history = MonotonicHistory.of(stack)
    async with AsyncReplicaRouter(settings) as router:
        make_session = async_routing_sessionmaker(router, primary=primary, replicas=replicas)

        async def session(i: int) -> None:
            control = await psycopg.AsyncConnection.connect(stack.replica("r2").dsn, autocommit=True)
            try:
                with causal_context():
                    for pair in range(4):
                        async with make_session() as s:
                            await s.execute(text(READ_SQL))
                            await asyncio.sleep(LATE)
                            value, port = (await s.execute(text(READ_SQL))).one()
                        history.record(i, 2 * pair, value, port)
                        await asyncio.sleep(GAP)
                        seen = await (await control.execute(READ_SQL)).fetchone()
                        assert seen is not None
                        history.control(int(value), seen[0])
                        async with make_session() as s:
                            value, port = (await s.execute(text(READ_SQL))).one()
                        history.record(i, 2 * pair + 1, value, port)
            finally:
                await control.close()

        with steady_writes(stack):
            await asyncio.gather(*(session(i) for i in range(12)))
    await primary.dispose()
    for engine in replicas.values():
        await engine.dispose()
    assert history.would_go_back() > 0, history.summary()
    assert history.go_backs() == [], history.summary()


def test_a_statement_that_finishes_after_another_read_settled_its_node_is_still_merged(
    monotonic_stack: Stack,
) -> None:
    """One session mixing the router and an ORM transaction: the router's read settles
    the transaction's node mid-transaction; the transaction's next statement sees more,
    and the engine's hook marks it again, so the read after it cannot go back."""
    stack = monotonic_stack
    primary = create_engine(url(stack.primary.dsn), pool_size=20)
    replicas = {r.name: create_engine(url(r.dsn), pool_size=20) for r in stack.replicas}
    settings = router_settings(stack, wait_budget=1.0, max_pool_size=20, poll_interval=0.05)
    with ReplicaRouter(settings) as router:
        make_session = routing_sessionmaker(router, primary=primary, replicas=replicas)

        def first(i: int) -> tuple[Any, Any]:
            with make_session() as session:
                session.execute(text(READ_SQL)).one()
                router.fetch_one(READ_SQL)  # stays on the transaction's node: settles it
                time.sleep(LATE)
                value, port = session.execute(text(READ_SQL)).one()
            return value, port

        def second(i: int) -> tuple[Any, Any]:
            row = router.fetch_one(READ_SQL)
            assert row is not None
            return row[0], row[1]

        history = monotonic_sessions_in_threads(stack, first, second, scope=causal_context)
    primary.dispose()
    for engine in replicas.values():
        engine.dispose()
    assert history.would_go_back() > 0, history.summary()
    assert history.go_backs() == [], history.summary()
