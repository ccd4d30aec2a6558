"""Cache policies: the five questions of caching, answered per data type.

- what:  ``key_template``, ``namespace`` (``versioned``: its keys carry a version
  counter, so bumping it makes every old key unreachable at once), ``tags``
- where: ``tiers`` (the in-process L1 and the remote L2)
- how:   the method called, not a field: ``get``/``set`` (cache-aside), ``get_or_load``
  (read-through), ``write_through``, and ``AsyncWriteBehind.write_behind`` (a field
  would only repeat that choice, or make methods refuse calls that disagree with it)
- when to invalidate: ``ttl`` with ``jitter``, the stale windows ``swr`` and ``sie``,
  XFetch early refresh (``early_refresh`` is its beta), and events, versions and tags
- what on miss: ``on_miss`` (load under a lease and make others wait, load everywhere,
  or serve stale while one caller loads)

Policies are frozen and validated on construction, so a bad one fails at import time,
not under load. Presets match the usual table of a read-heavy service.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import Enum

from readscale.errors import ConfigurationError


class Tier(Enum):
    L1 = "l1"
    L2 = "l2"


class OnMiss(Enum):
    #: One caller loads under a lease (across processes); the others wait for its fill.
    WAIT = "wait"
    #: One caller per process loads (single-flight only, no cross-process lease).
    LOAD = "load"


BOTH_TIERS = frozenset({Tier.L1, Tier.L2})


@dataclass(frozen=True, slots=True)
class CachePolicy:
    """How one kind of data is cached. Durations are in seconds.

    ``read_your_writes``: inside a causal scope that has written (a request carrying the
    token of its session's write), an entry read from the database before that write's
    WAL position is treated as a miss for this session and loaded again, wherever it
    sits (another process's L1, a Redis that missed the write-through during an outage).
    It needs entries filled through the replica router (they carry their read position).
    """

    name: str = "default"
    ttl: float = 300.0
    jitter: float = 0.1
    swr: float = 0.0
    sie: float = 0.0
    early_refresh: float = 1.0
    negative_ttl: float | None = None
    namespace: str = ""
    key_template: str | None = None
    tags: tuple[str, ...] = ()
    tiers: frozenset[Tier] = field(default=BOTH_TIERS)
    l1_ttl: float | None = 30.0
    on_miss: OnMiss = OnMiss.WAIT
    cacheable: bool = True
    schema: int = 0
    lease_ttl: float = 5.0
    lease_wait: float | None = None
    versioned: bool = False
    read_your_writes: bool = False

    def __post_init__(self) -> None:
        def bad(message: str) -> ConfigurationError:
            return ConfigurationError(f"cache policy {self.name!r}: {message}")

        if self.cacheable and not self.ttl > 0:
            raise bad(f"ttl must be > 0 seconds, got {self.ttl}")
        if not 0 <= self.jitter < 1:
            raise bad(f"jitter is a fraction in [0, 1), got {self.jitter}")
        for name in ("swr", "sie", "early_refresh"):
            value = getattr(self, name)
            if not value >= 0:
                raise bad(f"{name} must be >= 0, got {value}")
        if self.negative_ttl is not None and not self.negative_ttl > 0:
            raise bad(f"negative_ttl must be > 0 seconds or None, got {self.negative_ttl}")
        if self.l1_ttl is not None and not self.l1_ttl > 0:
            raise bad(f"l1_ttl must be > 0 seconds or None, got {self.l1_ttl}")
        if not self.lease_ttl > 0:
            raise bad(f"lease_ttl must be > 0 seconds, got {self.lease_ttl}")
        if self.lease_wait is not None and not self.lease_wait > 0:
            raise bad(f"lease_wait must be > 0 seconds or None, got {self.lease_wait}")
        if not self.tiers and self.cacheable:
            raise bad("a cacheable policy needs at least one tier")
        if ":" in self.namespace or not self.namespace.isprintable() or " " in self.namespace:
            raise bad(f"namespace must be printable, without ':' or spaces, got {self.namespace!r}")
        if self.versioned and not self.namespace:
            raise bad("a versioned policy needs a namespace (its keys carry the namespace's version)")
        for tag in self.tags:
            if not tag or not tag.isprintable() or " " in tag:
                raise bad(f"tags are printable names without spaces, got {tag!r}")
        if self.schema < 0 or self.schema >= 2**32:
            raise bad(f"schema is a version number in [0, 2**32), got {self.schema}")

    @property
    def uses_l1(self) -> bool:
        return Tier.L1 in self.tiers

    @property
    def uses_l2(self) -> bool:
        return Tier.L2 in self.tiers

    @property
    def wait_budget(self) -> float:
        """How long a caller waits for someone else's fill before loading itself."""
        return self.lease_wait if self.lease_wait is not None else self.lease_ttl + 1.0

    def ttl_for(self, value: object) -> float:
        """The fresh TTL before jitter: ``negative_ttl`` for a cached None."""
        if value is None and self.negative_ttl is not None:
            return self.negative_ttl
        return self.ttl

    def with_(self, **changes: object) -> CachePolicy:
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)  # type: ignore[arg-type]


DEFAULT = CachePolicy()

#: Fingerprinted static assets and other immutable data: a day fresh, served stale for
#: another hour while refreshing, and for a day if the origin fails.
STATIC_ASSETS = CachePolicy(name="static_assets", ttl=86_400.0, swr=3_600.0, sie=86_400.0, l1_ttl=3_600.0)

#: Product catalog pages and listings: an hour, refreshed early and in the background.
CATALOG = CachePolicy(name="catalog", ttl=3_600.0, swr=300.0, sie=3_600.0, l1_ttl=60.0)

#: User profiles: five minutes; write-through on update keeps them right.
PROFILE = CachePolicy(
    name="profile",
    ttl=300.0,
    swr=30.0,
    sie=300.0,
    l1_ttl=10.0,
    read_your_writes=True,
)

#: Account balances: never cached; every read goes to the database (read-your-writes).
BALANCE = CachePolicy(name="balance", cacheable=False, tiers=frozenset())

#: Trending lists: thirty seconds, refreshed early (XFetch with a larger beta) so the
#: hot key never expires under load.
TRENDING = CachePolicy(name="trending", ttl=30.0, early_refresh=2.0, swr=30.0, sie=300.0, l1_ttl=5.0)

PRESETS: dict[str, CachePolicy] = {p.name: p for p in (DEFAULT, STATIC_ASSETS, CATALOG, PROFILE, BALANCE, TRENDING)}
