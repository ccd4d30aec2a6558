"""The response cache for ASGI apps (Starlette, FastAPI): put it outside
:class:`HttpCacheMiddleware` (``app.add_middleware`` after it), so it stores the response
with the fields the edge gets::

    cache = AsyncCache(RedisBackend(...), l1=MemoryStore(10_000), purger=AsyncVarnishPurger(...))
    app.add_middleware(HttpCacheMiddleware, settings=settings)
    app.add_middleware(ResponseCacheMiddleware, cache=cache, settings=settings)   # outermost

A route is cached when its declared policy (``@http_policy``) is ``public`` with a
shared freshness (``edge_max_age``, else ``max_age``); the rules are in
``readscale._core.http.stored``. The route is found before the handler runs by asking
the app's router which route matches (``scope["app"].router``, which Starlette and
FastAPI set); a route it cannot find (a mounted sub-app) is passed through.
"""

from __future__ import annotations

from typing import Any

from readscale._async.cache.cache import AsyncCache
from readscale._async.http.response_cache import (
    DEFAULT_STORAGE,
    AsyncResponseCache,
    Rendered,
    ResponseRequest,
    Served,
)
from readscale._core.cache.policy import CachePolicy
from readscale._core.http import HttpPolicy, HttpSettings, carried_identity, parse_conditionals
from readscale.errors import HeaderError
from readscale.http._context import CONTEXT_KEY, HttpContext, policy_of
from readscale.starlette._http import ASGIApp, Message, Receive, Scope, Send, _field_reader

_CONDITIONAL = frozenset({b"if-none-match", b"if-match", b"if-modified-since", b"if-unmodified-since"})


def _route_policy(scope: Scope, app: ASGIApp) -> HttpPolicy | None:
    """The declared policy of the route the router would pick for ``scope``."""
    router = getattr(scope.get("app"), "router", None) or getattr(app, "router", None)
    routes = getattr(router, "routes", None)
    if not routes:
        return None
    from starlette.routing import Match

    for route in routes:
        match, child = route.matches(scope)
        if match is Match.FULL:
            return policy_of(child.get("endpoint"))
    return None


