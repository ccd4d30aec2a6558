"""Typed settings of the replica router and the per-read consistency modes.

Every knob is a field of a frozen dataclass, validated when built, so a bad value fails
at startup with a :class:`~readscale.errors.ConfigurationError` naming it, not at the
first read under load.

Read modes (one per read, or a default for the router):

- :data:`SESSION` (default): read-your-writes and monotonic reads for the causal
  context. A replica serves the read only once it has replayed the session's causal
  token; a session with no token may read any admitted replica.
- :data:`LATEST`: see every write the primary had committed when the read began (the
  primary's current WAL position becomes the target), whoever made it.
- :class:`BoundedStaleness`: any replica whose data is at most ``max_staleness``
  seconds behind the primary; the session's token is not required (feeds, analytics).
- :class:`TimeWindow`: the classic rule (Rails' DatabaseSelector): the primary for
  ``window`` seconds after the session's last write, any replica otherwise. Kept as a
  fallback and as the benchmark baseline: it over-pins when replicas are current and
  reads stale data when they lag longer than the window.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Literal

from readscale._core.postgres.dsn import DsnOptions, mask_dsn
from readscale.errors import ConfigurationError

__all__ = [
    "LATEST",
    "PRIMARY",
    "SESSION",
    "BoundedStaleness",
    "HealthPolicy",
    "Latest",
    "PrimaryProtection",
    "ReadMode",
    "ReplicaSettings",
    "Session",
    "TimeWindow",
    "TokenSource",
]

PRIMARY = "primary"
TokenSource = Literal["write", "insert"]


@dataclass(frozen=True, slots=True)
class Session:
    """Read-your-writes and monotonic reads for the current causal context."""


@dataclass(frozen=True, slots=True)
class Latest:
    """As fresh as the primary when the read begins (one cheap query on the primary)."""


@dataclass(frozen=True, slots=True)
class BoundedStaleness:
    """At most ``max_staleness`` seconds behind the primary; the session token is not required."""

    max_staleness: float

    def __post_init__(self) -> None:
        if not self.max_staleness >= 0:
            raise ConfigurationError(f"max_staleness must be >= 0 seconds, got {self.max_staleness}")


@dataclass(frozen=True, slots=True)
class TimeWindow:
    """The primary for ``window`` seconds after the session's last write; any replica after."""

    window: float = 2.0

    def __post_init__(self) -> None:
        if not self.window >= 0:
            raise ConfigurationError(f"the time window must be >= 0 seconds, got {self.window}")


ReadMode = Session | Latest | BoundedStaleness | TimeWindow
SESSION = Session()
LATEST = Latest()


@dataclass(frozen=True, slots=True)
class HealthPolicy:
    """When a replica leaves and rejoins the rotation.

    A replica is taken out after ``eject_after`` consecutive bad checks (the lag
    observer's polls and failed reads both count) and readmitted after
    ``readmit_after`` consecutive good ones. A check is bad when the replica is
    unreachable, is not a replica of this cluster, or lags more than ``max_lag``
    seconds (or ``max_lag_bytes``, if set). Lag ejections are capped: at most
    ``max_ejected_fraction`` of the replicas (and at least one) may be out for lag at
    once, so a detector bug or a global lag spike cannot empty the rotation; an
    unreachable replica is always taken out. Ejection stops new reads only: reads
    already running on the replica finish.
    """

    eject_after: int = 3
    readmit_after: int = 3
    max_lag: float = 30.0
    max_lag_bytes: int | None = None
    max_ejected_fraction: float = 0.5

    def __post_init__(self) -> None:
        if self.eject_after < 1 or self.readmit_after < 1:
            raise ConfigurationError(
                f"eject_after and readmit_after must be >= 1, got {self.eject_after} and {self.readmit_after}"
            )
        if not self.max_lag > 0:
            raise ConfigurationError(f"max_lag must be > 0 seconds, got {self.max_lag}")
        if self.max_lag_bytes is not None and self.max_lag_bytes <= 0:
            raise ConfigurationError(f"max_lag_bytes must be > 0, got {self.max_lag_bytes}")
        if not 0 <= self.max_ejected_fraction <= 1:
            raise ConfigurationError(f"max_ejected_fraction must be within [0, 1], got {self.max_ejected_fraction}")


@dataclass(frozen=True, slots=True)
class PrimaryProtection:
    """A token bucket over reads that fall back to the primary.

    ``rate`` fallback reads per second with bursts of ``burst``. Over the limit a read
    keeps waiting for a replica (or a token) up to ``max_wait`` more seconds, then raises
    :class:`~readscale.errors.ReplicaUnavailableError` with ``retry_after``. Reads of the
    time-window rule within their window are the rule's own choice and are not counted.
    """

    rate: float = 100.0
    burst: int = 50
    max_wait: float = 1.0

    def __post_init__(self) -> None:
        if not self.rate >= 0:
            raise ConfigurationError(f"the primary fallback rate must be >= 0 per second, got {self.rate}")
        if self.burst < 0:
            raise ConfigurationError(f"the primary fallback burst must be >= 0, got {self.burst}")
        if not self.max_wait >= 0:
            raise ConfigurationError(f"max_wait must be >= 0 seconds, got {self.max_wait}")


