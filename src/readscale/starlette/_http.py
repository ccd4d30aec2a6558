"""ASGI middleware (Starlette, FastAPI) and the helpers a handler calls.

Put :class:`HttpCacheMiddleware` outermost (``app.add_middleware`` last, or wrap the
app), outside any compressor, so it hashes the final bytes::

    app = Starlette(routes=[...])
    app.add_middleware(HttpCacheMiddleware, settings=HttpSettings(edge="varnish"))

    @http_policy(HttpPolicy.public(60, edge_max_age=600, stale_while_revalidate=30))
    async def product(request):
        p = await repo.get(request.path_params["id"])
        add_tags(request, f"product:{p.id}")
        check_not_modified(request, etag_from=p.version)   # a 304 before rendering
        return JSONResponse(p.as_dict())

Every response leaves with a Cache-Control (``private, no-cache`` when the route
declared nothing); ``public`` is refused when the response sets a cookie or a session
token, when the request carried Authorization, or when the response varies on an
identity field the request carried; Vary holds what the route declared (see
:mod:`readscale._core.http.policy`), and a read it did not declare is logged once and
counted; a malformed If-None-Match gets a 400, never a 500.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from operator import itemgetter
from typing import Any

from readscale._core.http import (
    HttpPolicy,
    HttpSettings,
    NotModified,
    PreconditionFailed,
    carried_identity,
    parse_conditionals,
)
from readscale.errors import ConfigurationError, HeaderError
from readscale.http._context import CONTEXT_KEY, POLICY_ATTR, F, HttpContext, HttpMetrics, policy_marker, policy_of
from readscale.http._engine import ETAGS, RESPONSE_FIELD_KINDS, bad_request, finish, shared_etag, simple_plan
from readscale.http._tracker import _NAMES as _tracked_names
from readscale.http._tracker import _READS, current, tracked, tracking_cookies

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_FORWARDED_PREFIX = b"x-forwarded-"
_CONDITIONAL = frozenset({b"if-none-match", b"if-match", b"if-modified-since", b"if-unmodified-since"})
_CONDITIONAL_KIND = object()
# What the send wrapper does with the app's messages.
_HOLDING = object()  # buffering the start and the body until the ETag can be derived
_STREAMING = object()  # fields sent; pass the rest of the body through
_DISCARDING = object()  # a 304/412 ended the response; drop what the app still sends
_IDENTITY_KIND = object()
_FORWARDED_KIND = object()
_UNTRUSTED_KIND = object()  # another forwarding field: dropped unless from a trusted proxy
_SCHEME_FIELDS = (b"x-forwarded-proto", b"forwarded")
_FIELDS_MAX = 1024
_UNKNOWN: Any = object()
_SAFE_METHODS = frozenset({"GET", "HEAD"})


def _field_reader(raw: list[tuple[bytes, bytes]]) -> Any:
    """``get(name)``: the request's combined value of a field, read without tracking."""
    reader = HttpContext.__new__(HttpContext)
    reader.raw = raw
    return reader.field


