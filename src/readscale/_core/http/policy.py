"""Per-route HTTP caching policy (:class:`HttpPolicy`) and the application's settings of
the HTTP layer (:class:`HttpSettings`). What a response then gets is decided in
``readscale._core.http.decide`` (its module doc: the rules and invariants).
"""

from __future__ import annotations

from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Final, Literal

from readscale._core.http._grammar import is_token
from readscale._core.http.surrogate import Vendor
from readscale.errors import ConfigurationError

Visibility = Literal["public", "private", "no-store"]
EdgeTtlHeader = Literal["cdn-cache-control", "s-maxage"]
UnlistedReads = Literal["warn", "vary", "private"]

ONE_YEAR: Final = 31_536_000


def _check_seconds(name: str, value: int | None) -> None:
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
        raise ConfigurationError(f"HttpPolicy.{name} must be a non-negative int of seconds, got {value!r}")


@dataclass(frozen=True, slots=True)
class HttpPolicy:
    """How one route's responses may be cached, by browsers and by the edge.

    - ``visibility``: ``public`` (browsers and shared caches), ``private`` (the user's
      browser only) or ``no-store``.
    - ``max_age``: browser freshness; ``None`` with ``private`` means ``no-cache``.
    - ``edge_max_age``: freshness at the edge (CDN-Cache-Control, or s-maxage in the
      compatibility mode); ``None`` lets the edge use ``max_age``.
    - ``stale_while_revalidate``, ``stale_if_error``: stale windows (RFC 5861).
    - ``immutable``: the representation never changes at this URL (hashed assets).
    - ``no_cache``: browsers revalidate every time (the edge may still hold it).
    - ``tags``: surrogate keys for purging at the edge (public only).
    - ``vary``: request fields the representation depends on (declared variance: they
      go into Vary and into the validator of each variant).
    - ``etag``: derive a strong ETag from the body when the handler sets none.
    - ``shared_auth``: allow ``public`` even when the request carried or the handler
      read identity (a response that is truly the same for everybody).
    """

    visibility: Visibility = "private"
    max_age: int | None = None
    edge_max_age: int | None = None
    stale_while_revalidate: int | None = None
    stale_if_error: int | None = None
    immutable: bool = False
    no_cache: bool = False
    must_revalidate: bool = False
    tags: tuple[str, ...] = ()
    vary: tuple[str, ...] = ()
    etag: bool = True
    shared_auth: bool = False
    _hash: int = field(default=0, init=False, repr=False, compare=False)

    def __hash__(self) -> int:
        return self._hash

    def __post_init__(self) -> None:
        if self.visibility not in ("public", "private", "no-store"):
            raise ConfigurationError(
                f"HttpPolicy.visibility must be public, private or no-store, got {self.visibility!r}"
            )
        for name in ("max_age", "edge_max_age", "stale_while_revalidate", "stale_if_error"):
            _check_seconds(name, getattr(self, name))
        if isinstance(self.tags, str) or isinstance(self.vary, str):  # type: ignore[unreachable]
            raise ConfigurationError("HttpPolicy.tags and .vary are tuples of strings, not one string")
        object.__setattr__(self, "tags", tuple(self.tags))
        vary = tuple(dict.fromkeys(v.strip().lower() for v in self.vary))
        for name in vary:
            if name == "*":
                raise ConfigurationError("HttpPolicy.vary cannot hold '*': use visibility='private' or 'no-store'")
            if not is_token(name):
                raise ConfigurationError(f"HttpPolicy.vary: {name!r} is not a field name")
        object.__setattr__(self, "vary", vary)
        if self.visibility != "public" and (self.edge_max_age is not None or self.tags or self.shared_auth):
            raise ConfigurationError(
                f"a {self.visibility} policy cannot set edge_max_age, tags or shared_auth: they only apply to "
                "shared caches"
            )
        if self.visibility == "no-store" and (
            self.max_age is not None
            or self.stale_while_revalidate is not None
            or self.stale_if_error is not None
            or self.immutable
        ):
            raise ConfigurationError("a no-store policy cannot set freshness or stale windows")
        # Hashed once: decide() is memoised on the policy, on every request.
        object.__setattr__(
            self,
            "_hash",
            hash(
                (
                    self.visibility,
                    self.max_age,
                    self.edge_max_age,
                    self.stale_while_revalidate,
                    self.stale_if_error,
                    self.immutable,
                    self.no_cache,
                    self.must_revalidate,
                    self.tags,
                    self.vary,
                    self.etag,
                    self.shared_auth,
                )
            ),
        )

    # -- presets -------------------------------------------------------------------------

    @classmethod
    def public(
        cls,
        max_age: int = 0,
        *,
        edge_max_age: int | None = None,
        stale_while_revalidate: int | None = None,
        stale_if_error: int | None = None,
        tags: tuple[str, ...] = (),
        vary: tuple[str, ...] = (),
        immutable: bool = False,
        no_cache: bool = False,
        shared_auth: bool = False,
    ) -> HttpPolicy:
        return cls(
            "public",
            max_age=max_age,
            edge_max_age=edge_max_age,
            stale_while_revalidate=stale_while_revalidate,
            stale_if_error=stale_if_error,
            tags=tags,
            vary=vary,
            immutable=immutable,
            no_cache=no_cache,
            shared_auth=shared_auth,
        )

    @classmethod
    def private(cls, max_age: int | None = None, *, vary: tuple[str, ...] = ()) -> HttpPolicy:
        return cls("private", max_age=max_age, no_cache=max_age is None, vary=vary)

    @classmethod
    def no_store(cls) -> HttpPolicy:
        return cls("no-store", etag=False)

    @classmethod
    def immutable_asset(cls, max_age: int = ONE_YEAR) -> HttpPolicy:
        """Fingerprinted static files: cached for a year, never revalidated."""
        return cls("public", max_age=max_age, immutable=True)