class ResponseCacheMiddleware:
    """Serve stored public responses; store the ones a shared cache may keep.

    ``cache`` (an :class:`AsyncCache`) or ``response_cache`` (an
    :class:`AsyncResponseCache` over it, to share its counters); ``settings``: the
    :class:`HttpSettings` of the app's ``HttpCacheMiddleware`` (its identity fields and
    ignored cookies say which requests are anonymous).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        cache: AsyncCache | None = None,
        response_cache: AsyncResponseCache | None = None,
        settings: HttpSettings | None = None,
        storage: CachePolicy = DEFAULT_STORAGE,
    ) -> None:
        if response_cache is None:
            if cache is None:
                from readscale.errors import ConfigurationError

                raise ConfigurationError("ResponseCacheMiddleware needs cache= (an AsyncCache) or response_cache=")
            response_cache = AsyncResponseCache(cache, storage=storage)
        self.app = app
        self.responses = response_cache
        self.settings = settings or HttpSettings()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "GET":
            await self.app(scope, receive, send)
            return
        raw = list(scope["headers"])
        field = _field_reader(raw)
        names = frozenset(k.decode("latin-1") for k, _ in raw)
        identity = carried_identity(self.settings, names & self.settings.identity_fields, field("cookie"))
        forwarded = next((n for n in ("x-forwarded-proto", "forwarded") if n in names), None)
        try:
            conditionals = parse_conditionals(field)
        except HeaderError:
            await self.app(scope, receive, send)  # the HTTP middleware answers 400
            return
        request = ResponseRequest(
            "GET", _url(scope, field), _route_policy(scope, self.app), field, identity, forwarded, conditionals
        )
        plan = self.responses.plan(request)
        if plan is None:
            await self.app(scope, receive, send)
            return
        # The handler runs without the request's preconditions: the cache needs the whole
        # response, and answers them itself from the stored validators.
        inner_headers = [pair for pair in raw if pair[0] not in _CONDITIONAL]
        # A response that streams or is over max_body is never stored: the first run for
        # this request sends it to the client as it comes, instead of buffering it whole.
        # Later runs (a stale entry's background refresh) have no client: they stop
        # buffering past max_body.
        claimed = False
        streamed = False

        async def run() -> Rendered:
            nonlocal claimed, streamed
            inner: Scope = dict(scope)
            inner["headers"] = list(inner_headers)
            client = None if claimed else send
            claimed = True
            rendered, sent = await _render(self.app, inner, self.responses.max_body, client)
            streamed = streamed or sent
            return rendered

        served = await self.responses.serve(request, plan, run)
        if streamed:
            return
        claimed = True
        await _send(send, served)


def _url(scope: Scope, field: Any) -> str:
    host = field("host") or ""
    query = scope.get("query_string") or b""
    path = scope.get("root_path", "") + scope.get("path", "")
    url = f"{scope.get('scheme', 'http')}://{host}{path}"
    return url + "?" + query.decode("latin-1") if query else url


async def _render(app: ASGIApp, scope: Scope, max_body: int, client: Send | None) -> tuple[Rendered, bool]:
    """Run the app for ``scope`` and collect its whole response; one that streams (no
    Content-Length) or is over ``max_body`` goes to ``client`` as it comes (True: sent),
    or, with no client, is dropped past ``max_body``: neither is stored."""
    import anyio

    start: Message | None = None
    chunks: list[bytes] = []
    size = 0
    passing = False  # the response goes to the client as it comes
    over = False  # not storable and no client: the body is dropped
    requested = False
    done = anyio.Event()

    async def receive() -> Message:
        # As a server does: the (empty) GET body once, then nothing until the response is
        # over, then a disconnect. Answering http.request forever would spin an app that
        # listens for the disconnect (StreamingResponse) without ever yielding the loop.
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await done.wait()
        return {"type": "http.disconnect"}

    async def pass_through() -> Send | None:
        """Stop buffering: the client, once the start is sent to it; None, no client."""
        nonlocal passing, over
        chunks.clear()
        if client is None:
            over = True
            return None
        passing = True
        assert start is not None
        await client(start)
        return client

    async def send(message: Message) -> None:
        nonlocal start, size
        if message["type"] == "http.response.start":
            start = message
            length = next(
                (bytes(v) for k, v in start.get("headers", ()) if bytes(k).lower() == b"content-length"), None
            )
            if length is None or not length.strip().isdigit() or int(length) > max_body:
                await pass_through()
        elif message["type"] == "http.response.body":
            if not message.get("more_body", False):
                done.set()
            if passing:
                assert client is not None
                await client(message)
                return
            if over:
                return
            body = message.get("body", b"")
            size += len(body)
            if size > max_body:
                held = b"".join(chunks)
                target = await pass_through()
                if target is not None:
                    more = message.get("more_body", False)
                    await target({"type": "http.response.body", "body": held + body, "more_body": more})
                return
            chunks.append(body)

    try:
        await app(scope, receive, send)
    finally:
        done.set()
    if start is None:
        return Rendered(500, (("cache-control", "no-store"), ("content-length", "0")), b""), False
    raw = start.get("headers", ())
    fields = tuple((bytes(k).decode("latin-1").lower(), bytes(v).decode("latin-1")) for k, v in raw)
    if passing or over:  # never stored (no-store makes the driver refuse it)
        return Rendered(int(start["status"]), (*fields, ("cache-control", "no-store")), b""), passing
    ctx = scope.get(CONTEXT_KEY)
    tags: tuple[str, ...] = ()
    if isinstance(ctx, HttpContext):
        policy = ctx.policy
        tags = (policy.tags if policy is not None else ()) + ctx.tags
    return Rendered(int(start["status"]), fields, b"".join(chunks), tags), False


async def _send(send: Send, served: Served) -> None:
    fields = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in served.fields if k != "content-length"]
    if not served.drop_body or served.status != 304:
        fields.append((b"content-length", str(len(served.body)).encode("ascii")))
    await send({"type": "http.response.start", "status": served.status, "headers": fields})
    await send({"type": "http.response.body", "body": served.body, "more_body": False})


__all__ = ["ResponseCacheMiddleware"]