class _AsgiContext(HttpContext):
    """One request's context, and the ``send`` the middleware hands the app.

    The send wrapper's state lives here rather than in a closure: a closure over the
    request's objects cost more than the rest of the wrapper. Instances come from a
    subclass made per middleware (:meth:`HttpCacheMiddleware._context_type`) that holds
    the settings as class attributes, so making one runs no Python ``__init__``.
    """

    middleware: HttpCacheMiddleware
    downstream: Send
    plain = False  # the request carried no field the middleware acts on (see __call__)
    start: Message | None = None
    chunks: list[bytes] | None = None  # a body sent in several messages, while held
    size = 0
    mode = _HOLDING

    async def send(self, message: Message) -> None:
        if self.mode is _HOLDING:
            kind = message["type"]
            if kind == "http.response.start":
                self.start = message
                return
            start = self.start
            if start is None:
                await self.downstream(message)
                return
            scope: Any = self.scope  # the request's (set while it runs)
            if kind != "http.response.body":
                # pathsend, trailers, ...: the body is not ours to see; send the fields first.
                self.mode = await self.middleware._emit(scope, self, self.downstream, start, None, more=True)
                if self.mode is _STREAMING:
                    await self.downstream(message)
                return
            body = message.get("body", b"")
            more = message.get("more_body", False)
            if not more and not self.chunks:  # the whole body in one message: the common case
                status, headers, drop = self.middleware._finish(scope, self, start, body)
                await self.downstream({"type": "http.response.start", "status": status, "headers": headers})
                # Not dropped: the app's own message goes on as it came.
                await self.downstream(
                    {"type": "http.response.body", "body": b"", "more_body": False} if drop else message
                )
                return
            if self.chunks is None:
                self.chunks = []
            self.chunks.append(body)
            self.size += len(body)
            if more and self.size <= self.settings.etag_max_bytes:
                return
            whole = b"".join(self.chunks)
            self.chunks.clear()
            self.mode = await self.middleware._emit(scope, self, self.downstream, start, whole, more=more)
            return
        if self.mode is _STREAMING:
            await self.downstream(message)
        # _DISCARDING: a 304 or 412 already ended the response; drop the rest of the body.


_first = itemgetter(0)
_second = itemgetter(1)
# A response whose fields the middleware only appends to: (policy, whether a strong ETag
# of the body is added, the plan's fields).
_Shape = tuple[HttpPolicy | None, bool, list[tuple[bytes, bytes]]]
_SHAPES_MAX = 1024


