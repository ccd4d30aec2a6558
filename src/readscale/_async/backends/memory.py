"""The in-process backend: the ``AsyncBackend`` protocol over a :class:`MemoryStore` of bytes.

It is not the L1 tier (the cache holds a :class:`~readscale.l1.MemoryStore` of objects
directly, in ``readscale.l1``): it is an L2 that lives in the process, a dependency-free
backend for tests and single-process deployments. Leases are kept in the process: a dict of key -> (token, deadline)
beside the store. There is no server, so every call completes without awaiting except
``wait_for_fill``, which waits on an event that ``fill`` (or ``release``, ``delete`` or
the lease's own expiry) ends: no sleep loop.

A threading lock (not the async twin) guards the lease table: its critical sections
never await, so it never blocks an event loop for longer than a dict update, and the
generated sync backend stays correct when several threads share it.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Sequence

from readscale._core.cache.fill import PRIMARY_ONLY
from readscale._core.cache.lease import LEASE_HELD_ELSEWHERE, TICKET_PREFIX, LeaseResult
from readscale._core.cache.novalue import NO_VALUE
from readscale._shared.primitives.locks import AsyncEvent
from readscale.errors import ValueTooLargeError
from readscale.l1 import MemoryStore

__all__ = ["AsyncMemoryBackend"]


class _Waiters:
    """The waiters of one key's fill: set once, with whether a value landed."""

    __slots__ = ("event", "filled")

    def __init__(self) -> None:
        self.event = AsyncEvent()
        self.filled = False


