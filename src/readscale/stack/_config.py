"""What a local stack starts: :class:`StackConfig`, checked when it is made, so a bad
option fails before any server starts (and a stack reopened from ``state.json`` rebuilds
the same configuration)."""

from __future__ import annotations

from dataclasses import dataclass

from readscale.errors import ConfigurationError
from readscale.http.varnish import render_vcl
from readscale.stack.postgres import REPLICATION_MODES, ReplicationMode, check_role_name
from readscale.stack.prometheus import check_target
from readscale.stack.redis import APPENDFSYNC


@dataclass(frozen=True)
class StackConfig:
    """What ``up`` starts. Every part is optional; the defaults are PostgreSQL with two
    async replicas and a standalone Redis."""

    postgres: bool = True
    replicas: int = 2
    mode: ReplicationMode = "async"
    fsync: bool = True
    postgres_tls: bool = False
    postgres_user: str | None = None
    postgres_password: str | None = None
    redis: bool = True
    redis_aof: bool = False
    redis_appendfsync: str = "always"
    redis_password: str | None = None
    redis_acl_user: str | None = None
    redis_acl_password: str | None = None
    redis_tls: bool = False
    cluster: bool = False
    sentinel: bool = False
    memcached: bool = False
    varnish: bool = False
    varnish_backend: str = "http://127.0.0.1:8000"
    varnish_probe: str | None = None
    varnish_nodes: int = 1
    varnish_max_life: int | None = None
    prometheus: bool = False
    prometheus_targets: tuple[str, ...] = ()  # URLs of /metrics endpoints to scrape
    prometheus_interval: float = 1.0  # seconds between scrapes

    def __post_init__(self) -> None:
        if self.replicas < 0:
            raise ConfigurationError(f"replicas must be >= 0, got {self.replicas}")
        if self.mode not in REPLICATION_MODES:
            raise ConfigurationError(f"mode must be one of {', '.join(REPLICATION_MODES)}, got {self.mode!r}")
        if self.mode != "async" and (not self.postgres or self.replicas == 0):
            raise ConfigurationError(f"replication mode {self.mode!r} needs PostgreSQL with at least one replica")
        if bool(self.postgres_user) != bool(self.postgres_password):
            raise ConfigurationError("postgres_user and postgres_password go together (a role needs its password)")
        if self.postgres_user:
            check_role_name(self.postgres_user)
        if self.varnish_nodes < 1:
            raise ConfigurationError(f"varnish_nodes must be >= 1, got {self.varnish_nodes}")
        if self.varnish:  # validates the three
            render_vcl(self.varnish_backend, probe_path=self.varnish_probe, max_life=self.varnish_max_life)
        object.__setattr__(self, "prometheus_targets", tuple(self.prometheus_targets))  # a list from state.json
        for url in self.prometheus_targets:
            check_target(url)
        if self.prometheus_interval <= 0:
            raise ConfigurationError(f"prometheus_interval must be > 0, got {self.prometheus_interval}")
        if self.redis_appendfsync not in APPENDFSYNC:
            raise ConfigurationError(
                f"redis_appendfsync must be one of {', '.join(APPENDFSYNC)}, got {self.redis_appendfsync!r}"
            )

    def binaries(self) -> list[str]:
        needed = []
        if self.postgres:
            needed += ["initdb", "postgres", "pg_isready", "psql"]
            if self.replicas:
                needed.append("pg_basebackup")
        if self.redis or self.cluster or self.sentinel:
            needed += ["redis-server", "redis-cli"]
        if self.memcached:
            needed.append("memcached")
        if self.varnish:
            needed += ["varnishd", "varnishstat", "varnishadm"]
        if self.prometheus:
            needed.append("prometheus")
        return needed
