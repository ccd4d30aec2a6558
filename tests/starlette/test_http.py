"""The ASGI (Starlette) integration, in process: the same rules as tests/flask/test_http.py and
tests/django/test_http.py, three frameworks."""

from __future__ import annotations

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from readscale.http import HttpMetrics, HttpPolicy, HttpSettings
from readscale.starlette import HttpCacheMiddleware, add_tags, check_not_modified, http_policy, use_policy

PUBLIC = HttpPolicy.public(60, edge_max_age=300)
LANG = HttpPolicy.public(60, edge_max_age=300, vary=("accept-language",))


@http_policy(LANG)
async def lang(request: Request) -> Response:
    return PlainTextResponse(request.headers.get("accept-language", "en"))


@http_policy(PUBLIC)
async def everything(request: Request) -> Response:
    return PlainTextResponse(str(len(dict(request.headers))))


@http_policy(PUBLIC)
async def forwarded(request: Request) -> Response:
    return PlainTextResponse(request.headers.get("x-forwarded-host", "none"))


async def dynamic(request: Request) -> Response:
    use_policy(request, HttpPolicy.public(5, tags=("a",)))
    add_tags(request, "b")
    return PlainTextResponse("dynamic")


@http_policy(PUBLIC)
async def streamed(request: Request) -> Response:
    async def chunks():  # type: ignore[no-untyped-def]
        for _ in range(4):
            yield b"x" * 1000

    return StreamingResponse(chunks())


@http_policy(PUBLIC)
async def versioned(request: Request) -> Response:
    check_not_modified(request, etag_from=7, last_modified_from=1_700_000_000)
    return PlainTextResponse("rendered")


@http_policy(PUBLIC)
async def user(request: Request) -> Response:
    return PlainTextResponse(request.headers.get("authorization", "-"))


def make_app(settings: HttpSettings | None = None, metrics: HttpMetrics | None = None) -> httpx.AsyncClient:
    app = Starlette(
        routes=[
            Route("/lang", lang),
            Route("/everything", everything),
            Route("/forwarded", forwarded),
            Route("/dynamic", dynamic),
            Route("/streamed", streamed),
            Route("/versioned", versioned),
            Route("/user", user),
        ]
    )
    app.add_middleware(HttpCacheMiddleware, settings=settings or HttpSettings(etag_max_bytes=2500), metrics=metrics)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=("10.0.0.9", 1234)), base_url="http://t")


@pytest.mark.anyio
async def test_asgi_declared_variance_and_identity(caplog: pytest.LogCaptureFixture) -> None:
    from readscale.http import _engine

    _engine._WARNED.clear()  # once per process: forget earlier tests' warnings
    metrics = HttpMetrics()
    async with make_app(metrics=metrics) as client:
        r = await client.get("/lang", headers={"accept-language": "fr"})
        assert (
            r.text == "fr"
            and r.headers["vary"] == "Accept-Language"
            and r.headers["cdn-cache-control"] == "max-age=300"
        )
        r = await client.get("/lang")  # declared: varies whether or not the field came
        assert r.headers["vary"] == "Accept-Language"
        r = await client.get("/everything", headers={"cookie": "s=1"})
        assert r.headers["cache-control"] == "private, no-cache", "copying every field read the user's Cookie"
        r = await client.get("/everything")
        assert r.headers["cache-control"] == "public, max-age=60", "declared variance decides the rest"
        r = await client.get("/user", headers={"authorization": "Bearer x"})
        assert r.headers["cache-control"] == "private, no-cache"
        assert "cdn-cache-control" not in r.headers
        assert r.headers["vary"] == "Authorization, Cookie"
        r = await client.get("/user")  # read Authorization undeclared: varied on, warned, counted
        assert r.headers["cache-control"] == "public, max-age=60" and r.headers["vary"] == "Authorization"
    assert metrics.snapshot()["downgraded"] == 2
    assert metrics.snapshot()["undeclared_reads"] == 3, "dict(request.headers) reads every field: warned too"
    warned = {(rec.route, rec.field) for rec in caplog.records if getattr(rec, "event", None) == "undeclared_read"}  # type: ignore[attr-defined]
    assert ("GET user", "authorization") in warned and ("GET everything", "user-agent") in warned


@pytest.mark.anyio
async def test_asgi_strict_mode_varies_on_every_read() -> None:
    async with make_app(HttpSettings(unlisted_reads="vary", etag_max_bytes=2500)) as client:
        r = await client.get("/everything", headers={"cookie": "s=1"})
        assert r.headers["cache-control"] == "private, no-cache"  # enumerating fields reads the cookie
        r = await client.get("/user")
        assert r.headers["vary"] == "Authorization"


