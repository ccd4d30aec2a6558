"""Acceptance (issue 12, defect 5): where readscale runs a fill's read, the fill knows its
source by itself; where it cannot, a refused fill is visible (a metric per cause and one
log line with structured fields), and the loader has an API to declare its source.

Before: a loader reading the primary itself had its fills refused under every tombstone,
silently; and a SQLAlchemy session routed to a lagging replica before the fill began
stored that replica's old row once the tombstone had gone.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from sqlalchemy import Integer, String, create_engine, select
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from readscale import NO_VALUE, RedisSettings, ReplicaRouter, causal_context
from readscale._core.cache.policy import CachePolicy, Tier
from readscale._core.postgres.lsn import parse_lsn
from readscale._sync.backends.redis import RedisBackend
from readscale._sync.cache.cache import Cache
from readscale.cache import report_primary_read
from readscale.sqlalchemy import routing_sessionmaker
from readscale.stack import Stack
from tests.replica_helpers import restore_replicas, router_settings

pytestmark = pytest.mark.stack

POLICY = CachePolicy(name="sources", ttl=300.0, tiers=frozenset({Tier.L2}))


def new_table(dsn: str) -> str:
    table = f"src_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, value text)")
        conn.execute(f"INSERT INTO {table} VALUES (1, 'v1')")
    return table


def change(dsn: str, table: str, value: str) -> int:
    """Update the row outside readscale; the commit's position."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"UPDATE {table} SET value = %s WHERE id = 1", (value,))
        row = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
    assert row is not None
    return parse_lsn(row[0])


def read_primary(dsn: str, table: str) -> str:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(f"SELECT value FROM {table} WHERE id = 1").fetchone()
    assert row is not None
    return str(row[0])


def new_cache(redis_url: str, **options: object) -> Cache:
    return Cache(
        RedisBackend(RedisSettings(url=redis_url)), policy=POLICY, prefix=f"src{uuid.uuid4().hex[:6]}:", **options
    )  # type: ignore[arg-type]