DEFAULT_POLICY: Final = HttpPolicy("private", no_cache=True)
IDENTITY_FIELDS: Final = frozenset({"authorization", "cookie", "proxy-authorization"})
# Fields that never need Vary: part of every cache key (host), handled by the cache
# itself (conditionals), or framing.
UNVARIED_FIELDS: Final = frozenset(
    {
        "host",
        ":authority",
        "if-none-match",
        "if-match",
        "if-modified-since",
        "if-unmodified-since",
        "if-range",
        "cache-control",
        "pragma",
        "content-length",
        "content-type",
        "transfer-encoding",
        "connection",
        "te",
    }
)


@dataclass(frozen=True, slots=True)
class HttpSettings:
    """Application-wide settings of the HTTP layer (one per middleware).

    - ``default_policy``: for routes that declare none (``private, no-cache``).
    - ``edge``: which vendor's tag header to emit (``None``: no tags, P16).
    - ``edge_ttl_header``: CDN-Cache-Control (default) or s-maxage (compatibility).
    - ``identity_fields``: request fields that identify a user (extend with API keys).
    - ``max_vary``: above this many varying request fields, go private.
    - ``unlisted_reads``: what a detected read of a field the policy did not declare
      does. ``warn`` (default): nothing to the response; logged once per route and
      field, and counted. ``vary``: added to Vary (an identity field read and carried
      makes the response private). ``private``: the response is not shared.
    - ``framework_reads``: fields your framework reads on every request (Django's
      CommonMiddleware reads User-Agent): their reads are never warned about nor varied
      on. Never identity: a handler's own read of Cookie or Authorization is always
      varied on (the frameworks' cookie plumbing is recognised without listing it).
    - ``ignored_cookies``: cookies that carry no identity (the causal token's): a
      request with only these is anonymous, and they are left out of validators.
    - ``etag_max_bytes``: bodies up to this size are buffered to derive a strong ETag.
    - ``trusted_proxies``: client addresses allowed to send X-Forwarded-* fields; from
      anyone else they are removed before the application sees them (P1).
    - ``clear_cache_on_sign_out``: a response that removes a cookie other than
      ``ignored_cookies`` (a sign-out: the session cookie deleted) carries
      ``Clear-Site-Data: "cache"``, so the browser drops the signed-out user's pages from
      its HTTP cache and its back/forward cache, from which Back would show them.
    """

    default_policy: HttpPolicy = DEFAULT_POLICY
    edge: Vendor | None = "varnish"
    edge_ttl_header: EdgeTtlHeader = "cdn-cache-control"
    identity_fields: frozenset[str] = IDENTITY_FIELDS
    max_vary: int = 6
    unlisted_reads: UnlistedReads = "warn"
    framework_reads: AbstractSet[str] = frozenset()  # a set is fine: kept as a frozenset
    ignored_cookies: AbstractSet[str] = frozenset({"readscale_token"})
    etag_max_bytes: int = 1 << 20
    trusted_proxies: frozenset[str] = field(default_factory=frozenset)
    clear_cache_on_sign_out: bool = True
    _hash: int = field(default=0, init=False, repr=False, compare=False)

    def __hash__(self) -> int:
        return self._hash

    def __post_init__(self) -> None:
        object.__setattr__(self, "identity_fields", frozenset(f.lower() for f in self.identity_fields))
        object.__setattr__(self, "trusted_proxies", frozenset(self.trusted_proxies))
        object.__setattr__(self, "framework_reads", frozenset(f.lower() for f in self.framework_reads))
        object.__setattr__(self, "ignored_cookies", frozenset(self.ignored_cookies))
        if self.edge_ttl_header not in ("cdn-cache-control", "s-maxage"):
            raise ConfigurationError(
                f"edge_ttl_header must be cdn-cache-control or s-maxage, got {self.edge_ttl_header!r}"
            )
        if self.unlisted_reads not in ("warn", "vary", "private"):
            raise ConfigurationError(f"unlisted_reads must be warn, vary or private, got {self.unlisted_reads!r}")
        if self.max_vary < 0 or self.etag_max_bytes < 0:
            raise ConfigurationError("max_vary and etag_max_bytes must be >= 0")
        object.__setattr__(
            self,
            "_hash",
            hash(
                (
                    self.default_policy,
                    self.edge,
                    self.edge_ttl_header,
                    self.identity_fields,
                    self.max_vary,
                    self.unlisted_reads,
                    self.framework_reads,
                    self.ignored_cookies,
                    self.etag_max_bytes,
                    self.trusted_proxies,
                    self.clear_cache_on_sign_out,
                )
            ),
        )