@pytest.mark.anyio
async def test_asgi_forwarding_fields_only_from_trusted_proxies() -> None:
    async with make_app() as client:
        assert (await client.get("/forwarded", headers={"x-forwarded-host": "evil"})).text == "none"
        plain = await client.get("/everything")
        assert (await client.get("/everything", headers={"forwarded": "host=evil"})).text == plain.text
    metrics = HttpMetrics()
    async with make_app(HttpSettings(trusted_proxies=frozenset({"10.0.0.9"})), metrics) as client:
        r = await client.get("/forwarded", headers={"x-forwarded-host": "cdn.example"})
        assert r.text == "cdn.example" and metrics.undeclared_reads == 1, "an undeclared reflected field is reported"


@pytest.mark.anyio
async def test_asgi_dynamic_policy_and_tags() -> None:
    async with make_app() as client:
        r = await client.get("/dynamic")
    assert r.headers["cache-control"] == "public, max-age=5"
    assert r.headers["xkey"] == "a b"


@pytest.mark.anyio
async def test_asgi_malformed_if_none_match_is_a_400_not_a_500() -> None:
    metrics = HttpMetrics()
    async with make_app(metrics=metrics) as client:
        r = await client.get("/lang", headers={"if-none-match": 'W/"a", garbage'})
    assert r.status_code == 400
    assert "If-None-Match" in r.text and r.headers["cache-control"] == "no-store"
    assert metrics.header_errors == 1


@pytest.mark.anyio
async def test_asgi_large_streams_pass_without_etag_small_ones_get_one() -> None:
    async with make_app() as client:
        big = await client.get("/streamed")
        small = await client.get("/lang")
    assert big.content == b"x" * 4000 and "etag" not in big.headers
    assert big.headers["cache-control"] == "public, max-age=60"
    assert small.headers["etag"].startswith('"')


@pytest.mark.anyio
async def test_asgi_preconditions() -> None:
    async with make_app() as client:
        first = await client.get("/lang")
        etag = first.headers["etag"]
        assert (await client.get("/lang", headers={"if-none-match": etag})).status_code == 304
        assert (await client.get("/lang", headers={"if-match": '"other"'})).status_code == 412
        assert (await client.get("/lang", headers={"if-match": etag})).status_code == 200
        head = await client.head("/lang", headers={"if-none-match": etag})
        assert head.status_code == 304
        v = await client.get("/versioned")
        assert v.text == "rendered" and v.headers["etag"].startswith('"v')
        ims = await client.get("/versioned", headers={"if-modified-since": "Wed, 15 Nov 2023 00:00:00 GMT"})
        assert ims.status_code == 304 and ims.content == b""


