"""The cache's face beyond the day-one names (those are on ``readscale``): what a cache
fill must read and how a loader declares its reads, and the invalidation bus's counters.

What a cache fill must read, and how its reads are declared.

When the cache loads a value (a miss, a stale entry, ``@cached``), it opens a *fill
scope* around the loader. The scope carries what every read of the fill must satisfy,
and collects what each read actually saw; the cache stores the value only if every read
passed (see ``readscale._core.cache.fill`` for why this makes a stale fill impossible):

- ``floor_lsn``: the WAL position of the last invalidation of the key, its tags and its
  namespace (:data:`PRIMARY_ONLY` when that position is unknown: only the primary
  passes);
- ``max_staleness``: an upper bound, in seconds, on how stale any read may be (below the
  tombstone's life).

**The replica router honours both by itself**: a read inside a fill goes to a replica
that has replayed the floor and is fresh enough, or to the primary, and reports what it
read (:meth:`~readscale.replicas.ReplicaRouter.fetch`, ``read()``, ``route_read`` and
the Django and SQLAlchemy integrations built on it). Nothing to do in a loader that
reads through it.

**A loader that reads elsewhere declares its source**, or its fill is refused while a
tombstone stands (counted in ``cache.stats.loader.fills_refused_undeclared_source`` and
logged once):

- on the primary (a psycopg connection of its own, an ORM without the router): call
  :func:`report_primary_read` in the loader, or build the cache with
  ``loader_source="primary"`` (every loader that declares nothing is taken to read the
  primary);
- on a replica of its own: read the replica's ``pg_last_wal_replay_lsn()`` in a
  statement before the query and call :func:`report_read_lsn` with it and an upper
  bound on the replica's staleness (:func:`fill_requirements` tells what is needed).

Outside a fill every function here is a no-op, so loaders can call them unconditionally.
"""

from readscale._async.cache.bus import BusStats
from readscale._shared.cache.fill_scope import PRIMARY_ONLY, fill_requirements, report_primary_read, report_read_lsn

__all__ = ["PRIMARY_ONLY", "BusStats", "fill_requirements", "report_primary_read", "report_read_lsn"]
