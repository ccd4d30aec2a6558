"""Read-your-writes in a real Flask app through readscale's WSGI token middleware, the
twin of the ASGI one (tests/starlette/test_causal.py): the token travels in a cookie
(browsers) or a header (services), beside Flask's own signed session cookie and the
other cookies a browser carries, and a session's read after its write is served by a
replica that has replayed it (here: the primary, as both replicas are paused)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask, jsonify, session
from flask.testing import FlaskClient

from readscale import ReplicaRouter, TokenSigner
from readscale.flask import CausalTokenMiddleware
from readscale.replicas import DEFAULT_COOKIE, current_context
from readscale.stack import Stack
from tests.replica_helpers import restore_replicas, router_settings

pytestmark = pytest.mark.stack
SIGNER = TokenSigner(b"test secret for the flask middleware")
HEADER = "Readscale-Token"
# What a browser sends besides the two cookies that matter: analytics cookies with
# dots and quotes, a cookie without a value, one that is not name=value at all.
OTHER_COOKIES = ("_ga", "GA1.2.3.4"), ("theme", '"dark"'), ("consent", "")


def build_app(router: ReplicaRouter, **options: Any) -> Flask:
    app = Flask(__name__)
    app.secret_key = "flask session secret"

    @app.post("/write/<value>")
    def write(value: str) -> Any:
        with router.write() as conn:
            conn.execute("UPDATE flask_probe SET v = %s WHERE id = 1", (value,))
        session["user"] = "ada"  # Flask's own session cookie is set by the same response
        return jsonify(wrote=value)

    @app.get("/read")
    def read() -> Any:
        row = router.fetch_one("SELECT v FROM flask_probe WHERE id = 1")
        return jsonify(v=row[0] if row else None, user=session.get("user"))

    @app.get("/whoami")
    def whoami() -> Any:
        context = current_context()
        assert context is not None, "every request runs in its own causal context"
        return jsonify(lsn=None if context.token is None else context.token.lsn)

    app.wsgi_app = CausalTokenMiddleware(app.wsgi_app, signer=SIGNER, **options)  # type: ignore[method-assign]
    return app


def browser(app: Flask) -> FlaskClient:
    client = app.test_client()
    for name, value in OTHER_COOKIES:
        client.set_cookie(name, value)
    return client


@pytest.fixture
def paused_stack(pg_stack: Stack) -> Iterator[Stack]:
    restore_replicas(pg_stack)
    try:
        yield pg_stack
    finally:
        restore_replicas(pg_stack)


@pytest.fixture
def router(paused_stack: Stack) -> Iterator[ReplicaRouter]:
    with ReplicaRouter(router_settings(paused_stack, wait_budget=0.05)) as router:
        with router.write() as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS flask_probe (id int PRIMARY KEY, v text)")
            conn.execute("INSERT INTO flask_probe VALUES (1, 'initial') ON CONFLICT (id) DO UPDATE SET v = 'initial'")
        restore_replicas(paused_stack)  # both replicas have the table before the test pauses them
        yield router


def test_a_flask_session_reads_its_write_with_sessions_on_and_other_cookies(
    paused_stack: Stack, router: ReplicaRouter
) -> None:
    paused_stack.pause_replay("r1")
    paused_stack.pause_replay("r2")
    client = browser(build_app(router))
    written = client.post("/write/mine")
    assert written.status_code == 200
    set_cookies = written.headers.getlist("Set-Cookie")
    assert any(c.startswith(f"{DEFAULT_COOKIE}=") for c in set_cookies), set_cookies
    assert any(c.startswith("session=") for c in set_cookies), "Flask's session cookie too"
    assert client.get_cookie(DEFAULT_COOKIE) is not None
    assert client.get("/read").get_json() == {"v": "mine", "user": "ada"}, "the cookie brought the token back"
    assert client.get("/read").get_json() == {"v": "mine", "user": "ada"}, "and again: the session keeps it"
    stranger = browser(build_app(router))
    assert stranger.get("/read").get_json() == {"v": "initial", "user": None}, "no token: a paused replica"


def test_a_service_carries_the_token_in_a_header_beside_flask_session_cookies(
    paused_stack: Stack, router: ReplicaRouter
) -> None:
    paused_stack.pause_replay("r1")
    paused_stack.pause_replay("r2")
    app = build_app(router)
    service = browser(app)
    written = service.post("/write/from-upstream")
    token = written.headers.get(HEADER)
    assert token is not None, "a write answers with the token in the header"
    service.delete_cookie(DEFAULT_COOKIE)
    assert service.get_cookie(DEFAULT_COOKIE) is None
    assert service.get("/read", headers={HEADER: token}).get_json() == {"v": "from-upstream", "user": "ada"}
    assert service.get("/read").get_json() == {"v": "initial", "user": "ada"}, "without the token: a paused replica"


def test_a_forged_cookie_is_a_new_session_and_is_cleared(paused_stack: Stack, router: ReplicaRouter) -> None:
    client = browser(build_app(router))
    client.set_cookie(DEFAULT_COOKIE, "forged.token")
    response = client.get("/whoami")
    assert response.status_code == 200
    assert response.get_json() == {"lsn": None}
    assert any(c.startswith(f"{DEFAULT_COOKIE}=;") for c in response.headers.getlist("Set-Cookie"))