def _named_replicas(replicas: Mapping[str, str] | Sequence[str]) -> tuple[tuple[str, str], ...]:
    if isinstance(replicas, str):
        raise ConfigurationError("replicas must be a list of DSNs or a mapping of name to DSN, not one string")
    if isinstance(replicas, Mapping):
        pairs = tuple((str(name), str(dsn)) for name, dsn in replicas.items())
    else:
        pairs = tuple((f"r{i + 1}", str(dsn)) for i, dsn in enumerate(replicas))
    names = [name for name, _ in pairs]
    if len(set(names)) != len(names):
        raise ConfigurationError(f"replica names must be unique, got {names}")
    for name, dsn in pairs:
        if not name or name == PRIMARY:
            raise ConfigurationError(f"invalid replica name {name!r} ({PRIMARY!r} is reserved)")
        if not dsn.strip():
            raise ConfigurationError(f"replica {name} has an empty DSN")
    return pairs


@dataclass(frozen=True, repr=False)
class ReplicaSettings:
    """Everything a replica router needs: where the nodes are and how to route.

    ``replicas``: a list of DSNs (named r1, r2, ... in order) or a mapping of name to
    DSN. Each DSN must reach exactly one server (not a load balancer), because a
    replica's replay position is checked on that server before a read.

    ``postgres``: credentials and TLS applied to every node's DSN
    (:class:`readscale.settings.PostgresSettings`, e.g. ``PostgresSettings.from_env()``),
    so the password and ``sslmode=verify-full`` are set once for the whole cluster. The
    ``repr`` of these settings shows every DSN with its password masked.

    ``wait_budget``: how long a read waits for a replica to replay its target before it
    falls back to the primary. ``poll_interval``: how often the lag observer polls every
    node. ``token_source``: ``"write"`` (``pg_current_wal_lsn()``) is exact when commits
    flush before returning; use ``"insert"`` if any session runs with
    ``synchronous_commit = off``. ``seed``: makes replica choice reproducible in tests.
    """

    primary: str
    replicas: Mapping[str, str] | Sequence[str] = ()
    default_mode: ReadMode = SESSION
    wait_budget: float = 0.2
    poll_interval: float = 0.25
    health: HealthPolicy = field(default_factory=HealthPolicy)
    protection: PrimaryProtection = field(default_factory=PrimaryProtection)
    token_source: TokenSource = "write"  # noqa: S105 - which WAL function, not a secret
    min_pool_size: int = 1
    max_pool_size: int = 10
    acquire_timeout: float = 5.0
    connect_timeout: float = 2.0
    seed: int | None = None
    postgres: DsnOptions | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.primary, str) or not self.primary.strip():
            raise ConfigurationError("the primary DSN is empty")
        object.__setattr__(self, "replicas", _named_replicas(self.replicas))
        if self.postgres is not None and not isinstance(self.postgres, DsnOptions):
            raise ConfigurationError(
                f"postgres must be a PostgresSettings (anything with apply(dsn)), got {type(self.postgres).__name__}"
            )
        if not isinstance(self.default_mode, Session | Latest | BoundedStaleness | TimeWindow):
            raise ConfigurationError(f"default_mode must be a read mode, got {self.default_mode!r}")
        for name in ("wait_budget", "acquire_timeout"):
            if not getattr(self, name) >= 0:
                raise ConfigurationError(f"{name} must be >= 0 seconds, got {getattr(self, name)}")
        for name in ("poll_interval", "connect_timeout"):
            if not getattr(self, name) > 0:
                raise ConfigurationError(f"{name} must be > 0 seconds, got {getattr(self, name)}")
        if self.token_source not in ("write", "insert"):
            raise ConfigurationError(f"token_source must be 'write' or 'insert', got {self.token_source!r}")
        if not 0 <= self.min_pool_size <= self.max_pool_size or self.max_pool_size < 1:
            raise ConfigurationError(
                f"pool sizes must satisfy 0 <= min <= max and max >= 1, got {self.min_pool_size}..{self.max_pool_size}"
            )

    def __repr__(self) -> str:
        shown = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "primary":
                shown.append(f"primary={mask_dsn(value)!r}")
            elif f.name == "replicas":
                shown.append(f"replicas={tuple((name, mask_dsn(dsn)) for name, dsn in value)!r}")
            else:
                shown.append(f"{f.name}={value!r}")
        return f"ReplicaSettings({', '.join(shown)})"

    @property
    def replica_dsns(self) -> tuple[tuple[str, str], ...]:
        """``(name, dsn)`` of every replica, in order."""
        replicas = self.replicas
        assert isinstance(replicas, tuple)
        return replicas
