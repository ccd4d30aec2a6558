"""Read replicas with read-your-writes by WAL position.

    from readscale import AsyncReplicaRouter, ReplicaSettings, causal_context

    router = AsyncReplicaRouter(ReplicaSettings(primary=PRIMARY_DSN, replicas=[R1_DSN, R2_DSN]))
    async with router:
        with causal_context():                      # one per request, job or session
            async with router.write() as conn:      # primary; token learned at COMMIT
                await conn.execute("UPDATE items SET price = %s WHERE id = %s", (9, 1))
            rows = await router.fetch("SELECT price FROM items WHERE id = %s", (1,))  # sees 9

Reads go to a replica only once it has replayed the session's causal token (checked by
a guard before the read's snapshot), wait a little for one to catch up, and fall back
to the primary behind a rate limit. Per read: ``SESSION`` (default), ``LATEST``,
``BoundedStaleness(seconds)``, or the classic ``TimeWindow(2.0)``. Carry the token
across requests with the ``CausalTokenMiddleware`` of :mod:`readscale.starlette`,
:mod:`readscale.flask` or :mod:`readscale.django` (cookie :data:`DEFAULT_COOKIE`), and
across jobs and services with :func:`dump_token` / :func:`load_token`.

The day-one names (the routers, ``ReplicaSettings``, the read modes, ``causal_context``,
``TokenSigner``, ``dump_token``, ``load_token``) are on ``readscale``; this module holds
the rest (the token's types, ``Session``/``Latest``, health and protection settings,
``ReplicaStatus``, ``RouterStats``, ``TOKEN_HEADER``, ``DEFAULT_COOKIE``, ``use_mode``). The routers need
psycopg (``pip install 'readscale[postgres]'``); the tokens, the context and the
middleware do not.
"""

from __future__ import annotations

from readscale._core.postgres.lsn import format_lsn, parse_lsn
from readscale._core.replicas.causal import CarriedToken, CausalToken, ClusterIdentity
from readscale._core.replicas.health import ReplicaStatus
from readscale._core.replicas.settings import PRIMARY, HealthPolicy, Latest, PrimaryProtection, ReadMode, Session
from readscale._shared.replicas.causal_context import TOKEN_HEADER, CausalContext, current_context, use_mode
from readscale._shared.replicas.topology import RouterStats
from readscale.replicas._carry import DEFAULT_COOKIE

__all__ = [
    "DEFAULT_COOKIE",
    "PRIMARY",
    "TOKEN_HEADER",
    "CarriedToken",
    "CausalContext",
    "CausalToken",
    "ClusterIdentity",
    "HealthPolicy",
    "Latest",
    "PrimaryProtection",
    "ReadMode",
    "ReplicaStatus",
    "RouterStats",
    "Session",
    "current_context",
    "format_lsn",
    "parse_lsn",
    "use_mode",
]
