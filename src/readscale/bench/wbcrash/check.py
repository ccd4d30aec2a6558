"""What survived a crash run: the database and the cache compared with what every
producer was told, and whether that kept the mode's promise (:func:`promise_kept`)."""

from __future__ import annotations

import bisect
import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from readscale._core.writebehind.modes import FAST_LOSS_WINDOW, WriteBehindMode, coerce_mode


@dataclass
class CrashResult:
    """What a run measured (see :func:`run_crash`)."""

    plan: dict[str, Any]
    acknowledged_writes: int = 0
    acknowledged_increments: int = 0
    unacknowledged_attempts: int = 0
    lost_writes: int = 0
    lost_write_max_age: float = 0.0
    lost_outside_window: int = 0
    #: Ages of the first losses outside the window (-1: lost with no kill after it).
    outside_window_ages: list[float] = field(default_factory=list)
    version_regressions: int = 0
    wrong_values: int = 0
    cache_database_mismatches: int = 0
    counters: int = 0
    counter_increments_lost: int = 0
    counter_lost_outside_window: int = 0
    counter_overcount: int = 0
    redis_kills: dict[str, int] = field(default_factory=dict)
    killed_during_rewrite: int = 0
    flusher_kills: int = 0
    aof_delayed_fsync_max: int = 0
    flusher_logged_delayed_fsync: bool = False
    fsyncs: int = 0
    producer_errors: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check(
    result: CrashResult,
    producers: int,
    dsn: str,
    url: str,
    table: str,
    prefix: str,
    folder: Path,
    kills: list[float],
) -> None:
    """Compare the database (and the cache) with what the producers were told."""
    import psycopg

    from readscale import NO_VALUE, RedisSettings
    from readscale._sync.backends.redis import RedisBackend
    from readscale._sync.cache.cache import Cache
    from readscale.bench._wbproducer import POLICY

    def age(acked_at: float) -> float | None:
        """Seconds from an acknowledgement to the next Redis kill (None: no kill after it)."""
        i = bisect.bisect_left(kills, acked_at)
        return kills[i] - acked_at if i < len(kills) else None

    acked: dict[str, dict[int, tuple[int, int, float]]] = {}  # key -> version -> (producer, seq, time)
    maybe: set[tuple[int, int]] = set()
    increments: dict[str, list[float]] = {}
    unacked_increments: Counter[str] = Counter()
    for i in range(producers):
        data = json.loads((folder / f"producer-{i}.json").read_text())
        for key, version, seq, at in data["acked"]:
            acked.setdefault(key, {})[version] = (i, seq, at)
        maybe.update((i, seq) for _, seq in data["unacked"])
        for key, at in data["increments"]:
            increments.setdefault(key, []).append(at)
        unacked_increments.update(data["unacked_increments"])
        result.producer_errors += data["errors"]
    result.acknowledged_writes = sum(len(v) for v in acked.values())
    result.acknowledged_increments = sum(len(v) for v in increments.values())
    result.unacknowledged_attempts = len(maybe) + sum(unacked_increments.values())
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(f"SELECT key, version, value, views FROM {table}").fetchall()  # noqa: S608
        backwards = conn.execute(f"SELECT count(*) FROM {table}_regressions").fetchone()  # noqa: S608
    stored = {k: (v, val) for k, v, val, _ in rows if val is not None}
    views = {k: int(n) for k, _, _, n in rows if n}
    assert backwards is not None
    regressions = int(backwards[0])
    window = FAST_LOSS_WINDOW
    for key, versions in acked.items():
        db_version, value = stored.get(key, (0, None))
        for version, (_, _, at) in versions.items():
            if version > db_version:
                result.lost_writes += 1
                lost_age = age(at)
                if lost_age is None or lost_age > window:
                    result.lost_outside_window += 1
                    if len(result.outside_window_ages) < 10:
                        result.outside_window_ages.append(-1.0 if lost_age is None else round(lost_age, 3))
                else:
                    result.lost_write_max_age = max(result.lost_write_max_age, round(lost_age, 3))
        last = max(versions)
        if db_version == last:
            result.wrong_values += (value["p"], value["s"]) != versions[last][:2]
        elif db_version > last:  # an unacknowledged write that Redis had executed
            result.wrong_values += (value["p"], value["s"]) not in maybe
    for key in stored.keys() - acked.keys():
        result.wrong_values += (stored[key][1]["p"], stored[key][1]["s"]) not in maybe
    result.version_regressions = regressions
    for key in set(increments) | set(views) | set(unacked_increments):
        times = increments.get(key, [])
        count = views.get(key, 0)
        lost = max(0, len(times) - count)
        allowed = sum(1 for at in times if (a := age(at)) is not None and a <= window)
        result.counter_increments_lost += lost
        result.counter_lost_outside_window += max(0, lost - allowed)
        result.counter_overcount += max(0, count - len(times) - unacked_increments.get(key, 0))
    result.counters = len(set(increments) | set(views))
    cache = Cache(RedisBackend(RedisSettings(url=url)), policy=POLICY, prefix=prefix)
    try:
        cached = cache.get_many(sorted(stored))
    finally:
        cache.close()
    result.cache_database_mismatches = sum(1 for k, (_, v) in stored.items() if cached.get(k, NO_VALUE) != v)


def promise_kept(result: CrashResult) -> bool:
    """Did the run keep its mode's promise? ``durable``: nothing lost, nothing counted
    twice, cache and database agree; ``fast``: losses only within the window, and, unless
    a host crashed (its window adds the disk's fsync time), cache and database agree."""
    mode = coerce_mode(result.plan["mode"])
    common = (
        result.version_regressions == 0
        and result.wrong_values == 0
        and result.counter_overcount == 0
        and not result.producer_errors
    )
    if mode is WriteBehindMode.DURABLE:
        return (
            common
            and result.lost_writes == 0
            and result.counter_increments_lost == 0
            and result.cache_database_mismatches == 0
        )
    agree = result.cache_database_mismatches == 0 or "host" in result.plan["redis_kills"]
    return common and agree and result.lost_outside_window == 0 and result.counter_lost_outside_window == 0


__all__ = ["CrashResult", "check", "promise_kept"]
