"""Typed connection settings, readable from the environment, never logged in clear.

Secrets (passwords) are kept out of ``repr`` and error messages, so a settings object
can be logged or shown in a traceback without leaking them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from typing import Any
from urllib.parse import urlsplit

from readscale.errors import ConfigurationError


def _env_bool(value: str, name: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ConfigurationError(f"{name} must be a boolean (true/false), got {value!r}")


@dataclass(frozen=True, repr=False)
class RedisSettings:
    """How to reach Redis (or one node of a Redis Cluster).

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

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("redis", "rediss", "unix"):
            raise ConfigurationError(f"Redis URL must start with redis://, rediss:// or unix://, got {self.safe_url}")
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
        parts = urlsplit(self.url)
        if parts.password:
            netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
            return parts._replace(netloc=netloc).geturl()
        return self.url

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
        if self.ssl or self.url.startswith("rediss://"):
            kwargs.update(
                ssl_ca_certs=self.ssl_ca_certs,
                ssl_certfile=self.ssl_certfile,
                ssl_keyfile=self.ssl_keyfile,
                ssl_check_hostname=self.ssl_check_hostname,
            )
            if not self.url.startswith("rediss://"):
                kwargs["ssl"] = True
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