class HttpCacheMiddleware:
    """Caching fields, validators and 304s for every HTTP response of an ASGI app."""

    def __init__(
        self, app: ASGIApp, *, settings: HttpSettings | None = None, metrics: HttpMetrics | None = None
    ) -> None:
        self.app = app
        self.settings = settings or HttpSettings()
        self.metrics = metrics or HttpMetrics()
        # One dict lookup per request field tells whether the middleware cares about it.
        self._special: dict[bytes, object] = dict.fromkeys(_CONDITIONAL, _CONDITIONAL_KIND)
        self._special.update(dict.fromkeys(_SCHEME_FIELDS, _FORWARDED_KIND))
        self._special.update({f.encode("latin-1"): _IDENTITY_KIND for f in self.settings.identity_fields})
        # name -> (its TrackedName, its kind): filled as names are met, bounded.
        self._fields: dict[bytes, tuple[bytes, object]] = {}
        # name -> its TrackedName, for the names the middleware does not act on (kind None).
        self._plain: dict[bytes, bytes] = {}
        # (id(policy), status, response field names) -> _Shape, or None where finish() decides.
        self._shapes: dict[tuple[int, int, tuple[bytes, ...]], _Shape | None] = {}
        settings_ = self.settings
        # The per-request context: class attributes instead of an __init__ (object's).
        self._context_type: type[_AsgiContext] = type(
            "HttpContext",
            (_AsgiContext,),
            {
                "__init__": object.__init__,
                "__slots__": (),
                "__module__": __name__,
                "settings": settings_,
                "identity_fields": settings_.identity_fields,
                "plumbing_cookies": frozenset(settings_.ignored_cookies),
                "middleware": self,
            },
        )
        _track_starlette_reads()

    def _classify(self, name: bytes) -> tuple[bytes, object]:
        """(TrackedName, kind) of a request field name; cached for the next requests."""
        kind = self._special.get(name)
        if kind is None and (name.startswith(_FORWARDED_PREFIX) or name == b"forwarded"):
            kind = _UNTRUSTED_KIND  # P1: forwarding fields only from trusted proxies
        entry = (_tracked_names.get(name) or tracked(name), kind)
        if len(self._fields) < _FIELDS_MAX:
            self._fields[bytes(name)] = entry
            if kind is None:
                self._plain[bytes(name)] = entry[0]
        return entry

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        original = scope["headers"]  # replaced below, never changed: the context reads it
        if type(original) is not list:
            original = list(original)  # any iterable (ASGI): read twice
        ctx = self._context_type()  # type: ignore[call-arg]  # object's __init__: no arguments
        ctx.method = scope["method"]
        ctx.raw = original
        ctx.scope = scope  # the handler phase starts when the router matches an endpoint
        ctx.downstream = send
        try:
            # The common request: every field one the middleware only renames (to its
            # TrackedName), done in C; any other (a precondition, an identity or a
            # forwarding field, a name not met yet) takes the loop.
            scope["headers"] = list(
                zip(map(self._plain.__getitem__, map(_first, original)), map(_second, original), strict=True)
            )
            ctx.plain = True
        except KeyError:
            if not await self._prepare(scope, ctx, original, send):
                return
        scope[CONTEXT_KEY] = ctx
        token = _READS.set(ctx)
        try:
            await self.app(scope, receive, ctx.send)
        finally:
            _READS.reset(token)
            # Break the scope <-> context cycles: left to the cyclic collector, every
            # request's scope, context and fields lived until the next collection, and
            # the collections (a full one every few thousand requests) cost more than
            # the rest of the middleware. The scope keeps the context for outer layers.
            ctx.scope = None
            del ctx.downstream

    async def _prepare(self, scope: Scope, ctx: _AsgiContext, original: list[Any], send: Send) -> bool:
        """The request fields the middleware acts on: preconditions, identity, forwarding.
        False when it answered the request itself (a 400)."""
        settings = self.settings
        trusted = False
        if settings.trusted_proxies:
            client = scope.get("client") or ("", 0)
            trusted = client[0] in settings.trusted_proxies
        conditional: dict[str, str] | None = None
        identity: list[str] | None = None
        forwarded: str | None = None
        new_headers: list[tuple[bytes, bytes]] = []
        append = new_headers.append
        fields = self._fields
        for pair in original:
            entry = fields.get(pair[0]) or self._classify(pair[0])
            kind = entry[1]
            if kind is not None:
                if kind is _CONDITIONAL_KIND:
                    if conditional is None:
                        conditional = {}
                    key = pair[0].decode("latin-1")
                    text = pair[1].decode("latin-1")
                    conditional[key] = f"{conditional[key]}, {text}" if key in conditional else text
                elif kind is _FORWARDED_KIND:
                    # The server (uvicorn's proxy headers) may have taken the scheme from
                    # it before any middleware ran: a response then varies on it.
                    if forwarded is None or pair[0] == b"x-forwarded-proto":
                        forwarded = pair[0].decode("latin-1")
                    if not trusted:
                        continue
                elif kind is _IDENTITY_KIND:
                    if identity is None:
                        identity = [pair[0].decode("latin-1")]
                    else:
                        identity.append(pair[0].decode("latin-1"))
                elif not trusted:  # _UNTRUSTED_KIND
                    continue
            append((entry[0], pair[1]))
        if forwarded is not None:
            ctx.forwarded = forwarded
        if conditional is not None:
            try:
                ctx.conditionals = parse_conditionals(conditional.get)
            except HeaderError as exc:
                self.metrics.bump("header_errors")
                await _send_whole(send, *bad_request(exc))
                return False
        if identity is not None:
            cookie = ctx.field("cookie") if "cookie" in identity else None
            ctx.identity_present = carried_identity(settings, frozenset(identity), cookie)
            ctx.request_authorization = "authorization" in identity
        if conditional is None and identity is None and forwarded is None and len(new_headers) == len(original):
            ctx.plain = True  # only names met for the first time: nothing acted on
        scope["headers"] = new_headers
        return True

    def _finish(
        self, scope: Scope, ctx: _AsgiContext, start: Message, body: bytes | None
    ) -> tuple[int, list[tuple[bytes, bytes]], bool]:
        """The final (status, fields, drop_body) of the response ``start`` began."""
        endpoint = scope.get("endpoint")
        policy = ctx.policy
        if policy is None:
            # The router stored the matched endpoint in the (shared) scope (policy_of, inlined).
            policy = getattr(endpoint, POLICY_ATTR, None)
            if isinstance(policy, HttpPolicy):
                ctx.policy = policy
            else:
                policy = None
        session = scope.get("session")
        if session is not None and getattr(session, "accessed", False):
            # The page depends on the session, so on its cookie (Starlette >= 1.0 adds
            # Vary: Cookie itself, but only where its SessionMiddleware sits inside this
            # one; older sessions are seen through request.session, below).
            ctx.note_dependence("cookie")
        status = start["status"]
        headers = start.get("headers", ())
        if ctx.plain and not ctx.touched and body is not None and ctx.method in _SAFE_METHODS:
            # The common exchange, its decision made once per route and response shape:
            # what finish() does when the request carried nothing it acts on, the handler
            # read and declared nothing, and the response's fields are none it reads.
            key = (id(policy), status, tuple(map(_first, headers)))
            shape = self._shapes.get(key, _UNKNOWN)
            if shape is _UNKNOWN:
                shape = self._shape(policy, status, key[2])
            if shape is not None and shape[0] is policy:
                metrics = self.metrics
                metrics.responses += 1
                metrics.shared += 1
                if shape[1]:  # a strong ETag of the body
                    quoted = ETAGS.get(body) if type(body) is bytes else None  # shared_etag, inlined
                    return status, [*headers, (b"etag", quoted or shared_etag(body)), *shape[2]], False
                return status, [*headers, *shape[2]], False
        ctx.endpoint = endpoint if endpoint is not None else scope.get("path")
        return finish(ctx, self.settings, self.metrics, status, headers, body)

    def _shape(self, policy: HttpPolicy | None, status: int, names: tuple[bytes, ...]) -> _Shape | None:
        """The shape of a response finish() would only append to, or None (and cached)."""
        plan, fields = simple_plan(self.settings, policy, status)
        plain = all(name not in RESPONSE_FIELD_KINDS and name.islower() for name in names)
        quiet = plan.shared and plan.downgrade is None and not plan.undeclared and not plan.vary_names
        shape: _Shape | None = None
        if plain and quiet and status != 304:
            shape = (policy, plan.etag and 200 <= status < 300 and status != 204, fields)
        if len(self._shapes) >= _SHAPES_MAX:
            self._shapes.clear()
        self._shapes[(id(policy), status, names)] = shape
        return shape

    async def _emit(
        self, scope: Scope, ctx: _AsgiContext, send: Send, start: Message, body: bytes | None, *, more: bool
    ) -> object:
        """Send the final fields (and ``body`` unless None); returns the mode for the rest.

        ``more``: the app has more body to send after this (then no ETag is derived).
        """
        status, headers, drop = self._finish(scope, ctx, start, None if more else body)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        if drop:
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return _DISCARDING
        if body is not None:
            await send({"type": "http.response.body", "body": body, "more_body": more})
        return _STREAMING


