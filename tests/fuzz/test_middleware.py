"""The HTTP middleware under fuzzed request headers (Hypothesis): whatever a client sends
in the fields readscale reads, the answer is a response (200, 304, 412, or a 400 for a
malformed precondition), never an exception and never a 500. Bounded in examples."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from readscale.http import HttpSettings
from readscale.starlette import HttpCacheMiddleware
from tests.django.test_http import django_client
from tests.flask.test_http import flask_client
from tests.starlette.test_http import make_app

FIELDS = [
    "if-none-match",
    "if-match",
    "if-modified-since",
    "if-unmodified-since",
    "cookie",
    "authorization",
    "accept-language",
    "x-forwarded-host",
    "forwarded",
    "cache-control",
    "readscale-token",
]
PRECONDITIONS = {"if-none-match", "if-match"}
ALLOWED = {200, 304, 400, 412}
FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

near_valid = st.sampled_from(
    ['"a"', 'W/"a"', "*", '"a", W/"b"', "Sun, 06 Nov 1994 08:49:37 GMT", "max-age=0", "session=1", "fr"]
)
latin1 = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=255), max_size=60)
# What a WSGI server or Django can hand over: latin-1 text, no CR/LF (a server splits there).
latin1_line = st.text(
    alphabet=st.characters(min_codepoint=0, max_codepoint=255, blacklist_characters="\r\n"), max_size=60
)
raw_values = st.one_of(st.binary(max_size=60), latin1.map(lambda t: t.encode("latin-1")), near_valid.map(str.encode))
raw_headers = st.lists(st.tuples(st.sampled_from(FIELDS), raw_values), max_size=6)
text_headers = st.dictionaries(st.sampled_from(FIELDS), st.one_of(latin1_line, near_valid), max_size=6)
paths = st.sampled_from(["/lang", "/versioned", "/everything", "/user", "/missing"])


def _check(status: int, names: set[str], *, missing: bool = False) -> None:
    assert status in (ALLOWED | {404} if missing else ALLOWED), status
    if status == 400:
        assert names & PRECONDITIONS, "only a malformed precondition is refused"


@FUZZ
@given(headers=raw_headers, path=paths, method=st.sampled_from(["GET", "HEAD"]))
@pytest.mark.anyio
async def test_asgi_never_answers_500_whatever_the_headers(
    headers: list[tuple[str, bytes]], path: str, method: str
) -> None:
    client = make_app()
    app = client._transport.app  # type: ignore[attr-defined]
    sent: list[dict[str, Any]] = []
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"t"), *((name.encode(), value) for name, value in headers)],
        "client": ("10.0.0.9", 1234),
        "server": ("t", 80),
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    await client.aclose()
    start = next(m for m in sent if m["type"] == "http.response.start")
    _check(start["status"], {name for name, _ in headers}, missing=path == "/missing")
    fields = {k.decode().lower(): v.decode("latin-1") for k, v in start["headers"]}
    if start["status"] == 400:
        assert fields["cache-control"] == "no-store"
        assert fields["x-content-type-options"] == "nosniff"


@FUZZ
@given(headers=text_headers, path=st.sampled_from(["/lang", "/v", "/none", "/login"]))
def test_wsgi_never_answers_500_whatever_the_headers(headers: dict[str, str], path: str) -> None:
    client = flask_client()
    response = client.get(path, headers=headers)
    _check(response.status_code, set(headers))


@FUZZ
@given(headers=text_headers, path=st.sampled_from(["/lang", "/v", "/me", "/plain"]))
def test_django_never_answers_500_whatever_the_headers(headers: dict[str, str], path: str) -> None:
    client = django_client()
    response = client.get(path, headers=headers)
    _check(response.status_code, set(headers))


@pytest.mark.anyio
async def test_a_malformed_precondition_is_a_400_that_names_the_field_and_escapes_the_value() -> None:
    app = HttpCacheMiddleware(_plain_app, settings=HttpSettings())
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/", "headers": [(b"if-none-match", b"<script>\x00\xe9")]}
    await app(scope, _receive, send)
    assert sent[0]["status"] == 400
    body = sent[1]["body"].decode("utf-8")
    assert "If-None-Match" in body
    assert "\\x00" in body and "\x00" not in body, "control characters are shown escaped"


async def _plain_app(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


async def _receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}
