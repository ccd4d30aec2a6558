"""Monotonic reads across the requests of a session through the WSGI middleware (Flask and
any WSGI app; issue 12, defect 1): the cookie must carry what a request's ORM reads saw,
not what their routing guard checked. The scenario is tests/replica_helpers.py's."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from werkzeug.test import Client

from readscale import ReplicaRouter, TokenSigner
from readscale.flask import CausalTokenMiddleware
from readscale.sqlalchemy import routing_sessionmaker
from readscale.stack import Stack
from tests.replica_helpers import (
    LATE,
    MONOTONIC_TABLE,
    READ_SQL,
    monotonic_sessions_in_threads,
    prepare_monotonic,
    r2_delayed,
    router_settings,
)

pytestmark = [pytest.mark.stack, pytest.mark.chaos]
SIGNER = TokenSigner(b"test secret for the wsgi middleware")


def url(dsn: str) -> str:
    return dsn.replace("postgresql://", "postgresql+psycopg://", 1)


def build_app(router: ReplicaRouter, make_session: Callable[[], Any]) -> Any:
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ["PATH_INFO"]
        if path == "/sign-in":  # any write starts a session that keeps its token
            with router.write() as conn:
                conn.execute(f"UPDATE {MONOTONIC_TABLE} SET n = n WHERE id = -1")
            body: dict[str, Any] = {}
        elif path == "/late":  # an ORM transaction whose last statement runs late
            with make_session() as session:
                session.execute(text(READ_SQL)).one()
                time.sleep(LATE)
                n, port = session.execute(text(READ_SQL)).one()
            body = {"n": n, "port": port}
        else:
            row = router.fetch_one(READ_SQL)
            assert row is not None
            body = {"n": row[0], "port": row[1]}
        start_response("200 OK", [("Content-Type", "application/json")])
        return [json.dumps(body).encode()]

    return CausalTokenMiddleware(app, signer=SIGNER)


@pytest.fixture
def monotonic_stack(pg_stack: Stack) -> Iterator[Stack]:
    prepare_monotonic(pg_stack)
    with r2_delayed(pg_stack):
        yield pg_stack


def test_the_next_request_never_reads_older_data_than_the_last_one_saw(monotonic_stack: Stack) -> None:
    stack = monotonic_stack
    primary = create_engine(url(stack.primary.dsn), pool_size=20)
    replicas = {r.name: create_engine(url(r.dsn), pool_size=20) for r in stack.replicas}
    settings = router_settings(stack, wait_budget=1.0, max_pool_size=20, poll_interval=0.05)
    with ReplicaRouter(settings) as router:
        app = build_app(router, routing_sessionmaker(router, primary=primary, replicas=replicas))
        browsers: dict[int, Client] = {}

        def get(i: int, where: str) -> tuple[Any, Any]:
            browser = browsers.get(i)
            if browser is None:
                browser = browsers[i] = Client(app)
                assert browser.post("/sign-in").status_code == 200
            body = browser.get(where).json
            assert body is not None
            return body["n"], body["port"]

        history = monotonic_sessions_in_threads(stack, lambda i: get(i, "/late"), lambda i: get(i, "/read"))
    primary.dispose()
    for engine in replicas.values():
        engine.dispose()
    assert history.would_go_back() > 0, history.summary()
    assert history.go_backs() == [], history.summary()