def _track_starlette_reads() -> None:
    """Make Starlette's ``request.cookies`` and ``request.session`` tell plumbing from a
    handler's read. Installed once per process; outside a request of this middleware
    both properties behave exactly as Starlette's.

    ``cookies``: parsing the Cookie field into the dictionary is not a read (FastAPI's
    dependency solver builds it for every request, and Starlette caches it on the request
    object, so the handler's later lookups would never reach the tracked fields); each
    lookup in it is (:func:`readscale.http._tracker.tracking_cookies`).
    ``session``: reaching the session through the request is a read of the session
    cookie (Starlette < 1.0 keeps a plain dict that cannot say it was touched; its own
    middleware reaches the session through the scope, never through this property).
    """
    try:
        from starlette.requests import HTTPConnection
    except ImportError:  # pragma: no cover - starlette is the ASGI integration's extra
        return
    cookies_prop = HTTPConnection.__dict__.get("cookies")
    if isinstance(cookies_prop, property) and cookies_prop.fget is not None:
        parse = cookies_prop.fget
        if not getattr(parse, "_readscale", False):

            def cookies(self: Any) -> Any:
                rec = current()
                if rec is None:
                    return parse(self)
                found = self.__dict__.get("_cookies")
                if found is not None and getattr(found, "_readscale_rec", None) is rec:
                    return found
                rec.paused += 1
                try:
                    plain = parse(self)
                finally:
                    rec.paused -= 1
                wrapped = tracking_cookies(plain, rec)
                self._cookies = wrapped
                return wrapped

            cookies._readscale = True  # type: ignore[attr-defined]
            cookies.__doc__ = parse.__doc__
            HTTPConnection.cookies = property(cookies)  # type: ignore[method-assign,assignment]
    session_prop = HTTPConnection.__dict__.get("session")
    if isinstance(session_prop, property) and session_prop.fget is not None:
        get_session = session_prop.fget
        if not getattr(get_session, "_readscale", False):

            def session(self: Any) -> Any:
                found = get_session(self)
                rec = current()
                if rec is not None and not rec.paused:
                    rec.note_dependence("cookie")
                return found

            session._readscale = True  # type: ignore[attr-defined]
            session.__doc__ = get_session.__doc__
            HTTPConnection.session = property(session)  # type: ignore[method-assign,assignment]


