"""The change-data-capture backstop: PostgreSQL logical decoding -> cache invalidations.

Rows changed by anything (the application, a migration, someone in psql) invalidate
their cache keys and tags. The worker reads the slot with the SQL interface (psycopg 3
cannot stream the replication protocol): it *peeks* a batch of committed transactions,
applies their invalidations (with the commit LSN as tombstone, so a lagging replica
cannot refill old data), and only then *advances* the slot. A crash between the two
re-delivers the batch: at-least-once, and duplicates are harmless.

A slot that is missing or lost (``wal_status = 'lost'`` after ``max_slot_wal_keep_size``)
means changes may have been missed: the worker recreates it and flushes what it guards
(versioned namespaces, an epoch tag, every process's L1) instead of going on silently.

Tombstones and tag floors carry the commit's LSN and live the cache's ``tombstone_ttl``,
the one setting the worker shares with the application (``READSCALE_TOMBSTONE_TTL``;
a cache server remembers the first value and refuses another): a tombstone's expiry only
grows, so the worker never shortens one the application left.

Before its first batch the worker checks what it needs (:meth:`AsyncCdcWorker.check`):
``wal_level = logical``, a role allowed to use replication slots, every rule's table and
the columns its templates name, and the cache's shared settings; a failure is a
:class:`ConfigurationError` naming what is missing (``readscale cdc run`` exits 2).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import psycopg

from readscale._async.cache.cache import AsyncCache
from readscale._core.cache.policy import CachePolicy
from readscale._core.cdc.lag import LagSamples
from readscale._core.cdc.rules import (
    CdcRule,
    CdcSettings,
    Invalidation,
    format_lsn,
    group_transactions,
    invalidations_for,
)
from readscale._shared.cdc.stats import CdcStats
from readscale._shared.primitives.locks import AsyncEvent, async_maybe_await, async_sleep
from readscale._shared.tracing import CONSUMER, maybe_span, note
from readscale.errors import BackendError, CacheUnavailableError, ConfigurationError, ReadscaleError
from readscale.settings import connection_string

log = logging.getLogger("readscale.cdc")


class AsyncCdcWorker:
    """Reads the slot and invalidates ``cache`` according to ``rules``.

    ``policies`` maps a rule's namespace to the cache policy of its keys (so versioned
    namespaces get the right physical keys); by default the cache's policy with that
    namespace. ``purger`` (optional, an edge purger from ``readscale.http.purge``) gets the
    same tags and keys after the cache is invalidated. ``on_applied(commit_lsn)`` is
    called after a batch's invalidations are applied and before the slot is advanced
    (metrics, the consistency checker, fault injection in tests).
    """

    def __init__(
        self,
        cache: AsyncCache,
        rules: Sequence[CdcRule],
        settings: CdcSettings,
        *,
        policies: Mapping[str, CachePolicy] | None = None,
        purger: Any | None = None,
        on_applied: Callable[[int], Any] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if not rules:
            raise ConfigurationError("the CDC worker needs at least one rule")
        self.cache = cache
        self.rules = tuple(rules)
        self.settings = settings
        # Checked (and credentials/TLS applied) now: a bad DSN fails here, masked.
        self._conninfo = connection_string(settings.dsn, settings.postgres, name="CdcSettings.dsn")
        self.stats = CdcStats()
        self._policies = dict(policies or {})
        self._purger = purger
        self._on_applied = on_applied
        self._conn: Any = None
        self._database_checked = False
        self._lag = LagSamples()
        self._monotonic = monotonic

    # -- startup checks --------------------------------------------------------------------

    async def check(self) -> None:
        """Check once what the worker needs, before it reads anything: raise
        ConfigurationError naming the first thing missing (see the module docstring), or
        CacheUnavailableError while the cache server cannot be asked (``run`` retries)."""
        if not self._database_checked:
            await self.check_database()
        await self.cache.check()

    async def check_database(self) -> None:
        """The PostgreSQL half of :meth:`check`: logical WAL, a role allowed to use
        replication slots, every rule's table and the columns its templates name."""
        conn = await self._connection()
        cur = await conn.execute(
            "SELECT current_user, current_setting('wal_level'), "
            "(SELECT rolsuper OR rolreplication FROM pg_roles WHERE rolname = current_user)"
        )
        row = await cur.fetchone()
        assert row is not None
        user, wal_level, may_replicate = row
        if wal_level != "logical":
            raise ConfigurationError(
                f"CDC needs wal_level = logical on the primary, it is {wal_level}: set it and restart PostgreSQL"
            )
        if not may_replicate:
            raise ConfigurationError(
                f"PostgreSQL role {user!r} may not use replication slots: ALTER ROLE {user} REPLICATION "
                "(or run the worker as a role that has it)"
            )
        for rule in self.rules:
            cur = await conn.execute("SELECT to_regclass(%s)::oid", (rule.qualified_table,))
            found = await cur.fetchone()
            if found is None or found[0] is None:
                raise ConfigurationError(f"CDC rule for {rule.table}: table {rule.qualified_table} does not exist")
            cur = await conn.execute(
                "SELECT attname FROM pg_attribute WHERE attrelid = %s AND attnum > 0 AND NOT attisdropped",
                (found[0],),
            )
            columns = {r[0] for r in await cur.fetchall()}
            missing = sorted(rule.fields() - columns)
            if missing:
                raise ConfigurationError(
                    f"CDC rule for {rule.table}: {rule.qualified_table} has no column {', '.join(missing)} "
                    f"(its templates use {', '.join(sorted(rule.fields()))})"
                )
        self._database_checked = True

    # -- connection and slot ---------------------------------------------------------------

    async def _connection(self) -> Any:
        if self._conn is None or self._conn.closed:
            try:
                self._conn = await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True)
            except psycopg.Error as exc:
                raise BackendError(f"CDC cannot connect to PostgreSQL: {exc}", backend="postgres") from exc
        return self._conn

    async def _slot_status(self) -> str | None:
        conn = await self._connection()
        cur = await conn.execute(
            "SELECT coalesce(wal_status, 'reserved') FROM pg_replication_slots WHERE slot_name = %s",
            (self.settings.slot,),
        )
        row = await cur.fetchone()
        return None if row is None else str(row[0])

    async def ensure_slot(self) -> bool:
        """Create the slot if it is missing, or recreate it if it was lost; True if it was
        (re)created, in which case changes may have been missed and the guarded data was
        flushed."""
        status = await self._slot_status()
        if status is not None and status != "lost":
            return False
        conn = await self._connection()
        if status == "lost":
            log.error(
                "cdc: slot %s was lost (WAL removed before it was read); recreating it",
                self.settings.slot,
                extra={"event": "cdc_slot_lost", "slot": self.settings.slot},
            )
            await conn.execute("SELECT pg_drop_replication_slot(%s)", (self.settings.slot,))
        try:
            await conn.execute("SELECT pg_create_logical_replication_slot(%s, 'wal2json')", (self.settings.slot,))
        except psycopg.errors.InsufficientPrivilege as exc:
            raise ConfigurationError(
                "PostgreSQL does not allow wal2json as a logical decoding plugin here: add it to "
                "output_plugin_libraries (e.g. 'pgoutput, test_decoding, wal2json') and reload"
            ) from exc
        except psycopg.errors.UndefinedFile as exc:
            raise ConfigurationError(
                "wal2json is not installed on the PostgreSQL server: apt-get install -y postgresql-15-wal2json"
            ) from exc
        await self._flush_guarded(reason="slot lost" if status == "lost" else "slot created")
        return True

    async def _flush_guarded(self, reason: str) -> None:
        """Changes before now may be unknown: make everything the rules cover refill."""
        self.stats.slot_resets += 1
        namespaces = {rule.namespace for rule in self.rules}
        for namespace in sorted(namespaces):
            policy = self._policy(namespace)
            if policy.versioned:
                await self.cache.invalidate_namespace(namespace)
            elif self.settings.epoch_tag is None:
                log.warning(
                    "cdc: %s, but namespace %r is neither versioned nor guarded by an epoch tag: "
                    "its L2 entries may be stale until their TTL",
                    reason,
                    namespace,
                    extra={
                        "event": "cdc_namespace_unguarded",
                        "slot": self.settings.slot,
                        "namespace": namespace,
                        "reason": reason,
                    },
                )
        if self.settings.epoch_tag is not None:
            await self.cache.invalidate_tags(self.settings.epoch_tag)
        await self.cache.flush_everywhere()

    def _policy(self, namespace: str) -> CachePolicy:
        policy = self._policies.get(namespace)
        if policy is None:
            policy = (
                self.cache.policy
                if self.cache.policy.namespace == namespace
                else self.cache.policy.with_(namespace=namespace, versioned=False)
            )
        return policy

    # -- the loop --------------------------------------------------------------------------

    async def run_once(self) -> int:
        """Apply one batch; how many transactions it held (0: nothing new)."""
        if not self._database_checked:
            await self.check_database()
        await self.ensure_slot()
        # The cache checks its own settings on its first call (a different tombstone_ttl
        # is refused there); while it is down the batch still purges the edge.
        conn = await self._connection()
        try:
            cur = await conn.execute(
                "SELECT lsn::text, xid::text, data FROM pg_logical_slot_peek_changes("
                "%s, NULL, %s, 'format-version', '2', 'include-transaction', 'true')",
                (self.settings.slot, self.settings.batch_changes),
            )
            rows = await cur.fetchall()
        except psycopg.errors.ObjectNotInPrerequisiteState as exc:  # slot invalidated meanwhile
            log.error(
                "cdc: slot %s cannot be read (%s)",
                self.settings.slot,
                exc,
                extra={"event": "cdc_slot_unreadable", "slot": self.settings.slot, "reason": str(exc)},
            )
            await conn.execute("SELECT pg_drop_replication_slot(%s)", (self.settings.slot,))
            await self.ensure_slot()
            return 0
        transactions, advance_to = group_transactions(rows)
        if advance_to is None:
            await self._measure_lag()
            return 0
        position = format_lsn(advance_to)
        attributes: dict[str, str | int] = {
            "db.system.name": "postgresql",
            "readscale.cdc.slot": self.settings.slot,
            "readscale.cdc.transactions": len(transactions),
            "readscale.cdc.changes": sum(len(t.changes) for t in transactions),
            "readscale.cdc.position": position,  # the slot's confirmed position once the batch is applied
        }
        with maybe_span("readscale.cdc.batch", attributes, CONSUMER):
            batch = [invalidations_for(t, self.rules) for t in transactions]
            await self._apply(batch)
            if self._on_applied is not None:
                await async_maybe_await(self._on_applied(advance_to))
            # Only now is the position confirmed: a crash before this line re-delivers the batch.
            await conn.execute("SELECT pg_replication_slot_advance(%s, %s::pg_lsn)", (self.settings.slot, position))
        self.stats.batches += 1
        self.stats.transactions += len(transactions)
        self.stats.changes += sum(len(t.changes) for t in transactions)
        self.stats.last_commit_lsn = advance_to
        await self._measure_lag()
        return len(transactions)

    async def _apply(self, batch: Sequence[Invalidation]) -> None:
        if not batch:
            return
        # One call per namespace for the whole batch. The newest commit LSN of the batch is
        # the tombstone for every key in it: conservative (fills must be at least that fresh).
        # Without tombstones (an old setting) the position is left unknown: fills then read
        # the primary while the tombstones stand.
        lsn = max(inv.commit_lsn for inv in batch) if self.settings.tombstones else None
        by_namespace: dict[str, set[str]] = {}
        tags: set[str] = set()
        truncated: set[str] = set()
        for inv in batch:
            for namespace, key in inv.keys:
                by_namespace.setdefault(namespace, set()).add(key)
            tags |= inv.tags
            truncated |= inv.truncated_namespaces
            self.stats.unmapped_tables |= inv.unmapped_tables
        surrogate = sorted(tags | {k for keys in by_namespace.values() for k in keys})
        try:
            for namespace, keys in by_namespace.items():
                await self.cache.invalidate(*sorted(keys), policy=self._policy(namespace), lsn=lsn)
                self.stats.keys_invalidated += len(keys)
            note("readscale.cdc.keys_invalidated", sum(len(keys) for keys in by_namespace.values()))
            if tags:
                await self.cache.invalidate_tags(*sorted(tags), lsn=lsn)
                self.stats.tags_invalidated += len(tags)
                note("readscale.cdc.tags_invalidated", len(tags))
            for namespace in truncated:
                if self._policy(namespace).versioned:
                    await self.cache.invalidate_namespace(namespace, lsn=lsn)
                else:
                    log.warning(
                        "cdc: a TRUNCATE hit namespace %r, which is not versioned: keys stay until TTL",
                        namespace,
                        extra={"event": "cdc_truncate_unversioned", "slot": self.settings.slot, "namespace": namespace},
                    )
        except CacheUnavailableError:
            # The cache cannot hear it now; the batch is not acknowledged and comes back
            # once it can. The edge can: purge it now so its copies do not outlive the
            # outage (the service reads the database meanwhile), and again on the retry.
            if surrogate:
                with contextlib.suppress(ReadscaleError):
                    await self._purge(surrogate)
            raise
        if surrogate:
            await self._purge(surrogate)

    async def _purge(self, surrogate: list[str]) -> None:
        if self._purger is not None:
            await self._purger.purge_tags(surrogate, soft=self.settings.soft_purge)

    async def _measure_lag(self) -> None:
        conn = await self._connection()
        cur = await conn.execute(
            "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint, "
            "pg_wal_lsn_diff(confirmed_flush_lsn, '0/0')::bigint "
            "FROM pg_replication_slots WHERE slot_name = %s",
            (self.settings.slot,),
        )
        row = await cur.fetchone()
        if not row or row[0] is None:
            self.stats.lag_bytes, self.stats.lag_seconds = 0, 0.0
            return
        current, confirmed = int(row[0]), int(row[1])
        self.stats.lag_bytes = max(0, current - confirmed)
        self.stats.lag_seconds = self._lag.seconds(current=current, confirmed=confirmed, now=self._monotonic())

    async def run(self, stop: AsyncEvent | None = None, *, tick: Callable[[], Any] | None = None) -> None:
        """Apply batches until ``stop`` is set; errors (PostgreSQL or the cache down) are
        logged, counted and retried: the unconfirmed batch comes back. ``tick`` is
        called after every round (a live display)."""
        stop = stop or AsyncEvent()
        while not stop.is_set():
            try:
                applied = await self.run_once()
            except (psycopg.Error, BackendError) as exc:
                self.stats.errors += 1
                log.warning(
                    "cdc: %s; retrying",
                    exc,
                    extra={"event": "cdc_retrying", "slot": self.settings.slot, "reason": str(exc)},
                )
                await self._reset()
                await async_sleep(min(1.0, self.settings.poll_interval * 5))
                applied = -1
            if tick is not None:
                tick()
            if applied == 0:
                await stop.wait(self.settings.poll_interval)

    async def _reset(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                await self._conn.close()
            self._conn = None

    async def drop_slot(self) -> None:
        """Remove the slot (it holds WAL back while nobody reads it)."""
        conn = await self._connection()
        if await self._slot_status() is not None:
            await conn.execute("SELECT pg_drop_replication_slot(%s)", (self.settings.slot,))

    async def close(self) -> None:
        await self._reset()


__all__ = ["AsyncCdcWorker", "CdcRule", "CdcSettings", "CdcStats"]
