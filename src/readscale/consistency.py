"""Measured consistency: how often the cache disagrees with the database after a change.

    from readscale.consistency import AsyncConsistencyChecker
    checker = AsyncConsistencyChecker(cache, truth=load_from_db, sample_rate=0.01, delay=1.0)

A sample of invalidations is re-read from the cache and from the database after
``delay`` (in the manner of Meta's Polaris); the stale rate is reported in nines and to
Prometheus. ``readscale consistency check`` does the same from a shell.
"""

from readscale._async.consistency import AsyncConsistencyChecker
from readscale._sync.consistency import ConsistencyChecker

__all__ = ["AsyncConsistencyChecker", "ConsistencyChecker"]
