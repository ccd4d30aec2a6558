"""Django: a database router that reads from replicas by WAL position, and the middleware
that carries the causal token from one request of a session to the next.

    # settings.py
    from readscale.django import replica_settings
    DATABASES = {"default": {...primary...}, "r1": {...}, "r2": {...}}
    DATABASE_ROUTERS = ["readscale.django.ReplicaDatabaseRouter"]
    READSCALE_REPLICA_SETTINGS = replica_settings(DATABASES, primary="default", replicas=["r1", "r2"])
    READSCALE_TOKEN_SECRET = env("READSCALE_TOKEN_SECRET")     # for the middleware
    MIDDLEWARE = [..., "readscale.django.CausalTokenMiddleware", ...]

Rules of :class:`ReplicaDatabaseRouter`:

- Writes go to the primary alias. Every statement that is not plainly a read on the
  primary alias marks a write: outside ``atomic()`` the primary's WAL position is read
  at once (its own autocommit already committed), inside it once after the outermost
  block commits (``on_commit``); either way one extra round trip, and the position is
  merged into the causal context. Django owns the COMMIT, so it cannot share its round
  trip as ``router.write()`` does.
- Reads inside an ``atomic()`` block on the primary stay on the primary (a transaction
  stays on one node). Other reads ask the replica router (``route_read``): a replica
  that replayed the context's token, checked by a guard on that server just before, or
  the primary as a rate-limited fallback. Replica aliases are named as in the settings.
- Monotonic reads: a query's snapshot is taken after its guard and may see more. An
  execute wrapper on every alias marks the node once each read statement finished (no
  round trip); the session's next read stays on that node (its guard settles it) or
  reads the node's position before it goes elsewhere, and the middleware settles what
  is left before it stores the token (one position read per request that read).
- Migrations run on the primary only; replicas get them by replication.

One sync :class:`~readscale.replicas.ReplicaRouter` serves the process; Django's async
ORM runs queries in threads, so async views use it too.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

try:
    from asgiref.sync import iscoroutinefunction, markcoroutinefunction
    from django.conf import settings as django_settings
    from django.db import connections, transaction
    from django.db.backends.signals import connection_created
    from django.http import HttpRequest, HttpResponseBase
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("readscale.django needs Django: pip install 'readscale[django]'") from exc

from psycopg.conninfo import make_conninfo

from readscale._core.replicas.causal import TokenSigner
from readscale._core.replicas.settings import PRIMARY, ReplicaSettings
from readscale._shared.cache.fill_scope import report_primary_read
from readscale._shared.replicas.causal_context import TOKEN_HEADER, causal_context, settle_context, settle_context_async
from readscale._sync.replicas.router import ReplicaRouter
from readscale.errors import ConfigurationError
from readscale.replicas._carry import (
    DEFAULT_COOKIE,
    Persist,
    Restored,
    Secure,
    check_options,
    cookie_value,
    log,
    restore,
    secure_for,
    stores_token,
    update,
)
from readscale.replicas._sql import is_read_sql, is_transaction_control

__all__ = ["CausalTokenMiddleware", "ReplicaDatabaseRouter", "replica_settings", "shared_router"]


def _libpq_keywords() -> frozenset[str]:
    import psycopg

    return frozenset(option.keyword.decode() for option in psycopg.pq.Conninfo.get_defaults())


def _dsn(database: Mapping[str, Any]) -> str:
    """A libpq connection string for one ``DATABASES`` entry, with the connection
    options of its ``OPTIONS`` (``sslmode``, ``sslrootcert``, ``sslcert``, ``sslkey``,
    ``connect_timeout``, ``options``, ``target_session_attrs``...) so that the router
    connects exactly as Django does. Django's own keys (``isolation_level``, ``pool``...)
    are left out."""
    options: dict[str, Any] = {
        "dbname": database.get("NAME") or None,
        "user": database.get("USER") or None,
        "password": database.get("PASSWORD") or None,
        "host": database.get("HOST") or None,
        "port": str(database["PORT"]) if database.get("PORT") else None,
    }
    extra = database.get("OPTIONS") or {}
    keywords = _libpq_keywords()
    for key, value in extra.items():
        if key in keywords and options.get(key) is None and isinstance(value, str | int | float):
            options[key] = str(int(value)) if isinstance(value, bool) else str(value)
    return make_conninfo("", **{k: v for k, v in options.items() if v is not None})


def replica_settings(
    databases: Mapping[str, Mapping[str, Any]],
    *,
    primary: str = "default",
    replicas: Sequence[str] = (),
    **kwargs: Any,
) -> ReplicaSettings:
    """Replica router settings from Django's ``DATABASES``: replica names are the aliases.

    Each alias's credentials and ``OPTIONS`` (``sslmode``, certificates...) carry over.
    ``kwargs`` are any other :class:`~readscale.replicas.ReplicaSettings` fields, e.g.
    ``postgres=PostgresSettings.from_env()`` to apply credentials and TLS to every node.
    """
    for alias in (primary, *replicas):
        if alias not in databases:
            raise ConfigurationError(f"DATABASES has no alias {alias!r}")
    if primary in replicas:
        raise ConfigurationError(f"the primary alias {primary!r} cannot also be a replica")
    return ReplicaSettings(
        primary=_dsn(databases[primary]),
        replicas={alias: _dsn(databases[alias]) for alias in replicas},
        **kwargs,
    )


_lock = threading.Lock()
_shared: list[ReplicaRouter] = []  # at most one: the process's router


def shared_router() -> ReplicaRouter:
    """The process's replica router, opened on first use from ``READSCALE_REPLICA_SETTINGS``."""
    if not _shared:
        with _lock:
            if not _shared:
                configured = getattr(django_settings, "READSCALE_REPLICA_SETTINGS", None)
                if not isinstance(configured, ReplicaSettings):
                    raise ConfigurationError(
                        "set READSCALE_REPLICA_SETTINGS = readscale.django.replica_settings(DATABASES, ...)"
                    )
                router = ReplicaRouter(configured)
                router.open()
                _shared.append(router)
    return _shared[0]