@pytest.mark.anyio
async def test_asgi_a_304_on_a_stream_discards_the_rest_of_the_body() -> None:
    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        await send({"type": "http.response.start", "status": 200, "headers": [(b"etag", b'"fixed"')]})
        for _ in range(5):
            await send({"type": "http.response.body", "body": b"y" * 1000, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    wrapped = HttpCacheMiddleware(app, settings=HttpSettings(etag_max_bytes=100))
    transport = httpx.ASGITransport(app=wrapped)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        full = await client.get("/")
        cached = await client.get("/", headers={"if-none-match": '"fixed"'})
    assert full.status_code == 200 and len(full.content) == 5000 and full.headers["etag"] == '"fixed"'
    assert cached.status_code == 304 and cached.content == b""


@pytest.mark.anyio
async def test_asgi_a_request_leaves_no_reference_cycle() -> None:
    """The scope and the request's context are freed when the request ends, by reference
    counting: a scope <-> context cycle left every request to the cyclic collector, whose
    collections cost more than the rest of the middleware (issue 17)."""
    import gc
    import weakref

    from readscale.http._context import CONTEXT_KEY

    seen: list[weakref.ref[object]] = []

    @http_policy(PUBLIC)
    async def page(request: Request) -> Response:
        seen.append(weakref.ref(request.scope[CONTEXT_KEY]))
        return PlainTextResponse("page")

    app = HttpCacheMiddleware(Starlette(routes=[Route("/page", page)]))
    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    gc.collect()
    gc.disable()
    try:
        for _ in range(3):
            scope = {
                "type": "http", "method": "GET", "path": "/page", "raw_path": b"/page", "root_path": "",
                "query_string": b"", "headers": [(b"host", b"t")], "scheme": "http", "server": ("t", 80),
            }  # fmt: skip
            await app(scope, receive, send)
            del scope
        alive = sum(ref() is not None for ref in seen)
    finally:
        gc.enable()
    assert [m["status"] for m in sent if m["type"] == "http.response.start"] == [200, 200, 200]
    assert len(seen) == 3 and alive == 0, f"{alive} of 3 request contexts wait for the cyclic collector"


@pytest.mark.anyio
async def test_asgi_a_shared_body_is_hashed_once_a_private_one_every_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """The strong ETag of a public body sent again is looked up, not recomputed (issue 17:
    the hash was most of the middleware's cost); a private body is hashed every time and
    never kept. Equal bytes, equal tag: the same validator either way."""
    import uuid

    from readscale._core.http import strong_etag
    from readscale.http import _engine

    hashed: list[bytes] = []
    real = _engine.strong_etag_field

    def counting(body: bytes) -> bytes:
        hashed.append(body)
        return real(body)

    monkeypatch.setattr(_engine, "strong_etag_field", counting)
    shared_body = f"shared {uuid.uuid4()}".encode()
    private_body = f"private {uuid.uuid4()}".encode()

    @http_policy(PUBLIC)
    async def shared(request: Request) -> Response:
        return Response(shared_body)

    @http_policy(HttpPolicy.private(60))
    async def mine(request: Request) -> Response:
        return Response(private_body)

    app = Starlette(routes=[Route("/shared", shared), Route("/mine", mine)])
    app.add_middleware(HttpCacheMiddleware)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        shared_tags = [(await client.get("/shared")).headers["etag"] for _ in range(3)]
        private_tags = [(await client.get("/mine")).headers["etag"] for _ in range(3)]
    assert shared_tags == [strong_etag(shared_body).render()] * 3
    base = strong_etag(private_body).opaque  # with the variant of identity folded in
    assert len(set(private_tags)) == 1 and private_tags[0].startswith(f'"{base}.')
    assert hashed.count(shared_body) == 1, "a public body sent again was hashed again"
    assert hashed.count(private_body) == 3
    assert shared_body in _engine.ETAGS and private_body not in _engine.ETAGS


@pytest.mark.anyio
async def test_asgi_the_shortest_path_sends_what_finish_decides(monkeypatch: pytest.MonkeyPatch) -> None:
    """The decision cached per route and response shape gives exactly the fields,
    status and body the general path (``finish``) gives, request after request."""

    @http_policy(PUBLIC)
    async def public(request: Request) -> Response:
        return PlainTextResponse("public page")

    async def undeclared(request: Request) -> Response:
        return PlainTextResponse("no policy")

    @http_policy(HttpPolicy.private(30))
    async def private(request: Request) -> Response:
        return PlainTextResponse("private page")

    @http_policy(PUBLIC)
    async def empty(request: Request) -> Response:
        return Response(status_code=204)

    @http_policy(PUBLIC)
    async def sets_fields(request: Request) -> Response:
        return PlainTextResponse("own", headers={"cache-control": "max-age=5", "set-cookie": "a=1", "vary": "x-a"})

    @http_policy(PUBLIC)
    async def own_etag(request: Request) -> Response:
        return PlainTextResponse("own etag", headers={"etag": '"mine"'})

    @http_policy(PUBLIC)
    async def reads(request: Request) -> Response:
        return PlainTextResponse(request.headers.get("x-lang", "-"))

    @http_policy(PUBLIC)
    async def tagged(request: Request) -> Response:
        add_tags(request, "t1")
        return PlainTextResponse("tagged")

    routes = [
        Route("/public", public, methods=["GET", "HEAD", "POST"]),
        Route("/undeclared", undeclared),
        Route("/private", private),
        Route("/empty", empty),
        Route("/sets", sets_fields),
        Route("/own", own_etag),
        Route("/reads", reads),
        Route("/tagged", tagged),
        Route("/versioned", versioned),
        Route("/streamed", streamed),
    ]
    requests: list[tuple[str, str, dict[str, str]]] = []
    for path in ("/public", "/undeclared", "/private", "/empty", "/sets", "/own", "/reads", "/tagged", "/versioned"):
        requests += [
            ("GET", path, {}),
            ("GET", path, {"x-lang": "fr"}),
            ("GET", path, {"cookie": "sid=1"}),
            ("GET", path, {"authorization": "Bearer x"}),
            ("GET", path, {"x-forwarded-proto": "https"}),
        ]
    requests += [("HEAD", "/public", {}), ("POST", "/public", {}), ("GET", "/missing", {}), ("GET", "/streamed", {})]
    public_etag = ""

    async def run(shortest: bool) -> list[tuple[int, list[tuple[str, str]], bytes]]:
        nonlocal public_etag
        app = Starlette(routes=routes)
        app.add_middleware(HttpCacheMiddleware, settings=HttpSettings(etag_max_bytes=2500))
        if not shortest:
            monkeypatch.setattr(HttpCacheMiddleware, "_shape", lambda self, policy, status, names: None)
        out = []
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            for _ in range(2):
                for method, path, headers in requests:
                    r = await client.request(method, path, headers=headers)
                    out.append((r.status_code, sorted(r.headers.multi_items()), r.content))
                public_etag = (await client.get("/public")).headers["etag"]
                r = await client.get("/public", headers={"if-none-match": public_etag})
                out.append((r.status_code, sorted(r.headers.multi_items()), r.content))
        monkeypatch.undo()
        return out

    shortest, general = await run(True), await run(False)
    assert shortest == general
    assert shortest[-1][0] == 304