def test_a_loader_reading_the_primary_itself_is_refused_visibly_until_it_declares(
    pg_primary_dsn: str, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    table = new_table(pg_primary_dsn)
    cache = new_cache(redis_url)
    lsn = change(pg_primary_dsn, table, "v2")
    cache.invalidate("item:1", lsn=lsn)

    def undeclared() -> str:
        return read_primary(pg_primary_dsn, table)

    caplog.set_level(logging.DEBUG, logger="readscale.cache")
    for _ in range(3):
        assert cache.get_or_load("item:1", undeclared) == "v2"
    assert cache.stats.loader.fills_refused_undeclared_source == 3
    assert cache.stats.loader.fills_refused == 3
    warned = [r for r in caplog.records if r.levelno >= logging.WARNING and getattr(r, "cause", None)]
    assert len(warned) == 1, "one log line per cause"
    record = warned[0]
    assert record.cause == "undeclared_source"  # type: ignore[attr-defined]
    assert record.key == cache.key("item:1")  # type: ignore[attr-defined]
    assert record.floor_lsn is not None  # type: ignore[attr-defined]
    assert "report_primary_read" in record.getMessage()
    assert cache.get("item:1") is NO_VALUE

    def declared() -> str:
        value = read_primary(pg_primary_dsn, table)
        report_primary_read()
        return value

    assert cache.get_or_load("item:1", declared) == "v2"
    assert cache.get("item:1") == "v2"
    cache.close()

    # A cache whose loaders all read the primary says so once.
    primary_loaders = new_cache(redis_url, loader_source="primary")
    primary_loaders.invalidate("item:1", lsn=change(pg_primary_dsn, table, "v3"))
    assert primary_loaders.get_or_load("item:1", undeclared) == "v3"
    assert primary_loaders.stats.loader.fills_refused == 0
    assert primary_loaders.get("item:1") == "v3"
    primary_loaders.close()


@pytest.fixture
def stack(pg_stack: Stack) -> Iterator[Stack]:
    restore_replicas(pg_stack)
    try:
        yield pg_stack
    finally:
        restore_replicas(pg_stack)


def test_reads_readscale_runs_declare_themselves(stack: Stack, redis_url: str) -> None:
    """The router's fallback to the primary, and write-through, need no declaration."""
    table = new_table(stack.primary.dsn)
    cache = new_cache(redis_url)
    with ReplicaRouter(router_settings(stack, wait_budget=0.05)) as router:
        stack.pause_replay("r1")
        stack.pause_replay("r2")
        with causal_context():
            with router.write() as conn:
                conn.execute(f"UPDATE {table} SET value = 'v2' WHERE id = 1")
            token = router.context.token
            assert token is not None
            cache.invalidate("item:1", lsn=token.lsn)

        def through_router() -> str:
            row = router.fetch_one(f"SELECT value FROM {table} WHERE id = 1")
            assert row is not None
            return str(row[0])

        assert cache.get_or_load("item:1", through_router) == "v2"  # no replica has it: the primary
        assert cache.get("item:1") == "v2"

        def save() -> str:
            with router.write() as conn:
                conn.execute(f"UPDATE {table} SET value = 'v3' WHERE id = 1")
            return "v3"

        with causal_context():
            assert cache.write_through("item:1", save) == "v3"
        assert cache.get("item:1") == "v3"
    assert cache.stats.loader.fills_refused == 0
    cache.close()


class Base(DeclarativeBase):
    pass


class Row(Base):
    __tablename__ = "fill_source_probe"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    value: Mapped[str] = mapped_column(String)


def url(dsn: str) -> str:
    return dsn.replace("postgresql://", "postgresql+psycopg://", 1)


def test_a_sqlalchemy_session_routed_before_the_fill_cannot_fill_from_its_replica(stack: Stack, redis_url: str) -> None:
    primary = create_engine(url(stack.primary.dsn))
    Base.metadata.drop_all(primary)
    Base.metadata.create_all(primary)
    replicas = {r.name: create_engine(url(r.dsn)) for r in stack.replicas}
    cache = new_cache(redis_url, tombstone_ttl=2.0)
    try:
        with ReplicaRouter(router_settings(stack, wait_budget=0.05)) as router:
            make_session = routing_sessionmaker(router, primary=primary, replicas=replicas)
            with causal_context(), make_session() as session:
                session.add(Row(id=1, value="v1"))
                session.commit()
            restore_replicas(stack)
            router.poll()
            stack.pause_replay("r1")
            stack.pause_replay("r2")
            with psycopg.connect(stack.primary.dsn, autocommit=True) as conn:
                conn.execute("UPDATE fill_source_probe SET value = 'v2' WHERE id = 1")
                row = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
            assert row is not None
            cache.invalidate("row:1", lsn=parse_lsn(row[0]))
            time.sleep(2.5)  # the tombstone is gone; the replicas are still paused

            with make_session() as session:
                assert session.scalar(select(Row.value).where(Row.id == 1)) == "v1"  # routed: a paused replica

                def same_transaction() -> str:
                    return str(session.scalar(select(Row.value).where(Row.id == 1)))

                assert cache.get_or_load("row:1", same_transaction) == "v1"  # what that replica has...
            assert cache.get("row:1") is NO_VALUE  # ...is not stored: it was not chosen for the fill
            assert cache.stats.loader.fills_refused_too_stale == 1

            def own_session() -> str:
                with make_session() as session:
                    return str(session.scalar(select(Row.value).where(Row.id == 1)))

            assert cache.get_or_load("row:1", own_session) == "v2"  # routed for the fill: fresh enough
            assert cache.get("row:1") == "v2"
    finally:
        cache.close()
        primary.dispose()
        for engine in replicas.values():
            engine.dispose()
