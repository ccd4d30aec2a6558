"""Typed connection settings, readable from the environment, never logged in clear.

- :class:`RedisSettings`: URL, ACL user, password, TLS (``READSCALE_REDIS_*``).
- :class:`PostgresSettings`: user, password, ``sslmode`` and certificates applied to
  every PostgreSQL DSN readscale connects with (``READSCALE_PG_*``).
- :func:`check_dsn` and :func:`mask_dsn`: a DSN checked before use, shown masked.

Secrets (passwords) are kept out of ``repr`` and error messages, so a settings object
can be logged or shown in a traceback without leaking them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Literal
from urllib.parse import SplitResult, urlsplit

from readscale._core.postgres.dsn import MASK, DsnOptions, mask_dsn, scrub, secrets_of
from readscale.errors import ConfigurationError

__all__ = [
    "SSL_MODES",
    "SslMode",
    "check_dsn",
    "check_url",
    "connection_string",
    "mask_dsn",
]


SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")


def _env_bool(value: str, name: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ConfigurationError(f"{name} must be a boolean (true/false), got {value!r}")


def _masked(url: str) -> str:
    """``url`` with the password of its userinfo masked (the URL may not even split)."""
    scheme, sep, rest = url.partition("://")
    userinfo, at, hostinfo = rest.partition("/")[0].rpartition("@")
    if not sep or not at or ":" not in userinfo:
        return url
    user = userinfo.partition(":")[0]
    return f"{scheme}://{user}:***@{hostinfo}{rest[len(userinfo) + 1 + len(hostinfo) :]}"


def _raw_port(netloc: str) -> str:
    hostinfo = netloc.rpartition("@")[2]
    if hostinfo.startswith("["):
        return hostinfo.partition("]")[2].removeprefix(":")
    return hostinfo.rpartition(":")[2] if ":" in hostinfo else ""


def check_url(url: str, *, name: str, schemes: Sequence[str], host: bool = True) -> SplitResult:
    """``url`` split, or a :class:`ConfigurationError` of one line naming the part that is
    wrong (the scheme, the host, the port, an IPv6 host's brackets), with the URL shown
    with its password masked. Python's own parser raises a bare ``ValueError`` from deep
    inside a client library for most of these, and some (a port out of range, a host
    with a space) only when the first connection is tried."""
    if not isinstance(url, str):
        raise ConfigurationError(f"{name} must be a string (a URL), got {type(url).__name__}")
    shown = _masked(url)
    starts = " or ".join(", ".join(f"{s}://" for s in schemes).rsplit(", ", 1))
    if any(ch in url for ch in " \t\r\n\x00"):
        raise ConfigurationError(f"{name} holds whitespace or a control character: {shown!r}")
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # "Invalid IPv6 URL": an unbalanced bracket
        raise ConfigurationError(
            f"{name}: the host is malformed ({exc}; an IPv6 host goes in [brackets]): {shown}"
        ) from None
    if parts.scheme not in schemes or "://" not in url:
        raise ConfigurationError(f"{name} must start with {starts}, got {shown}")
    try:
        port = parts.port
    except ValueError:
        port = -1
    if port is not None and not 0 < port < 65536:
        raise ConfigurationError(
            f"{name}: the port must be a number from 1 to 65535, got {_raw_port(parts.netloc)!r}: {shown}"
        )
    if host and not parts.hostname:
        raise ConfigurationError(f"{name} has no host: {shown}")
    return parts


def _check_redis_url(url: str, shown: str) -> None:
    """The Redis URL whole, before any client sees it: scheme, host, port, database and the
    query options redis-py reads (when it is installed)."""
    schemes = ("redis", "rediss", "unix", *SENTINEL_SCHEMES)  # Sentinel URLs are parsed by their own rules
    parts = check_url(url, name="Redis URL", schemes=schemes, host=not url.startswith("unix:"))
    if parts.scheme != "unix" and parts.path.strip("/") and not parts.path.strip("/").isdigit():
        raise ConfigurationError(
            f"Redis URL: the database (the path) must be a number, got {parts.path.strip('/')!r}: {shown}"
        )
    if parts.query:
        try:
            from redis.connection import parse_url
        except ImportError:
            return
        try:
            parse_url(url)  # type: ignore[no-untyped-call]
        except ValueError as exc:
            raise ConfigurationError(f"Redis URL: {str(exc).rstrip('.')}: {shown}") from None


@dataclass(frozen=True, repr=False)
class RedisSettings:
    """How to reach Redis (or one node of a Redis Cluster, or a master through Sentinel).

    Sentinel: ``redis+sentinel://[user:password@]host:port[,host:port...]/service[/db]``
    (``rediss+sentinel://`` for TLS to the master and replicas): the sentinels' addresses and
    the monitored master's name. Every client readscale makes asks the sentinels for the
    current master, and again after a failover (docs/operations.md). ``password`` (or the
    URL's) is the master's; ``sentinel_password`` is the sentinels' own, if they require one.

    Timeouts are in milliseconds and short by default: a cache that answers slowly is
    worse than no cache, and the read path fails open to the loader.
    """

    url: str = "redis://127.0.0.1:6379/0"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ssl: bool = False
    ssl_ca_certs: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_check_hostname: bool = True
    socket_timeout_ms: float = 250.0
    connect_timeout_ms: float = 250.0
    max_connections: int = 64
    pool_timeout_ms: float = 1000.0
    client_name: str | None = "readscale"
    sentinel_password: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.url.partition("://")[0] in SENTINEL_SCHEMES:
            self.sentinels  # noqa: B018 - parsed now: a bad URL fails here, not at the first command
            self.service_name  # noqa: B018
            self.db  # noqa: B018
        else:
            _check_redis_url(self.url, self.safe_url)  # one line naming the wrong part, not a traceback later
        if self.socket_timeout_ms <= 0 or self.connect_timeout_ms <= 0:
            raise ConfigurationError("Redis timeouts must be > 0 milliseconds")
        if self.pool_timeout_ms <= 0:
            raise ConfigurationError("pool_timeout_ms must be > 0 milliseconds")
        if self.max_connections < 1:
            raise ConfigurationError(f"max_connections must be >= 1, got {self.max_connections}")

    def __repr__(self) -> str:
        shown = ", ".join(
            f"{f.name}={self.safe_url if f.name == 'url' else getattr(self, f.name)!r}" for f in fields(self) if f.repr
        )
        return f"RedisSettings({shown})"

    @property
    def safe_url(self) -> str:
        """The URL with any password masked, for logs and errors."""
        return _masked(self.url)

    @property
    def sentinel(self) -> bool:
        """True when the URL names sentinels (``redis+sentinel://``) rather than a server."""
        return urlsplit(self.url).scheme in SENTINEL_SCHEMES

    @property
    def sentinels(self) -> tuple[tuple[str, int], ...]:
        """The sentinels' ``(host, port)`` (26379 when a port is left out)."""
        hosts = urlsplit(self.url).netloc.rpartition("@")[2]
        out = []
        for item in hosts.split(","):
            host, _, port = item.strip().rpartition(":") if ":" in item else (item.strip(), "", "26379")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ConfigurationError(
                    f"Sentinel URL needs host:port[,host:port...], got {item!r} in {self.safe_url}"
                )
            out.append((host.strip("[]"), int(port)))
        return tuple(out)

    @property
    def service_name(self) -> str:
        """The master's name the sentinels monitor (the URL's first path segment)."""
        segments = [p for p in urlsplit(self.url).path.split("/") if p]
        if not segments:
            raise ConfigurationError(
                f"Sentinel URL needs the master's name as its path (/mymaster), got {self.safe_url}"
            )
        return segments[0]

    @property
    def db(self) -> int:
        """The database number (a Sentinel URL's second path segment; 0 when left out)."""
        segments = [p for p in urlsplit(self.url).path.split("/") if p]
        raw = segments[1] if self.sentinel and len(segments) > 1 else "0"
        if not self.sentinel:
            return int(segments[0]) if segments and segments[0].isdigit() else 0
        if not raw.isdigit():
            raise ConfigurationError(f"Sentinel URL's database must be a number, got {raw!r} in {self.safe_url}")
        return int(raw)

    @property
    def host_port(self) -> tuple[str, int]:
        parts = urlsplit(self.url)
        return parts.hostname or "127.0.0.1", parts.port or 6379

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for redis-py's ``from_url`` (sync and asyncio alike)."""
        kwargs: dict[str, Any] = {
            "socket_timeout": self.socket_timeout_ms / 1000,
            "socket_connect_timeout": self.connect_timeout_ms / 1000,
            "max_connections": self.max_connections,
            "protocol": 2,
            "client_name": self.client_name,
        }
        if self.username is not None:
            kwargs["username"] = self.username
        if self.password is not None:
            kwargs["password"] = self.password
        if self.sentinel:
            parts = urlsplit(self.url)
            kwargs["db"] = self.db
            if parts.username and "username" not in kwargs:
                kwargs["username"] = parts.username
            if parts.password and "password" not in kwargs:
                kwargs["password"] = parts.password
        if self.ssl or self.url.startswith(("rediss://", "rediss+sentinel://")):
            kwargs.update(
                ssl_ca_certs=self.ssl_ca_certs,
                ssl_certfile=self.ssl_certfile,
                ssl_keyfile=self.ssl_keyfile,
                ssl_check_hostname=self.ssl_check_hostname,
            )
            if not self.url.startswith("rediss://"):
                kwargs["ssl"] = True
        return kwargs

    def sentinel_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for the connections to the sentinels themselves."""
        kwargs: dict[str, Any] = {
            "socket_timeout": self.socket_timeout_ms / 1000,
            "socket_connect_timeout": self.connect_timeout_ms / 1000,
            "protocol": 2,
        }
        if self.sentinel_password is not None:
            kwargs["password"] = self.sentinel_password
        return kwargs

    @classmethod
    def from_env(cls, prefix: str = "READSCALE_REDIS_", **overrides: Any) -> RedisSettings:
        """Read ``<prefix>URL``, ``<prefix>PASSWORD``, ``<prefix>SSL``, ... from the environment."""
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = os.environ.get(prefix + f.name.upper())
            if raw is None:
                continue
            name = prefix + f.name.upper()
            if f.type in ("bool",):
                values[f.name] = _env_bool(raw, name)
            elif f.type in ("float",):
                try:
                    values[f.name] = float(raw)
                except ValueError:
                    raise ConfigurationError(f"{name} must be a number, got {raw!r}") from None
            elif f.type in ("int",):
                try:
                    values[f.name] = int(raw)
                except ValueError:
                    raise ConfigurationError(f"{name} must be an integer, got {raw!r}") from None
            else:
                values[f.name] = raw
        values.update(overrides)
        return cls(**values)


# -- PostgreSQL ------------------------------------------------------------------------

SslMode = Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]
SSL_MODES: tuple[SslMode, ...] = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
# Options whose values libpq reads as integers: a bad one is refused before connecting.
_INT_OPTIONS = ("port", "connect_timeout", "keepalives", "keepalives_idle", "keepalives_interval", "keepalives_count")


def _psycopg_conninfo() -> Any:
    try:
        from psycopg import conninfo
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise ImportError(
            "PostgreSQL connection strings need psycopg 3: pip install 'readscale[postgres]'", name=exc.name
        ) from exc
    return conninfo


def _parse_dsn(dsn: str, name: str, secrets: tuple[str | None, ...] = ()) -> dict[str, Any]:
    """``dsn`` parsed by libpq, or a ConfigurationError that shows it masked."""
    shown = mask_dsn(dsn)
    if not isinstance(dsn, str):
        raise ConfigurationError(f"{name} must be a string (a PostgreSQL DSN), got {type(dsn).__name__}")
    if "\x00" in dsn:
        raise ConfigurationError(f"{name} holds a NUL character: {scrub(shown)!r}")
    import psycopg

    try:
        options: dict[str, Any] = _psycopg_conninfo().conninfo_to_dict(dsn)
    except psycopg.Error as exc:
        reason = scrub(str(exc).strip(), (*secrets_of(dsn), *secrets))
        raise ConfigurationError(f"{name} is not a valid PostgreSQL DSN ({reason}): {shown}") from None
    for key in _INT_OPTIONS:
        value = options.get(key)
        if value is None:
            continue
        parts = str(value).split(",") if key == "port" else [str(value)]
        if not all(part.strip().lstrip("-").isdigit() or (key == "port" and not part) for part in parts):
            raise ConfigurationError(f"{name}: {key} must be an integer, got {value!r}: {shown}")
        if key == "port" and not all(not part or 0 < int(part) < 65536 for part in parts):
            raise ConfigurationError(f"{name}: port must be a number from 1 to 65535, got {value!r}: {shown}")
    sslmode = options.get("sslmode")
    if sslmode is not None and sslmode not in SSL_MODES:
        raise ConfigurationError(f"{name}: sslmode must be one of {', '.join(SSL_MODES)}, got {sslmode!r}: {shown}")
    return options


def check_dsn(dsn: str, *, name: str = "dsn") -> str:
    """Return ``dsn`` if libpq can parse it, else raise :class:`ConfigurationError`.

    The error names ``name`` (``--dsn``, ``ReplicaSettings.primary``...) and shows the
    DSN with its password masked; libpq's own message is scrubbed of it too.
    """
    _parse_dsn(dsn, name)
    return dsn


def connection_string(dsn: str, options: DsnOptions | None, *, name: str = "dsn") -> str:
    """``dsn`` checked, with ``options`` (a :class:`PostgresSettings`) applied if given."""
    if options is None:
        return check_dsn(dsn, name=name)
    return options.apply(dsn)


@dataclass(frozen=True, repr=False)
class PostgresSettings:
    """Credentials and TLS for every PostgreSQL connection readscale opens.

    One object, applied to each DSN (the primary's, each replica's, the CDC worker's,
    the write-behind writer's), so that a password, a certificate or ``sslmode`` is set
    once for the whole cluster. A field left ``None`` keeps what the DSN (or libpq's
    defaults and environment) says; a field set wins over the DSN.

    ``sslmode``: one of ``disable``, ``allow``, ``prefer``, ``require``, ``verify-ca``,
    ``verify-full``. Use ``verify-full`` (with ``sslrootcert``, the CA that signed the
    server's certificate) whenever the network between the application and the
    database is not trusted: ``require`` encrypts but does not check whom it talks to.
    ``connect_timeout``: whole seconds (libpq's unit), at least 1.

    The password never appears in ``repr``, ``str``, :meth:`safe_dsn` or the messages
    of the errors raised here.
    """

    user: str | None = None
    password: str | None = field(default=None, repr=False)
    sslmode: SslMode | None = None
    sslrootcert: str | None = None
    sslcert: str | None = None
    sslkey: str | None = None
    connect_timeout: int | None = None
    application_name: str | None = None

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "connect_timeout" or value is None:
                continue
            if not isinstance(value, str):
                raise ConfigurationError(f"PostgresSettings.{f.name} must be a string, got {type(value).__name__}")
            if "\x00" in value:
                raise ConfigurationError(f"PostgresSettings.{f.name} holds a NUL character")
        if self.sslmode is not None and self.sslmode not in SSL_MODES:
            raise ConfigurationError(
                f"PostgresSettings.sslmode must be one of {', '.join(SSL_MODES)}, got {self.sslmode!r}"
            )
        timeout = self.connect_timeout
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, int) or timeout < 1):
            raise ConfigurationError(
                f"PostgresSettings.connect_timeout must be an int of seconds >= 1, got {timeout!r}"
            )
        if self.sslmode in ("disable", "allow", "prefer") and (self.sslrootcert or self.sslcert or self.sslkey):
            raise ConfigurationError(
                f"sslmode={self.sslmode} does not check certificates: use verify-full (or verify-ca, require) "
                "with sslrootcert, sslcert or sslkey"
            )

    def __repr__(self) -> str:
        shown = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "password":
                shown.append(f"password={None if value is None else MASK!r}")
            else:
                shown.append(f"{f.name}={value!r}")
        return f"PostgresSettings({', '.join(shown)})"

    __str__ = __repr__

    def options(self) -> dict[str, str]:
        """The libpq options this object sets (``password`` included: never log this)."""
        out: dict[str, str] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None:
                out[f.name] = str(value)
        return out

    def apply(self, dsn: str) -> str:
        """``dsn`` with these options merged in, as a libpq connection string.

        Raises :class:`ConfigurationError` (with the DSN masked) if ``dsn`` is not a
        valid connection string.
        """
        _parse_dsn(dsn, "dsn", (self.password,))
        merged: str = _psycopg_conninfo().make_conninfo(dsn, **self.options())
        return merged

    def safe_dsn(self, dsn: str) -> str:
        """What :meth:`apply` makes of ``dsn``, password masked: for logs and errors. Never raises."""
        try:
            return mask_dsn(self.apply(dsn))
        except (ConfigurationError, ImportError):
            return scrub(mask_dsn(dsn), (self.password,))

    @classmethod
    def from_env(
        cls, prefix: str = "READSCALE_PG_", *, environ: Mapping[str, str] | None = None, **overrides: Any
    ) -> PostgresSettings:
        """Read ``<prefix>USER``, ``<prefix>PASSWORD``, ``<prefix>SSLMODE``,
        ``<prefix>SSLROOTCERT``, ``<prefix>SSLCERT``, ``<prefix>SSLKEY``,
        ``<prefix>CONNECT_TIMEOUT`` and ``<prefix>APPLICATION_NAME``; ``overrides`` win.
        An empty variable counts as unset."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            name = prefix + f.name.upper()
            raw = env.get(name)
            if raw is None or raw == "":
                continue
            if f.name == "connect_timeout":
                try:
                    values[f.name] = int(raw)
                except ValueError:
                    raise ConfigurationError(f"{name} must be an integer of seconds, got {raw!r}") from None
            elif f.name == "sslmode" and raw not in SSL_MODES:
                raise ConfigurationError(f"{name} must be one of {', '.join(SSL_MODES)}, got {raw!r}")
            else:
                values[f.name] = raw
        values.update(overrides)
        return cls(**values)
