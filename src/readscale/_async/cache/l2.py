"""The cache's L2 gate: every call to the remote tier behind a circuit breaker.

A part of :class:`AsyncCache` (internal; docs/architecture.md §5). It owns the backend,
the breaker's state and settings, and the keys written while the L2 could not be told:

- **The breaker** (``readscale._core.cache.breaker``): after consecutive failures calls
  skip the server for a cooldown instead of paying its timeout on every read; a probe
  then closes it again. Each opening and recovery is logged and counted.
- **Writes the L2 missed.** A key written (or deleted) while the L2 was unreachable or
  skipped may keep an older copy there; without a record of it that copy comes back,
  stale, for the rest of its TTL once the server answers. Such keys are remembered and
  invalidated before the next L2 call (:meth:`AsyncL2Gate.resync`).

Every call goes through :meth:`AsyncL2Gate.call`: ask the breaker, make the call, on a
failure count and log it and fail open (:data:`UNREACHED`), on a success tell the
breaker. The gate knows bytes and keys only: entries are encoded and decoded by the
caller.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from enum import Enum
from typing import Literal, TypeVar

from readscale._async.backends.base import AsyncBackend
from readscale._core.cache import breaker as circuit
from readscale._core.cache.fill import FAIL_OPEN_STALENESS
from readscale._shared.cache.stats import CacheStats, L2Recorder
from readscale.errors import CacheUnavailableError, ValueTooLargeError

R = TypeVar("R")
log = logging.getLogger("readscale.cache")

#: How many keys written during an L2 outage one process remembers for removal.
MAX_UNSYNCED = 100_000


class Stored(Enum):
    """What became of one store in the L2."""

    #: The L2 has it.
    STORED = "stored"
    #: The L2 could not be asked (skipped or failed); a write's key is removed later.
    UNREACHED = "unreached"
    #: The fill's right was gone (an invalidation, the lease's expiry) or its read was
    #: older than the key's tombstone: nothing may be cached.
    REFUSED = "refused"
    #: The backend's own size limit refused it (counted and logged).
    TOO_LARGE = "too_large"


class Unreached(Enum):
    """An L2 call that did not answer: no backend, skipped by the breaker (counted), or
    failed (counted and logged). The caller fails open."""

    UNREACHED = "unreached"


#: What :meth:`AsyncL2Gate.call` returns when the L2 did not answer.
UNREACHED: Literal[Unreached.UNREACHED] = Unreached.UNREACHED


class Admit(Enum):
    """What an L2 call asks before it goes out."""

    #: The breaker (a skipped call is counted).
    BREAKER = "breaker"
    #: The breaker, then every key written while the L2 was away is removed from it first
    #: (:meth:`AsyncL2Gate.reachable`): the reads and stores of entries.
    RESYNC = "resync"
    #: Nothing: the call continues an exchange the breaker already admitted (the wait after
    #: a lease, a right given back, the fills after ``reachable``, the resync itself).
    ADMITTED = "admitted"


class AsyncL2Gate:
    """The L2 (or none) behind the circuit breaker, and the keys it must still be told of."""

    def __init__(
        self,
        backend: AsyncBackend | None,
        *,
        stats: CacheStats,
        breaker: circuit.BreakerSettings | None,
        tombstone_ttl: float,
        monotonic: Callable[[], float],
    ) -> None:
        self.backend = backend
        self.stats = stats
        self.record = L2Recorder(stats)
        self.breaker_settings = breaker or circuit.BreakerSettings()
        self.breaker = circuit.CLOSED
        self.tombstone_ttl = tombstone_ttl
        self._monotonic = monotonic
        #: Keys written while the L2 could not be reached (or was skipped by the breaker):
        #: their L2 copy may be older than the database, so they are removed from it before
        #: the next L2 call.
        self.unsynced: set[str] = set()
        #: A call failed since the L2 last answered: the server may have restarted empty.
        self._lost = False
        #: Until then (monotonic) the L2 may lack tombstones it held before an outage (a
        #: restart without persistence loses them): fills read no staler than
        #: ``FAIL_OPEN_STALENESS`` (:meth:`recovering`).
        self.recovering_until = float("-inf")
        listeners = getattr(backend, "restart_listeners", None)
        if listeners is not None:  # the backend sees restarts no call failed on (Redis)
            listeners.append(self.server_restarted)

    @property
    def available(self) -> bool:
        """False while the breaker skips the L2; True without an L2."""
        return self.breaker is circuit.CLOSED

    @property
    def name(self) -> str:
        """The backend's name for log lines."""
        return self.backend.name if self.backend is not None else "no backend"

    # -- the breaker ----------------------------------------------------------------------

    def allowed(self) -> bool:
        """Whether to call the L2 now (a skipped call is counted)."""
        if self.breaker is circuit.CLOSED:
            return True
        allowed, self.breaker = circuit.allow(self.breaker, self._monotonic())
        if not allowed:
            self.record.skipped()
        return allowed

    def recovering(self) -> bool:
        """Whether the L2 came back from an outage less than a tombstone's life ago: the
        tombstones of invalidations made before it may be gone (a Redis restarted without
        persistence), so a fill must not trust their absence."""
        return self._monotonic() < self.recovering_until

    def server_restarted(self, uptime: float | None) -> None:
        """The backend found another server run than the last connection's (a restart or a
        failover no call failed on): the window opens for a tombstone's life (less
        ``uptime``, when given)."""
        seconds = self.tombstone_ttl - (uptime or 0.0)
        if seconds > 0:
            self._open_window(seconds, f"{self.name} restarted {uptime or 0.0:.0f}s ago")

    def ok(self) -> None:
        """An L2 call succeeded."""
        if self._lost:
            self._back_from_outage()
        if self.breaker is not circuit.CLOSED:
            was_open = self.breaker.circuit is not circuit.Circuit.CLOSED
            self.breaker = circuit.on_success(self.breaker)
            if was_open:
                log.warning(
                    "cache %s: %s answers again; using it",
                    self.stats.name,
                    self.name,
                    extra={"event": "cache_backend_back", "cache": self.stats.name, "backend": self.name},
                )

    def _back_from_outage(self) -> None:
        """The L2 answers after a failure: for a tombstone's life, fills read no staler than
        ``FAIL_OPEN_STALENESS`` (found by the consistency harness, seed 175: Redis killed
        and restarted empty lost a write's tombstone, and a fill then read a replica 25 s
        behind and cached the old value for good)."""
        self._open_window(self.tombstone_ttl, f"{self.name} answers after a failed call")
        self._lost = False  # after the window is open: a concurrent ok() either sees it or opens it

    def _open_window(self, seconds: float, why: str) -> None:
        now = self._monotonic()
        until = now + seconds
        if until <= self.recovering_until:
            return
        was_open = now < self.recovering_until
        self.recovering_until = until
        if was_open:  # one outage seen twice (a failed call, then the new run id): counted once
            return
        self.record.recovering()
        log.warning(
            "cache %s: %s; for %.0fs fills read no staler than %.1fs, since the tombstones of "
            "earlier invalidations may be gone",
            self.stats.name,
            why,
            seconds,
            FAIL_OPEN_STALENESS,
            extra={
                "event": "cache_backend_recovering",
                "cache": self.stats.name,
                "backend": self.name,
                "reason": why,
                "seconds": seconds,
            },
        )

    def failed(self, exc: CacheUnavailableError) -> None:
        """An L2 call failed; a busy pool is not the server's fault and trips nothing."""
        self.record.error()
        if not exc.busy:
            self._lost = True
        if exc.busy:
            log.warning(
                "cache %s: %s",
                self.stats.name,
                exc,
                extra={
                    "event": "cache_backend_busy",
                    "cache": self.stats.name,
                    "backend": self.name,
                    "reason": str(exc),
                },
            )
            return
        before = self.breaker.circuit
        self.breaker = circuit.on_failure(self.breaker, self._monotonic(), self.breaker_settings)
        if self.breaker.circuit is circuit.Circuit.OPEN and before is not circuit.Circuit.OPEN:
            self.record.breaker_opened()
            log.warning(
                "cache %s: %s unavailable (%s); reads go to the loader for %.1fs before a probe",
                self.stats.name,
                self.name,
                exc,
                self.breaker.cooldown,
                extra={
                    "event": "cache_backend_unavailable",
                    "cache": self.stats.name,
                    "backend": self.name,
                    "reason": str(exc),
                    "cooldown_s": self.breaker.cooldown,
                },
            )
        else:
            log.debug("cache %s: %s error: %s", self.stats.name, self.name, exc)

    async def call(
        self,
        op: Callable[[AsyncBackend], Awaitable[R]],
        *,
        admit: Admit = Admit.BREAKER,
    ) -> R | Literal[Unreached.UNREACHED]:
        """``op(backend)`` behind the breaker: the one way the cache calls its L2.

        Asks what ``admit`` says first; a failure (``CacheUnavailableError``) is counted,
        logged and fed to the breaker, and the caller gets :data:`UNREACHED` and fails
        open; other errors (a value over the server's size limit) reach the caller. Any
        answer (a refused fill, a lease held elsewhere included) is a success and closes
        the breaker after a probe: a probe whose answer went untold would hold it half-open
        (found in review: a refused fill or a refresh lease as the probe)."""
        backend = self.backend
        if backend is None:
            return UNREACHED
        if admit is Admit.BREAKER and not self.allowed():
            return UNREACHED
        if admit is Admit.RESYNC and not await self.reachable():
            return UNREACHED
        try:
            result = await op(backend)
        except CacheUnavailableError as exc:
            self.failed(exc)
            return UNREACHED
        self.ok()
        return result

    async def reachable(self) -> bool:
        """The breaker lets a call through and every key the L2 missed was removed first."""
        if not self.allowed():
            return False
        if self.unsynced:
            return await self.resync()
        return True

    # -- reads ----------------------------------------------------------------------------

    async def get(self, pkey: str) -> bytes | None:
        """The stored bytes of ``pkey``; None on a miss or when the L2 cannot be asked."""
        backend = self.backend
        if backend is not None and self.breaker is circuit.CLOSED and not self.unsynced and not self._lost:
            # What call() does when the breaker is closed, no key waits to be removed and
            # no failure waits to open the recovery window (admitted, nothing to resync, a
            # success changes nothing), without its frames: every cache hit comes this way.
            try:
                return await backend.get(pkey)
            except CacheUnavailableError as exc:
                self.failed(exc)
                return None
        raw = await self.call(lambda backend: backend.get(pkey), admit=Admit.RESYNC)
        return None if raw is UNREACHED else raw

    async def get_many(self, pkeys: list[str]) -> list[bytes | None]:
        """The stored bytes of each key (None: a miss, or the L2 could not be asked)."""
        backend = self.backend
        assert backend is not None
        if self.breaker is circuit.CLOSED and not self.unsynced and not self._lost:  # as in get()
            try:
                return await backend.get_many(pkeys)
            except CacheUnavailableError as exc:
                self.failed(exc)
                return [None] * len(pkeys)
        raws = await self.call(lambda backend: backend.get_many(pkeys), admit=Admit.RESYNC)
        return [None] * len(pkeys) if raws is UNREACHED else raws

    # -- writes ---------------------------------------------------------------------------

    async def store(
        self,
        pkey: str,
        raw: bytes,
        ttl: float,
        token: str | None,
        source_lsn: int | None,
        *,
        write: bool,
        raise_too_large: bool,
    ) -> Stored:
        """Store ``raw`` for ``ttl`` seconds: a plain set, or a fill under ``token``'s
        lease or ticket checked against the key's tombstone with ``source_lsn``.
        ``write``: the value is a write's (write-through), not a fill: if the L2 cannot be
        told, the key is removed from it once it answers (a plain set always is)."""
        assert self.backend is not None

        async def put(backend: AsyncBackend) -> bool:
            if token is None:
                await backend.set(pkey, raw, ttl)
                return True
            return await backend.fill(pkey, raw, ttl, token, source_lsn)

        try:
            stored = await self.call(put, admit=Admit.RESYNC)
        except ValueTooLargeError as exc:
            if raise_too_large:
                raise
            self.record.not_cached()
            log.warning(
                "cache %s: %s",
                self.stats.name,
                exc,
                extra={
                    "event": "cache_value_too_large",
                    "cache": self.stats.name,
                    "backend": self.name,
                    "key": pkey,
                    "reason": str(exc),
                },
            )
            return Stored.TOO_LARGE
        if stored is UNREACHED:
            if token is None or write:  # a write the server may not have: remove the key later
                self.mark_unsynced(pkey)
            return Stored.UNREACHED
        if not stored:
            return Stored.REFUSED
        self.record.stored()
        return Stored.STORED

    async def fill_many(self, items: Sequence[tuple[str, bytes, float, str, int | None]]) -> list[bool] | None:
        """Several fills in as few round trips as the server allows (``(pkey, raw, ttl,
        token, source_lsn)``): whether each was stored, or None when the server failed
        (counted). Raises ValueTooLargeError when one of them is over the server's limit."""
        assert self.backend is not None
        stored = await self.call(lambda backend: backend.fill_many(items), admit=Admit.ADMITTED)
        return None if stored is UNREACHED else stored

    # -- writes the L2 missed -----------------------------------------------------------

    def mark_unsynced(self, pkey: str) -> None:
        """Remember ``pkey`` for removal from the L2 before its next call."""
        if pkey in self.unsynced:
            return
        if len(self.unsynced) >= MAX_UNSYNCED:
            self.record.unsynced_dropped()
            log.error(
                "cache %s: %s was written while %s was unreachable and %d keys already wait to be "
                "removed from it: its old copy stays until its TTL",
                self.stats.name,
                pkey,
                self.name,
                MAX_UNSYNCED,
                extra={
                    "event": "cache_unsynced_dropped",
                    "cache": self.stats.name,
                    "backend": self.name,
                    "key": pkey,
                    "count": MAX_UNSYNCED,
                },
            )
            return
        self.unsynced.add(pkey)
        self.record.unsynced()

    async def resync(self) -> bool:
        """Remove from the L2 every key written while it was unreachable; False (keys kept
        for the next try) if it still cannot be reached."""
        assert self.backend is not None
        keys = sorted(self.unsynced)
        self.unsynced.difference_update(keys)
        # An invalidation, not a plain delete: a fill in flight is refused, and the
        # tombstone (position unknown) makes fills of these keys read the primary.
        done = await self.call(
            lambda backend: backend.invalidate(keys, lsn=None, tombstone_ttl=self.tombstone_ttl),
            admit=Admit.ADMITTED,
        )
        if done is UNREACHED:
            self.unsynced.update(keys)
            return False
        self.record.resynced(len(keys))
        log.warning(
            "cache %s: removed %d entries from %s that were written while it was unreachable",
            self.stats.name,
            len(keys),
            self.name,
            extra={
                "event": "cache_unsynced_removed",
                "cache": self.stats.name,
                "backend": self.name,
                "count": len(keys),
            },
        )
        return True
