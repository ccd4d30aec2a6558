"""Per-request state shared by the middleware and the helpers a handler calls.

The middleware creates one :class:`HttpContext` per request and stores it where the
framework keeps request state (the ASGI scope, the WSGI environ, the Django request).
Handlers reach it through the framework helpers (``use_policy``, ``add_tags``,
``check_not_modified``) and never need to import this module.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from readscale._core.http import (
    NO_CONDITIONALS,
    Conditionals,
    EntityTag,
    HttpPolicy,
    Outcome,
    Validators,
    evaluate,
    held_variant,
    version_etag,
)
from readscale.errors import ConfigurationError

log = logging.getLogger("readscale.http")

CONTEXT_KEY = "readscale.http"
POLICY_ATTR = "__readscale_http_policy__"

F = TypeVar("F", bound=Callable[..., Any])


class HttpContext:
    """What one request's handler declared and read. Mutable, one per request."""

    __slots__ = (
        "conditionals",
        "etag",
        "identity_present",
        "last_modified",
        "method",
        "policy",
        "reads",
        "request_authorization",
        "tags",
    )

    def __init__(self, method: str, conditionals: Conditionals = NO_CONDITIONALS) -> None:
        self.method = method
        self.conditionals = conditionals
        self.policy: HttpPolicy | None = None
        self.tags: list[str] = []
        self.reads: set[str] = set()
        self.identity_present: frozenset[str] = frozenset()
        self.request_authorization = False
        self.etag: EntityTag | None = None
        self.last_modified: int | None = None

    def use_validators(self, identity: str, etag_from: object | None, last_modified_from: object | None) -> Outcome:
        """Record cheap validators and evaluate the request's preconditions against them."""
        if etag_from is not None:
            base = version_etag(identity, etag_from)
            self.etag = held_variant(base, self.conditionals.if_none_match)
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


def http_policy(policy: HttpPolicy | None = None, /, **kwargs: Any) -> Callable[[F], F]:
    """Declare the caching policy of an endpoint (Starlette, FastAPI, Django views).

    ``@http_policy(HttpPolicy.public(60, edge_max_age=300, tags=("catalog",)))`` or
    ``@http_policy(visibility="public", max_age=60)``. The function is returned
    unchanged (its signature stays intact for FastAPI); the middleware finds the
    policy on the endpoint the router matched. For Flask views use
    :func:`readscale.http.flask.http_policy`, which also works without routing hooks.
    """
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


@dataclass
class HttpMetrics:
    """Counters of the HTTP layer (one per middleware). Read them, or export them."""

    responses: int = 0
    shared: int = 0
    downgraded: int = 0
    not_modified: int = 0
    precondition_failed: int = 0
    header_errors: int = 0
    etags_computed: int = 0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    def bump(self, name: str, by: int = 1) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + by)

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return {
                k: getattr(self, k)
                for k in (
                    "responses",
                    "shared",
                    "downgraded",
                    "not_modified",
                    "precondition_failed",
                    "header_errors",
                    "etags_computed",
                )
            }