async def _send_whole(send: Send, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
    raw = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


# -- helpers for handlers ---------------------------------------------------------------


def http_policy(policy: HttpPolicy | None = None, /, **kwargs: Any) -> Callable[[F], F]:
    """Declare an endpoint's caching policy: ``@http_policy(HttpPolicy.public(60))`` or
    ``@http_policy(visibility="public", max_age=60)``. The function is returned unchanged
    (its signature stays intact for FastAPI); the middleware finds the policy on the
    endpoint the router matched."""
    return policy_marker(policy, kwargs)


def _context(request: Any) -> HttpContext:
    scope = getattr(request, "scope", request)
    ctx = scope.get(CONTEXT_KEY) if isinstance(scope, MutableMapping) else None
    if not isinstance(ctx, HttpContext):
        raise ConfigurationError("no readscale HTTP context on this request: add HttpCacheMiddleware to the app")
    return ctx


def use_policy(request: Any, policy: HttpPolicy) -> None:
    """Set this response's policy from inside the handler (wins over the decorator)."""
    _context(request).policy = policy


def add_tags(request: Any, *tags: str) -> None:
    """Tag this response for purging at the edge (sent only if it is shared)."""
    _context(request).add_tags(tags)


def check_not_modified(request: Any, *, etag_from: object = None, last_modified_from: object = None) -> None:
    """Answer 304 (or 412) before rendering, from cheap validators.

    ``etag_from`` is a version (an int, a str, an aware datetime, ...): the ETag is
    derived from it and the request's path and query, so it differs per resource.
    ``last_modified_from`` is an aware datetime or epoch seconds. The final response
    carries the same validators, so the next request can be answered here again.

    Raises Starlette's ``HTTPException(304)`` (or 412), which Starlette and FastAPI turn
    into an empty response; the middleware completes its fields.
    """
    ctx = _context(request)
    scope = getattr(request, "scope", request)
    identity = scope.get("path", "")
    if scope.get("query_string"):
        identity += "?" + scope["query_string"].decode("latin-1")
    if ctx.policy is None:  # the validator folds in what the route's policy varies on
        ctx.policy = policy_of(scope.get("endpoint"))
    outcome = ctx.use_validators(identity, etag_from, last_modified_from)
    if isinstance(outcome, NotModified | PreconditionFailed):
        try:
            from starlette.exceptions import HTTPException
        except ImportError as exc:  # pragma: no cover - starlette is the ASGI integration's extra
            raise ImportError("check_not_modified needs Starlette: pip install 'readscale[starlette]'") from exc
        raise HTTPException(304 if isinstance(outcome, NotModified) else 412)