class _WriteTracker:
    """An execute wrapper on the primary alias: a statement that may write makes the
    router learn the primary's position after it commits; a read marks the primary as
    read (what it saw is merged before the session's next replica read)."""

    def __init__(self, alias: str) -> None:
        self.alias = alias
        self.learn = self._learn  # one object, so on_commit can tell it is queued already

    def _learn(self) -> None:
        shared_router().observe_commit()

    def __call__(self, execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any) -> Any:
        result = execute(sql, params, many, context)
        if is_transaction_control(sql):
            return result
        if is_read_sql(sql):
            shared_router().note_read(PRIMARY)
            return result
        connection = context["connection"]
        if not connection.in_atomic_block:
            self.learn()
        elif not any(entry[1] is self.learn for entry in connection.run_on_commit):
            transaction.on_commit(self.learn, using=self.alias)
        return result


class _ReadTracker:
    """An execute wrapper on a replica alias: each finished statement marks the replica
    as read (a mark, no round trip; see the module docstring)."""

    def __init__(self, alias: str) -> None:
        self.alias = alias

    def __call__(self, execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any) -> Any:
        result = execute(sql, params, many, context)
        shared_router().note_read(self.alias)
        return result


class ReplicaDatabaseRouter:
    """``DATABASE_ROUTERS = ["readscale.django.ReplicaDatabaseRouter"]``."""

    def __init__(self) -> None:
        self.primary: str = getattr(django_settings, "READSCALE_PRIMARY_ALIAS", "default")
        self._tracker = _WriteTracker(self.primary)
        self._readers: dict[str, _ReadTracker] = {}
        connection_created.connect(self._connected, weak=False, dispatch_uid="readscale-replicas")

    @property
    def replicas(self) -> set[str]:
        configured = getattr(django_settings, "READSCALE_REPLICA_SETTINGS", None)
        if not isinstance(configured, ReplicaSettings):
            return set()
        return {name for name, _ in configured.replica_dsns}

    def _connected(self, sender: Any, connection: Any, **kwargs: Any) -> None:
        self._track(connection)

    def _track(self, connection: Any) -> None:
        alias = connection.alias
        if alias == self.primary:
            tracker: Any = self._tracker
        elif alias in self.replicas:
            tracker = self._readers.setdefault(alias, _ReadTracker(alias))
        else:
            return
        if tracker not in connection.execute_wrappers:
            connection.execute_wrappers.append(tracker)

    def db_for_write(self, model: Any, **hints: Any) -> str:
        self._track(connections[self.primary])
        return self.primary

    def db_for_read(self, model: Any, **hints: Any) -> str:
        primary = connections[self.primary]
        self._track(primary)
        if primary.in_atomic_block:
            report_primary_read()  # a cache fill running this read learns its source
            return self.primary
        name = shared_router().route_read()
        if name == PRIMARY:
            return self.primary
        self._track(connections[name])
        return name

    def allow_relation(self, obj1: Any, obj2: Any, **hints: Any) -> bool | None:
        ours = {self.primary, *self.replicas}
        if obj1._state.db in ours and obj2._state.db in ours:
            return True
        return None

    def allow_migrate(self, db: str, app_label: str, model_name: str | None = None, **hints: Any) -> bool | None:
        if db in self.replicas:
            return False
        return None


