"""readscale.fastapi on a real FastAPI app (tests/fastapi/app.py) against the project's
Redis and PostgreSQL: the lifespan opens the router's pools and starts the bus before the
first request and closes all of it at shutdown (connections counted on the servers), and
the dependencies give a session read-your-writes through the router while both replicas
are paused."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import psycopg
import pytest
import redis
from fastapi import FastAPI

from readscale import AsyncCache, RedisSettings
from readscale.backends import AsyncRedisBackend
from readscale.errors import ConfigurationError
from readscale.fastapi import CacheDep, WriteBehindDep, lifespan
from readscale.stack import Stack
from readscale.testing.appserver import AppServer
from readscale.writebehind import (
    AsyncFlusher,
    AsyncPostgresWriter,
    AsyncWriteBehind,
    FlusherSettings,
    WriteBehindSettings,
)
from tests.fastapi.app import build_app
from tests.replica_helpers import restore_replicas, wait_until

pytestmark = pytest.mark.stack
ROOT = Path(__file__).resolve().parents[2]


def unique_name() -> str:
    return f"rs-fastapi-{uuid.uuid4().hex[:8]}"


def postgres_connections(stack: Stack, name: str) -> int:
    """Sessions named ``name`` on the primary and every replica (each server lists its own)."""
    total = 0
    for server in (stack.primary, *stack.replicas):
        with psycopg.connect(server.dsn, autocommit=True) as conn:
            row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (name,)).fetchone()
            assert row is not None
            total += int(row[0])
    return total


def redis_connections(redis_url: str, name: str) -> int:
    with redis.Redis.from_url(redis_url) as client:
        return sum(1 for c in client.client_list() if c.get("name") == name)


@pytest.fixture
def paused_stack(pg_stack: Stack) -> Iterator[Stack]:
    restore_replicas(pg_stack)
    with psycopg.connect(pg_stack.primary.dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS fastapi_items (id int PRIMARY KEY, price int)")
        conn.execute("INSERT INTO fastapi_items VALUES (1, 10) ON CONFLICT (id) DO UPDATE SET price = 10")
    restore_replicas(pg_stack)  # both replicas have the table and the row before a test pauses them
    try:
        yield pg_stack
    finally:
        restore_replicas(pg_stack)


def replica_dsns(stack: Stack) -> dict[str, str]:
    return {r.name: r.dsn for r in stack.replicas}


class Lifespan:
    """Runs an ASGI app's lifespan the way a server does, and hands its state to every
    request (httpx's ASGI transport runs no lifespan and passes no state)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.state: dict[str, Any] = {}

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        await self.app({**scope, "state": dict(self.state)}, receive, send)

    async def run(self) -> AsyncIterator[None]:
        async with self.app.router.lifespan_context(self.app) as state:
            self.state = dict(state or {})
            yield


@pytest.mark.anyio
async def test_the_lifespan_opens_and_closes_everything_and_a_session_reads_its_write(
    paused_stack: Stack, redis_url: str
) -> None:
    name = unique_name()
    app = build_app(redis_url, paused_stack.primary.dsn, replica_dsns(paused_stack), name)
    served = Lifespan(app)
    async for _ in served.run():
        assert postgres_connections(paused_stack, name) >= 3, "the router's pools are open"
        assert redis_connections(redis_url, name) >= 1, "the bus subscribed at startup"
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=served), base_url="http://testserver") as c:
            assert (await c.get("/bus")).json() == {"started": True}, "before the first read"
            assert (await c.get("/items/1")).json() == {"id": 1, "price": 10}
            paused_stack.pause_replay("r1")
            paused_stack.pause_replay("r2")
            assert (await c.post("/items/1", params={"price": 11})).status_code == 200
            assert (await c.get("/items/1")).json() == {"id": 1, "price": 11}, "its own write, replicas paused"
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=served), base_url="http://testserver") as c:
            assert (await c.get("/items/1", params={"fresh": 1})).status_code == 200
    # A closed session leaves pg_stat_activity once its server process has exited, a moment
    # after the client closed it (a CI run under load still saw 1): a leaked one never does.
    wait_until(lambda: postgres_connections(paused_stack, name) == 0, timeout=5.0, what="every pool closed at shutdown")
    assert redis_connections(redis_url, name) == 0, "the bus and the cache's pool closed at shutdown"


