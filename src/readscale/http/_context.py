"""Per-request state shared by the middleware and the helpers a handler calls.

The middleware creates one :class:`HttpContext` per request and stores it where the
framework keeps request state (the ASGI scope, the WSGI environ, the Django request).
Handlers reach it through the framework helpers (``use_policy``, ``add_tags``,
``check_not_modified``) and never need to import this module.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

from readscale._core.http import (
    NO_CONDITIONALS,
    Conditionals,
    EntityTag,
    HeaderPlan,
    HttpPolicy,
    HttpSettings,
    Outcome,
    Validators,
    evaluate,
    expected_vary,
    held_variant,
    variant_etag,
    variant_key,
    version_etag,
)
from readscale.errors import ConfigurationError
from readscale.http._tracker import Reads

log = logging.getLogger("readscale.http")

CONTEXT_KEY = "readscale.http"
POLICY_ATTR = "__readscale_http_policy__"

F = TypeVar("F", bound=Callable[..., Any])


class HttpContext(Reads):
    """What one request's handler declared and read. Mutable, one per request.

    What it read (``reads``, ``walked``, ``identity_reads``): see :class:`Reads`.
    ``field(name)``: the request's combined value of a
    field, read without tracking (for validators). ``route``: names the route in
    warnings."""

    # Class-level defaults: a request that declares nothing costs one small instance dict.
    policy: HttpPolicy | None = None
    tags: tuple[str, ...] = ()
    identity_present: frozenset[str] = frozenset()
    request_authorization: bool = False
    forwarded: str | None = None
    etag: EntityTag | None = None
    etag_base: EntityTag | None = None  # a cheap validator before its variant is folded in
    etag_fields: tuple[str, ...] = ()  # the fields folded into ``etag``
    last_modified: int | None = None
    conditionals: Conditionals = NO_CONDITIONALS
    route: str | None = None
    raw: Sequence[tuple[bytes, bytes]] = ()  # ASGI: the request's fields as received

    def __init__(self, method: str, settings: HttpSettings, field: Callable[[str], str | None] | None = None) -> None:
        # Reads.__init__, inlined: one per request (its sets start empty, shared).
        self.identity_fields = settings.identity_fields
        self.method = method
        self.settings = settings
        if field is not None:
            self.field = field  # type: ignore[method-assign,assignment]
        self.plumbing_cookies = frozenset(settings.ignored_cookies)  # the same object: a frozenset

    def field(self, name: str) -> str | None:
        """The request's combined value of field ``name`` (lower-case), read without
        tracking; from ``raw`` unless the integration passed its own reader."""
        wanted = name.encode("latin-1")
        values = [bytes(v).decode("latin-1") for k, v in self.raw if bytes.lower(k) == wanted]
        if not values:
            return None
        return ("; " if name == "cookie" else ", ").join(values)

    endpoint: object = None  # named in warnings only: resolved lazily

    def add_tags(self, tags: tuple[str, ...]) -> None:
        self.touched = True
        self.tags = self.tags + tags

    def route_name(self) -> str:
        """``METHOD name`` of the route, for warnings (computed only when one is logged)."""
        if self.route is None:
            name = self.endpoint if isinstance(self.endpoint, str) else getattr(self.endpoint, "__qualname__", "?")
            self.route = f"{self.method} {name}"
        return self.route

    def variant(self, base: EntityTag, fields: tuple[str, ...]) -> EntityTag:
        """``base`` with the request's values of ``fields`` folded in (one tag per variant)."""
        return variant_etag(base, variant_key(fields, self.field, self.settings.ignored_cookies))

    def use_validators(self, identity: str, etag_from: object | None, last_modified_from: object | None) -> Outcome:
        """Record cheap validators and evaluate the request's preconditions against them.

        The version ETag names the resource (``identity``: path and query) and folds in
        the request's values of what the response will vary on (the policy's fields,
        identity when private): the same version in French and in German, or for two
        users of a private page, gets two tags, so one never validates the other.
        """
        self.touched = True
        if etag_from is not None:
            base = version_etag(identity, etag_from)
            self.etag_base = base
            self.etag_fields = expected_vary(self.policy, self.settings, self.forwarded)
            self.etag = held_variant(self.variant(base, self.etag_fields), self.conditionals.if_none_match)
        if last_modified_from is not None:
            self.last_modified = to_epoch(last_modified_from)
        return evaluate(self.method, self.conditionals, Validators(self.etag, self.last_modified))


def to_epoch(value: object) -> int:
    """Whole seconds since the epoch from an aware datetime or a number."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ConfigurationError("last_modified_from must be timezone-aware (naive times are ambiguous)")
        return int(value.timestamp())
    if isinstance(value, int | float) and not isinstance(value, bool):
        return int(value)
    raise ConfigurationError(f"last_modified_from takes an aware datetime or epoch seconds, not {type(value).__name__}")


def policy_marker(policy: HttpPolicy | None, kwargs: dict[str, Any]) -> Callable[[F], F]:
    """The decorator behind the ``http_policy`` of the ASGI and Django modules
    (``@http_policy(HttpPolicy.public(60))`` or ``@http_policy(visibility="public",
    max_age=60)``): it marks the function with its policy and returns it unchanged (its
    signature stays intact for FastAPI); the middleware finds the policy on the endpoint
    the router matched. Flask's ``http_policy`` wraps the view instead, since Flask has
    no routing hook the middleware could read."""
    if policy is not None and kwargs:
        raise ConfigurationError("pass an HttpPolicy or keyword arguments, not both")
    chosen = policy if policy is not None else HttpPolicy(**kwargs)

    def mark(fn: F) -> F:
        setattr(fn, POLICY_ATTR, chosen)
        return fn

    return mark


def policy_of(endpoint: object) -> HttpPolicy | None:
    policy = getattr(endpoint, POLICY_ATTR, None)
    return policy if isinstance(policy, HttpPolicy) else None


class HttpMetrics:
    """Counters of the HTTP layer (one per middleware). Read them with :meth:`snapshot`.

    Increments are plain integer updates (no lock on the hot path): exact under asyncio,
    and under threads exact except in the rare case two threads interleave one update.
    """

    __slots__ = (
        "downgraded",
        "header_errors",
        "no_store",
        "not_modified",
        "precondition_failed",
        "private",
        "refusals",
        "responses",
        "shared",
        "undeclared_reads",
    )

    def __init__(self) -> None:
        self.responses = 0
        self.shared = 0  # sent public (shareable by the edge)
        self.private = 0  # sent private, as the route's policy asked
        self.no_store = 0
        self.downgraded = 0  # public refused, sent private: by reason code in ``refusals``
        self.refusals: dict[str, int] = {}
        self.not_modified = 0
        self.precondition_failed = 0
        self.header_errors = 0
        self.undeclared_reads = 0  # responses whose handler read a field its policy did not declare

    def count(self, plan: HeaderPlan) -> None:
        self.responses += 1
        if plan.downgrade is not None:
            self.downgraded += 1
            code = plan.refusal or "other"
            self.refusals[code] = self.refusals.get(code, 0) + 1
        elif plan.shared:
            self.shared += 1
        elif plan.cache_control.startswith("no-store"):
            self.no_store += 1
        else:
            self.private += 1

    def bump(self, name: str) -> None:
        setattr(self, name, getattr(self, name) + 1)

    def snapshot(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__ if name != "refusals"}