def _track_from_the_first_connection(sender: Any, connection: Any, **kwargs: Any) -> None:
    """Django builds ``DATABASE_ROUTERS`` on the first query it routes; a raw cursor on
    the primary alias before that wrote without the router learning the primary's
    position, and the session then read a replica that had not replayed its write. Every
    connection Django opens goes to the routers here, building them if need be (found by
    the consistency harness, docs/consistency-testing.md)."""
    from django.db import router as database_router

    for candidate in database_router.routers:
        if isinstance(candidate, ReplicaDatabaseRouter):
            candidate._track(connection)


connection_created.connect(_track_from_the_first_connection, weak=False, dispatch_uid="readscale-replicas-first")


class CausalTokenMiddleware:
    """Restore the causal token per request (cookie or ``Readscale-Token`` header) and
    store it again when the request moved it; a bad token is a new session, never a 500.

    Settings: ``READSCALE_TOKEN_SECRET`` (one secret or a list, for rotation),
    ``READSCALE_TOKEN_COOKIE`` (name), ``READSCALE_TOKEN_SECURE`` (``"auto"`` by default:
    Secure exactly when ``request.is_secure()``; ``True`` with ``DEBUG`` is warned about
    at startup, since the development server speaks plain http and clients drop a Secure
    cookie there), ``READSCALE_TOKEN_PERSIST`` (``"session"`` by default, ``"advance"``
    or ``"write"``: see :class:`readscale.starlette.CausalTokenMiddleware`).
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        secret = getattr(django_settings, "READSCALE_TOKEN_SECRET", None)
        if not secret:
            raise ConfigurationError("CausalTokenMiddleware needs READSCALE_TOKEN_SECRET in the Django settings")
        self.get_response = get_response
        self.signer = TokenSigner(secret)
        self.cookie_name: str = getattr(django_settings, "READSCALE_TOKEN_COOKIE", DEFAULT_COOKIE)
        self.secure: Secure = getattr(django_settings, "READSCALE_TOKEN_SECURE", "auto")
        persist = getattr(django_settings, "READSCALE_TOKEN_PERSIST", "session")
        try:
            check_options(persist, self.secure, "lax")
        except ConfigurationError as exc:
            raise ConfigurationError(f"READSCALE_TOKEN_*: {exc}") from None
        self.persist: Persist = persist  # type: ignore[assignment]  # checked just above
        if self.secure is True and getattr(django_settings, "DEBUG", False):
            log.warning(
                "readscale: READSCALE_TOKEN_SECURE=True with DEBUG on: the development server speaks plain http, "
                "where clients drop Secure cookies, so sessions lose read-your-writes. Leave it unset ('auto')",
                extra={"event": "secure_cookie_over_http", "backend": "django", "reason": "DEBUG with secure=True"},
            )
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self.is_async:
            return self.__acall__(request)
        restored = self._restore(request)
        with causal_context(restored.context):
            response = self.get_response(request)
        if stores_token(restored, persist=self.persist):
            settle_context(restored.context)  # what the request's ORM reads saw, before it leaves
        self._store(request, restored, response)
        return response

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        restored = self._restore(request)
        with causal_context(restored.context):
            pending = self.get_response(request)
            assert isinstance(pending, Awaitable)
            response: HttpResponseBase = await pending
        if stores_token(restored, persist=self.persist):
            await settle_context_async(restored.context)
        self._store(request, restored, response)
        return response

    def _restore(self, request: HttpRequest) -> Restored:
        # Read from the plain META dict: readscale's HTTP layer must not count this
        # plumbing as the view's read.
        meta: dict[str, Any] = request.META
        cookie = cookie_value(dict.get(meta, "HTTP_COOKIE"), self.cookie_name)
        return restore(self.signer, cookie, dict.get(meta, "HTTP_READSCALE_TOKEN"), now=time.time())

    def _store(self, request: HttpRequest, restored: Restored, response: HttpResponseBase) -> None:
        change = update(restored, self.signer, persist=self.persist, now=time.time())
        if change.cookie is None and not change.clear_cookie and change.header is None:
            return
        secure = secure_for(self.secure, request.is_secure(), "Django's CausalTokenMiddleware")
        if change.cookie is not None:
            response.set_cookie(
                self.cookie_name,
                change.cookie,
                max_age=int(self.signer.max_age),
                httponly=True,
                samesite="Lax",
                secure=secure,
            )
        elif change.clear_cookie:
            response.delete_cookie(self.cookie_name, samesite="Lax")
        if change.header is not None:
            response[TOKEN_HEADER] = change.header
