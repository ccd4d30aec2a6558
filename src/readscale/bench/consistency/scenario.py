"""What one run of the consistency harness does, drawn from a seed: the service's
configuration, the sessions' mix of reads and writes, and the faults with their times.

Everything random about a run is decided here, from ``random.Random(seed)``, so a seed
names a run: the same seed gives the same processes, sessions, keys, APIs, modes and
fault schedule (the interleaving with real servers still varies, so a violation usually,
not always, comes back). Which guarantee each read claims is decided here too
(:func:`claims_for`), from what the README promises for the API it went through.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from typing import Any

from readscale._core.consistency.history import Claims

#: Reads through the replica router: the session guarantees (or the mode's bound).
ROUTER_APIS = ("fetch", "fetch_one", "read", "sqlalchemy", "django")
#: Reads through the cache's read-through (``get_or_load``, ``@cached``, the sync cache).
CACHE_APIS = ("cache_key", "cache_tag", "cached", "cache_profile", "dj_cache")
READ_APIS = ROUTER_APIS + CACHE_APIS
#: Reads of write-behind keys (``get_or_load``; the writes are ``write_behind``): drawn
#: apart from READ_APIS, on their own keys, in scenarios with write-behind.
WB_API = "cache_wb"
#: Replica apply delays drawn (seconds): 0 to 40 s.
DELAYS = (0.0, 0.05, 0.2, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 25.0, 40.0)
#: How long after an invalidation completed a stale value may still be served (seconds):
#: the invalidation bus's delivery to every other process (its target is 100 ms, p99
#: measured 0.3 ms) with room for a loaded 2-core machine. See docs/consistency-testing.md.
DEFAULT_BOUND = 1.0
SABOTAGES = ("guard", "merge", "staleness", "tombstone", "bus")
#: The cache's L2, drawn per seed: Redis most often, as the README's examples use it.
BACKENDS = ("redis", "redis", "redis", "redis", "memcached", "cluster")


@dataclass(frozen=True)
class Fault:
    """At ``at`` seconds into the run, do ``action`` to ``target`` (a replica: r1, r2)."""

    at: float
    action: str  # delay, pause, resume, kill, start, bus_kill, bus_start, redis_kill, redis_start
    target: str = ""
    value: float = 0.0

    def describe(self) -> str:
        value = f" {self.value:g}s" if self.action == "delay" else ""
        return f"+{self.at:.1f}s {self.action} {self.target}{value}".rstrip()


@dataclass(frozen=True)
class Scenario:
    seed: int
    duration: float
    processes: int
    sessions: int
    #: Of the sessions, how many send no cookie (crawlers, first visits): reads only, no token.
    anonymous: int
    keys: int
    write_ratio: float
    cdc: bool
    #: Share of writes whose invalidation is left to the CDC worker alone.
    cdc_only: float
    #: The cache's tombstone life; None: the library's default (what users get).
    tombstone_ttl: float | None
    backend: str
    #: "shared": the bus on the cache's Redis (as the README shows); "separate": its own Redis.
    bus: str
    read_block_delay: float
    apis: tuple[str, ...]
    faults: tuple[Fault, ...]
    bound: float = DEFAULT_BOUND
    sabotage: tuple[str, ...] = ()
    #: Share of writes made by the Django app (the rest by the Starlette app's router.write()),
    #: and of those, the share made with the ORM in atomic() (the rest: raw SQL, autocommit).
    django_writes: float = 0.25
    orm_writes: float = 0.5
    #: Router reads use LATEST and bounded staleness now and then (else the session's mode only).
    modes: bool = True
    #: A loader's own work after its read: half to all of this many seconds (a slow render).
    load_work: float = 0.0
    think: float = 0.01
    #: Share of operations on write-behind keys (their own rows, written by
    #: ``write_behind`` and a flusher, read through the cache): 0, none. Redis only.
    write_behind: float = 0.0
    #: Keep the sessions going past ``duration`` (at most ``MIN_READS_GRACE`` times it)
    #: until this many reads were sent: on a loaded machine a seed still checks a sample.
    min_reads: int = 0
    extras: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        parts = [
            f"seed {self.seed}: {self.processes} process{'es' if self.processes > 1 else ''}",
            f"{self.sessions} sessions ({self.anonymous} anonymous) over {self.keys} keys for {self.duration:g}s",
            f"{self.write_ratio:.0%} writes",
            f"CDC {'on' if self.cdc else 'off'}" + (f" ({self.cdc_only:.0%} of writes CDC-only)" if self.cdc else ""),
            f"tombstone {'default' if self.tombstone_ttl is None else f'{self.tombstone_ttl:g}s'}",
            f"{self.backend}, bus {self.bus}",
        ]
        if self.read_block_delay:
            parts.append(f"read() blocks work up to {self.read_block_delay:g}s")
        if self.load_work:
            parts.append(f"loaders work up to {self.load_work:g}s")
        if self.write_behind:
            parts.append(f"{self.write_behind:.0%} of operations on write-behind keys")
        if self.sabotage:
            parts.append(f"SABOTAGE {'+'.join(self.sabotage)}")
        return ", ".join(parts)

    def with_(self, **changes: Any) -> Scenario:
        return replace(self, **changes)


def _window(rng: random.Random, duration: float, *, shortest: float, longest: float) -> tuple[float, float]:
    start = rng.uniform(0.0, duration * 0.6)
    return start, min(start + rng.uniform(shortest, longest), duration * 0.95)


def draw_faults(rng: random.Random, duration: float, processes: int, *, bus: str) -> tuple[Fault, ...]:
    faults: list[Fault] = []
    for replica in ("r1", "r2"):
        pattern = rng.choice(("none", "delay", "delay", "delay", "pause", "kill", "mixed"))
        if pattern in ("delay", "mixed"):
            at = rng.choice((0.0, 0.0, rng.uniform(0, duration * 0.5)))
            faults.append(Fault(at, "delay", replica, rng.choice(DELAYS)))
            if rng.random() < 0.4:
                faults.append(Fault(rng.uniform(at, duration * 0.9), "delay", replica, rng.choice(DELAYS)))
        if pattern in ("pause", "mixed"):
            start, end = _window(rng, duration, shortest=0.5, longest=duration * 0.5)
            faults += [Fault(start, "pause", replica), Fault(end, "resume", replica)]
        if pattern == "kill":
            start, end = _window(rng, duration, shortest=1.0, longest=3.0)
            faults += [Fault(start, "kill", replica), Fault(end, "start", replica)]
    roll = rng.random()
    if roll < 0.3:
        start, end = _window(rng, duration, shortest=0.5, longest=3.0)
        faults += [Fault(start, "bus_kill"), Fault(end, "bus_start")]
    elif roll < 0.4 and bus == "separate":
        start, end = _window(rng, duration, shortest=1.0, longest=3.0)
        faults += [Fault(start, "redis_kill"), Fault(end, "redis_start")]
    return tuple(sorted(faults, key=lambda f: f.at))


def draw_scenario(seed: int, duration: float = 10.0) -> Scenario:
    """The run named by ``seed`` and ``duration`` (fault times scale with the duration)."""
    rng = random.Random(seed)
    processes = rng.choice((1, 2, 2, 2, 3))
    cdc = rng.random() < 0.5
    bus = rng.choice(("shared", "shared", "separate"))
    apis = READ_APIS if rng.random() < 0.7 else tuple(rng.sample(READ_APIS, rng.randint(2, len(READ_APIS))))
    scenario = Scenario(
        seed=seed,
        duration=duration,
        processes=processes,
        sessions=rng.randint(6, 14),
        anonymous=rng.randint(1, 3),
        # Few hot keys (every guarantee under contention) or many cold ones (a key nobody
        # refills for seconds after its invalidation, as a catalog's long tail).
        keys=rng.randint(3, 16) if rng.random() < 0.6 else rng.randint(40, 120),
        write_ratio=rng.uniform(0.08, 0.3),
        cdc=cdc,
        cdc_only=rng.choice((0.0, 0.2, 0.5)) if cdc else 0.0,
        tombstone_ttl=rng.choice((None, None, None, 45.0)),
        bus=bus,
        read_block_delay=rng.choice((0.0, 0.02, 0.1, 0.3)),
        apis=apis,
        faults=draw_faults(rng, duration, processes, bus=bus),
        # Drawn last, so that adding it changed no other seed's scenario.
        backend=rng.choice(BACKENDS),
    )
    # Drawn after everything else (no other field moved). Write-behind runs on a
    # standalone Redis only, and the harness's Redis has no persistence: a run that
    # kills it would lose queued writes by design (volatile mode), not by a defect.
    share = rng.choice((0.0, 0.0, 0.2, 0.4))
    if scenario.backend == "redis" and not any(f.action == "redis_kill" for f in scenario.faults):
        scenario = replace(scenario, write_behind=share)
    return scenario


def mode_for(rng: random.Random, api: str, *, varied: bool = True) -> str:
    """The read mode of one router read: mostly the session's, sometimes latest or bounded."""
    if api not in ROUTER_APIS or api == "django" or not varied:
        return "session"
    roll = rng.random()
    if roll < 0.75:
        return "session"
    if roll < 0.85:
        return "latest"
    return f"bs:{rng.choice((0.5, 2.0, 10.0)):g}"