class AsyncMemoryBackend:
    """An in-process backend with leases (see the module docstring).

    ``store`` is used as given (share one to inspect it), else one is made with
    ``max_entries`` and ``max_bytes`` (each value counts ``len(value)`` bytes).
    ``max_value_size`` defaults to ``max_bytes``: a larger value could never be stored,
    so it is refused with :class:`~readscale.errors.ValueTooLargeError`.
    """

    name = "memory"
    supports_leases = True
    supports_tombstones = True

    def __init__(
        self,
        store: MemoryStore[str, bytes] | None = None,
        *,
        max_entries: int = 10_000,
        max_bytes: int | None = 64 * 1024 * 1024,
        max_value_size: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if store is None:
            store = MemoryStore(max_entries, max_bytes, clock=clock)
        self.store = store
        self.max_value_size: int | None = max_value_size if max_value_size is not None else store.max_bytes
        self._clock = clock
        self._lock = threading.Lock()
        self._leases: dict[str, tuple[str, float]] = {}
        self._waiters: dict[str, _Waiters] = {}
        self._tombstones: dict[str, tuple[int, float]] = {}  # key -> (LSN, deadline)
        self._tickets: dict[str, dict[str, float]] = {}  # key -> {ticket: deadline}
        self._counters: dict[str, int] = {}
        self._floors: dict[str, tuple[int, float]] = {}  # counter -> (LSN, deadline)
        self._registry: dict[str, bytes] = {}

    # -- plain operations --------------------------------------------------------------

    async def get(self, key: str) -> bytes | None:
        value = self.store.get(key)
        return None if value is NO_VALUE else value

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        get = self.store.get
        return [None if (value := get(key)) is NO_VALUE else value for key in keys]

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        self._store(key, value, ttl)

    async def set_many(self, items: Sequence[tuple[str, bytes, float]]) -> None:
        for key, value, _ in items:
            self._check_size(key, value)
        for key, value, ttl in items:
            self._store(key, value, ttl)

    async def delete(self, key: str) -> bool:
        """Remove ``key`` and any lease on it: a fill racing this delete is refused
        (the stale-set race), and its waiters wake to load for themselves."""
        self._drop_lease(key)
        return self.store.delete(key)

    async def delete_many(self, keys: Sequence[str]) -> int:
        deleted = 0
        for key in keys:
            self._drop_lease(key)
            deleted += self.store.delete(key)
        return deleted

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def _check_size(self, key: str, value: bytes) -> None:
        if self.max_value_size is not None and len(value) > self.max_value_size:
            raise ValueTooLargeError(key, len(value), self.max_value_size)

    def _store(self, key: str, value: bytes, ttl: float) -> None:
        self._check_size(key, value)
        self.store.set(key, value, ttl, len(value))

    # -- leases ------------------------------------------------------------------------

    async def lease(self, key: str, ttl: float) -> LeaseResult:
        value = self.store.get(key)
        if value is not NO_VALUE:
            return LeaseResult(value=value)
        now = self._clock()
        with self._lock:
            held = self._leases.get(key)
            if held is not None and held[1] > now:
                return LEASE_HELD_ELSEWHERE
            token = uuid.uuid4().hex
            self._leases[key] = (token, now + ttl)
            stale = self._waiters.pop(key, None)  # waiters of the expired lease: let them go
        if stale is not None:
            stale.event.set()
        return LeaseResult(token=token, floor_lsn=self._tombstone(key, now))

    def _tombstone(self, key: str, now: float) -> int | None:
        return self._live(self._tombstones, key, now)

    @staticmethod
    def _live(table: dict[str, tuple[int, float]], key: str, now: float) -> int | None:
        found = table.get(key)
        if found is None:
            return None
        if found[1] <= now:
            table.pop(key, None)
            return None
        return found[0]

    @staticmethod
    def _raise(table: dict[str, tuple[int, float]], key: str, lsn: int, deadline: float, now: float) -> None:
        """Raise a floor: its LSN and its deadline only grow."""
        old = table.get(key)
        if old is not None and old[1] > now:
            lsn, deadline = max(lsn, old[0]), max(deadline, old[1])
        table[key] = (lsn, deadline)

    async def ticket(self, key: str, ttl: float) -> LeaseResult:
        now = self._clock()
        token = TICKET_PREFIX + uuid.uuid4().hex
        with self._lock:
            self._tickets.setdefault(key, {})[token] = now + ttl
            return LeaseResult(token=token, floor_lsn=self._tombstone(key, now))

    def _take_ticket(self, key: str, token: str, now: float) -> bool:
        tickets = self._tickets.get(key)
        if not tickets:
            return False
        deadline = tickets.pop(token, None)
        if not tickets:
            del self._tickets[key]
        return deadline is not None and deadline > now

    async def refresh_lease(self, key: str, ttl: float) -> str | None:
        now = self._clock()
        with self._lock:
            held = self._leases.get(key)
            if held is not None and held[1] > now:
                return None
            token = uuid.uuid4().hex
            self._leases[key] = (token, now + ttl)
        return token

    async def ticket_many(self, keys: Sequence[str], ttl: float) -> list[LeaseResult]:
        return [await self.ticket(key, ttl) for key in keys]

    async def fill_many(self, items: Sequence[tuple[str, bytes, float, str, int | None]]) -> list[bool]:
        return [await self.fill(key, value, ttl, token, lsn) for key, value, ttl, token, lsn in items]

    async def fill(self, key: str, value: bytes, ttl: float, token: str, lsn: int | None = None) -> bool:
        self._check_size(key, value)
        now = self._clock()
        with self._lock:
            if token.startswith(TICKET_PREFIX):
                if not self._take_ticket(key, token, now):
                    return False
            else:
                held = self._leases.get(key)
                if held is None or held[0] != token or held[1] <= now:
                    return False
                del self._leases[key]
            tomb = self._tombstone(key, now)
            refused = tomb is not None and (lsn is None or lsn < tomb)
            if not refused:
                self.store.set(key, value, ttl, len(value))
            waiters = self._waiters.pop(key, None)
        if waiters is not None:
            waiters.filled = not refused
            waiters.event.set()
        return not refused

    async def invalidate(self, keys: Sequence[str], *, lsn: int | None = None, tombstone_ttl: float = 35.0) -> int:
        """Delete values, leases and tickets; keep a tombstone that refuses older fills."""
        removed = 0
        now = self._clock()
        floor = PRIMARY_ONLY if lsn is None else lsn
        for key in keys:
            removed += await self.delete(key)
            with self._lock:
                self._raise(self._tombstones, key, floor, now + tombstone_ttl, now)
        return removed

    async def invalidate_for_write(
        self, key: str, *, lsn: int | None, tombstone_ttl: float, ticket_ttl: float
    ) -> LeaseResult:
        """:meth:`invalidate`, then :meth:`ticket`: no round trip to save here."""
        await self.invalidate([key], lsn=lsn, tombstone_ttl=tombstone_ttl)
        return await self.ticket(key, ticket_ttl)

    async def get_counters(self, keys: Sequence[str]) -> list[int]:
        with self._lock:
            return [self._counters.get(key, 0) for key in keys]

    async def incr_counters(self, keys: Sequence[str]) -> list[int]:
        with self._lock:
            out = []
            for key in keys:
                self._counters[key] = self._counters.get(key, 0) + 1
                out.append(self._counters[key])
            return out

    async def bump_counters(self, keys: Sequence[str], *, lsn: int | None, floor_ttl: float) -> list[int]:
        now = self._clock()
        floor = PRIMARY_ONLY if lsn is None else lsn
        with self._lock:
            for key in keys:
                self._raise(self._floors, key, floor, now + floor_ttl, now)
        return await self.incr_counters(keys)

    async def counter_floors(self, keys: Sequence[str]) -> list[int | None]:
        now = self._clock()
        with self._lock:
            return [self._live(self._floors, key, now) for key in keys]

    async def register(self, key: str, value: bytes) -> bytes:
        with self._lock:
            return self._registry.setdefault(key, value)

    async def eviction_risk(self) -> str | None:
        return None  # tombstones and floors live beside the store, never evicted from it

    async def release(self, key: str, token: str) -> None:
        if token.startswith(TICKET_PREFIX):
            with self._lock:
                self._take_ticket(key, token, self._clock())
            return
        with self._lock:
            held = self._leases.get(key)
            if held is None or held[0] != token:
                return
            del self._leases[key]
            waiters = self._waiters.pop(key, None)
        if waiters is not None:
            waiters.event.set()

    async def wait_for_fill(self, key: str, timeout: float) -> bool:
        """Wait for the fill of ``key``: true once it lands, false when the lease is
        released, deleted or expires (then the caller may take over) or ``timeout``
        passes."""
        if self.store.get(key) is not NO_VALUE:
            return True
        now = self._clock()
        with self._lock:
            held = self._leases.get(key)
            if held is None or held[1] <= now:
                return False
            waiters = self._waiters.get(key)
            if waiters is None:
                waiters = self._waiters[key] = _Waiters()
            limit = min(timeout, held[1] - now)
        await waiters.event.wait(max(limit, 0.0))
        if not waiters.filled:
            with self._lock:
                held = self._leases.get(key)
                if self._waiters.get(key) is waiters and (held is None or held[1] <= self._clock()):
                    del self._waiters[key]
        return waiters.filled

    def _drop_lease(self, key: str) -> None:
        with self._lock:
            self._leases.pop(key, None)
            self._tickets.pop(key, None)
            waiters = self._waiters.pop(key, None)
        if waiters is not None:
            waiters.event.set()