@pytest.mark.anyio
async def test_a_route_of_an_app_started_without_the_lifespan_is_told_the_fix() -> None:
    app = FastAPI()

    @app.get("/")
    async def root(cache: CacheDep) -> dict[str, str]:
        return {}

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as client:
        with pytest.raises(ConfigurationError, match=r"lifespan=readscale\.fastapi\.lifespan"):
            await client.get("/")


def test_the_lifespan_refuses_to_open_nothing() -> None:
    with pytest.raises(ConfigurationError, match="nothing to open"):
        lifespan()


def test_under_uvicorn_the_lifespan_starts_and_stops_with_the_server(
    paused_stack: Stack, redis_url: str, tmp_path: Path
) -> None:
    name = unique_name()
    env = {
        "RS_REDIS_URL": redis_url,
        "RS_PRIMARY": paused_stack.primary.dsn,
        "RS_REPLICAS": json.dumps(replica_dsns(paused_stack)),
        "RS_CLIENT_NAME": name,
    }
    log = tmp_path / "uvicorn.log"
    server = AppServer("tests.fastapi.app:app", app_dir=ROOT, env=env, log=log, extra_args=("--lifespan", "on"))
    with server:
        assert postgres_connections(paused_stack, name) >= 3
        assert redis_connections(redis_url, name) >= 1
        with httpx.Client(base_url=server.url) as browser:
            assert browser.get("/bus").json() == {"started": True}
            paused_stack.pause_replay("r1")
            paused_stack.pause_replay("r2")
            assert browser.post("/items/1", params={"price": 12}).status_code == 200
            assert browser.get("/items/1").json() == {"id": 1, "price": 12}
    assert "readscale-test: shutdown" in log.read_text(), log.read_text()
    wait_until(lambda: postgres_connections(paused_stack, name) == 0, timeout=5, what="the server's sessions to end")
    assert redis_connections(redis_url, name) == 0


@pytest.fixture
def wb_table(pg_stack: Stack) -> Iterator[str]:
    name = f"fastapi_wb_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_stack.primary.dsn, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {name} (key text PRIMARY KEY, version bigint NOT NULL DEFAULT 0, value jsonb)")
    yield name
    with psycopg.connect(pg_stack.primary.dsn, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {name}")


@pytest.mark.anyio
async def test_the_lifespan_runs_the_flusher_and_closes_its_clients(
    pg_stack: Stack, durable_redis_url: str, wb_table: str
) -> None:
    name = unique_name()
    cache = AsyncCache(AsyncRedisBackend(RedisSettings(url=durable_redis_url, client_name=name)), prefix=f"{name}:")
    write_behind = AsyncWriteBehind(cache, WriteBehindSettings(queue=name))
    writer = AsyncPostgresWriter(pg_stack.primary.dsn, table=wb_table, application_name=name)
    flusher = AsyncFlusher(
        writer,
        RedisSettings(url=durable_redis_url, client_name=name),
        settings=FlusherSettings(block=0.05, batch_wait=0.01, consumer=name, queue=name, prefix=f"{name}:"),
    )
    app = FastAPI(lifespan=lifespan(cache=cache, write_behind=write_behind, flusher=flusher))

    @app.post("/views/{key}")
    async def count(key: str, wb: WriteBehindDep) -> dict[str, int]:
        return {"version": await wb.write_behind(key, {"n": 1})}

    served = Lifespan(app)
    async for _ in served.run():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=served), base_url="http://testserver") as c:
            assert (await c.post("/views/a")).status_code == 200
        for _ in range(200):  # the flusher runs in the lifespan's task: the row arrives by itself
            with psycopg.connect(pg_stack.primary.dsn) as conn:
                if conn.execute(f"SELECT count(*) FROM {wb_table}").fetchone() == (1,):
                    break
            await anyio.sleep(0.05)
        else:
            raise AssertionError("the flusher did not write the row")
        assert redis_connections(durable_redis_url, name) >= 2, "the cache's and the flusher's clients"
    assert redis_connections(durable_redis_url, name) == 0, "the flusher's and the cache's Redis clients closed"
    assert postgres_connections(pg_stack, name) == 0, "the writer's connection closed"