def claims_for(api: str, mode: str, loaded: bool, bound: float) -> tuple[Claims, bool]:
    """What the README promises for a read, and whether it moved the session's position.

    - A router read in the session's mode: read-your-writes and monotonic reads (the
      causal token). ``LATEST``: those, and every write acknowledged before it began.
      ``BoundedStaleness(s)``: every write acknowledged more than ``s`` seconds before.
      Each merges the replica's position into the session (it *observes*).
    - A read through the cache: no value older than an invalidation completed more than
      the bound ago. When this request's own loader ran, the value came from a router
      read in the session's context, so the session guarantees hold for it too. Under
      ``PROFILE`` (``read_your_writes=True``) a cached entry older than the session's own
      write is never served.
    """
    if api in ROUTER_APIS:
        if mode == "session":
            return Claims(read_your_writes=True, monotonic_reads=True), True
        if mode == "latest":
            return Claims(read_your_writes=True, monotonic_reads=True, max_staleness=0.0), True
        if mode.startswith("bs:"):
            return Claims(max_staleness=float(mode[3:])), True
        raise ValueError(f"unknown mode {mode!r}")
    if api in CACHE_APIS or api == WB_API:
        return (
            Claims(
                read_your_writes=loaded or api == "cache_profile",
                monotonic_reads=loaded,
                invalidation_bound=bound,
            ),
            loaded,
        )
    raise ValueError(f"unknown api {api!r}")
