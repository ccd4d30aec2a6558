"""The in-process store: readscale's L1 tier.

:class:`MemoryStore` keeps Python objects under hashable keys, bounded by a number of
entries and by a total size, each with its own deadline. Its eviction and admission
policy is W-TinyLFU (``readscale._core.l1.wtinylfu``), chosen and tuned on the hit-ratio
bench (``readscale bench hitratio``); it is synchronous, O(1) per call (amortised: see
expiry below), and never waits, so async code calls it directly.

One object per key (issue 17)
    Each key maps to one :class:`~readscale._core.l1.wtinylfu.Entry` of fixed slots:
    value, deadline (a float; no heap item), size, segment and the links of the
    policy's LRU lists. It replaced a ``(value, deadline)`` tuple, an ``OrderedDict``
    node in a segment and, with a TTL, a heap item: 235 bytes of structure per entry
    (363 with a TTL) became 175 (199), and a miss + set went from 2.3-2.5x theine's time
    to 1.3-1.4x (``readscale bench hitratio``, the ``l1_*`` figures).

Expiry
    A read of an expired entry removes it. Entries nobody reads are removed by a sweep
    over all entries that runs on a write once the earliest deadline stored since the
    last sweep has passed, at most once per quarter of the entries in writes (so at most
    four entries examined per write, amortised), and before ``len()`` and ``weight``
    answer. Until then an expired entry takes room like any other and the policy may
    evict it first.

How a hit stays cheap (Caffeine's trick, in Python)
    A hit only looks the key up, compares its deadline with the clock and writes the key
    into a ring buffer; the policy's bookkeeping (frequency sketch increment,
    LRU move, promotion) for buffered reads is *replayed* later, under the write lock, on
    the next write. The ring holds as many hits as the cache holds entries (a power of
    two from 128 to 65,536), so a write replays every hit since the previous one unless
    a read-only stretch ran longer than that. It used to hold 128: on a loop slightly
    larger than the cache the hits come in runs of thousands, so nearly all were lost
    while every miss was counted, the cached keys looked colder than the ones queued to
    replace them, and the hit ratio collapsed (0.28 at 10 %, 0.84 now; issue 17). The
    replay is paid on writes, not on the hit path; a write after a long read-only
    stretch replays up to 65,536 hits at once.

Threads (why the hit path takes no lock)
    Writers (``set``, ``delete``, ``clear``, expiry, replay) hold one ``threading.Lock``.
    Readers take none: under CPython's GIL a dict lookup, reading an attribute and
    storing into a list slot are each atomic; an overwrite stores the entry's new value
    *before* its new deadline and a reader reads the deadline first, so a reader that
    finds the entry live returns the value of that write or a later one, never a value
    older than the deadline it checked; the policy's links are only touched by writers.
    Two benign races remain: two
    readers may bump the hit counter at once and lose increments (the counter is read
    and written back in separate bytecodes; a switch between them is rare but possible,
    e.g. when the new int triggers a garbage collection), so ``stats.hits`` is exact in
    one thread and a lower bound under threads, and the replay may see a ring slot just
    overwritten by a newer read (a lost frequency sample). The ring holds entries, not
    keys, so a replayed hit of a key deleted meanwhile is skipped.
    Free-threaded CPython (PEP 703) is out of scope. There, values would stay correct
    (dict and list operations stay atomic per object, entries are immutable, writers
    keep the lock), but what relies on the GIL's rare switching would degrade: lost
    updates of the hit and miss counters become common (statistics and the climber's
    hit ratio drift low) and concurrent readers overwrite each other's ring slots
    (frequency samples are lost under contention). Per-thread counters and rings, as
    Caffeine's striped read buffer, would be the fix.

Values are stored as they are given, never copied: callers must treat what ``get``
returns as read-only (mutating it changes the cached value for every reader). The
memory backend stores ``bytes``, which are immutable.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import Any, Final, Generic, TypeVar

from readscale._core.cache.novalue import NO_VALUE, NoValue
from readscale._core.l1.wtinylfu import Entry, TinyLfuConfig, WTinyLfu
from readscale.errors import ConfigurationError

__all__ = ["MemoryStats", "NoValue", "TinyLfuConfig"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
_T = TypeVar("_T")

try:  # mypyc reads the decorator at compile time; the pure build needs no mypy_extensions
    from mypy_extensions import mypyc_attr
except ImportError:  # pragma: no cover - depends on what is installed

    def mypyc_attr(*attrs: str, **kwattrs: object) -> Callable[[_T], _T]:
        return lambda cls: cls


_INF: Final = float("inf")
# What the hit path finds for a missing key: a deadline no clock is below.
_ABSENT: Final = Entry(None, NO_VALUE, -_INF, 0)


@dataclass(frozen=True, slots=True)
class MemoryStats:
    """Counters of a :class:`MemoryStore` since it was created.

    ``evictions`` are entries the policy removed to make room; ``rejections`` are new
    entries refused by admission (or too large for ``max_bytes``); ``expirations`` are
    entries removed because their deadline passed.
    """

    hits: int
    misses: int
    evictions: int
    rejections: int
    expirations: int

    @property
    def requests(self) -> int:
        return self.hits + self.misses

    @property
    def hit_ratio(self) -> float:
        return self.hits / self.requests if self.requests else 0.0


# Applications subclass it (the demo's L1 does): allowed in the compiled build too.
@mypyc_attr(allow_interpreted_subclasses=True)
class MemoryStore(Generic[K, V]):
    """A bounded in-process key-value store with per-entry TTL and W-TinyLFU eviction.

    ``max_entries`` bounds the number of entries and ``max_bytes`` (optional) the sum of
    their ``size`` arguments; neither is ever exceeded once a call returns. ``clock``
    returns seconds and is the only source of time (inject a fake one in tests).
    ``policy`` tunes W-TinyLFU; ``read_buffer`` is the size of the ring of hits
    replayed on writes (a power of two; default: ``max_entries`` rounded up, within
    128..65,536); ``seed`` pins the sketch's hash seed and the
    admission tie-break (random when None).
    """

    __slots__ = (
        "_clock",
        "_data",
        "_drained",
        "_expirations",
        "_hits_reported",
        "_lock",
        "_max_bytes",
        "_misses",
        "_misses_reported",
        "_next_expiry",
        "_policy",
        "_reads",
        "_rejections",
        "_ring",
        "_ring_mask",
        "_sets",
    )

    def __init__(
        self,
        max_entries: int,
        max_bytes: int | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        policy: TinyLfuConfig | None = None,
        read_buffer: int | None = None,
        seed: int | None = None,
    ) -> None:
        if max_entries < 1:
            raise ConfigurationError(f"max_entries must be at least 1, not {max_entries}")
        if max_bytes is not None and max_bytes < 1:
            raise ConfigurationError(f"max_bytes must be at least 1 (or None), not {max_bytes}")
        if read_buffer is None:
            read_buffer = 1 << (min(max(max_entries, 128), 1 << 16) - 1).bit_length()
        if read_buffer < 1 or read_buffer & (read_buffer - 1):
            raise ConfigurationError(f"read_buffer must be a power of two, not {read_buffer}")
        if seed is None:
            seed = random.SystemRandom().getrandbits(64)
        self._clock = clock
        self._max_bytes = max_bytes
        self._lock = threading.Lock()
        self._policy: WTinyLfu[K] = WTinyLfu(
            max_entries, max_bytes, None, config=policy, seed=seed, rng=random.Random(seed).random
        )
        self._data: dict[K, Entry] = self._policy.data  # shared: the policy removes what it drops
        self._ring: list[Any] = [_ABSENT] * read_buffer  # entries of recent hits
        self._ring_mask = read_buffer - 1
        self._reads = 0  # hits so far; also the ring's write position
        self._drained = 0  # hits replayed into the policy so far
        self._misses = 0
        self._hits_reported = 0
        self._misses_reported = 0
        self._rejections = 0  # by the store itself (too large for max_bytes)
        self._expirations = 0
        self._next_expiry = _INF  # no entry stored since the last sweep expires before this
        self._sets = 0  # sets since that deadline passed (a sweep waits for entries / 4)

    # -- reads (no lock) ---------------------------------------------------------------

    def get(self, key: K) -> V | NoValue:
        """The value stored under ``key``, or ``NO_VALUE`` when absent or expired."""
        entry = self._data.get(key, _ABSENT)
        if entry.deadline > self._clock():
            n = self._reads
            self._reads = n + 1
            self._ring[n & self._ring_mask] = entry
            return entry.value  # type: ignore[no-any-return]
        self._misses += 1
        if entry is not _ABSENT:
            self._expired(key, entry)
        return NO_VALUE

    def _expired(self, key: K, entry: Entry) -> None:
        now = self._clock()
        with self._lock:
            if self._data.get(key) is entry and entry.deadline <= now:
                self._policy.discard(entry)
                self._expirations += 1

    # -- writes (under the lock) -------------------------------------------------------

    def set(self, key: K, value: V, ttl: float | None, size: int = 1) -> None:
        """Store ``value`` under ``key`` for ``ttl`` seconds (None: until evicted).

        ``size`` is the caller's measure of the value (its encoded length, say) counted
        against ``max_bytes``. A value larger than ``max_bytes``, or a ``ttl`` <= 0,
        stores nothing and removes any older value of ``key``: a set never leaves a stale
        value behind. The new entry may still be evicted at once by admission when the
        cache is full of more popular keys (counted in ``stats.rejections``).
        """
        if size < 0:
            raise ConfigurationError(f"size must be >= 0, not {size}")
        now = self._clock()
        with self._lock:
            reads = self._reads
            if reads != self._drained or reads - self._hits_reported + self._misses - self._misses_reported >= 256:
                self._drain()
            if now >= self._next_expiry:
                self._sets += 1
                if self._sets >= len(self._data) >> 2:
                    self._sweep(now)
            data = self._data
            max_bytes = self._max_bytes
            if ttl is None:
                deadline = _INF
            elif ttl > 0:
                deadline = now + ttl
                if deadline < self._next_expiry:  # noqa: PLR1730 - a min() call costs more
                    self._next_expiry = deadline
            else:
                entry = data.get(key)
                if entry is not None:
                    self._policy.discard(entry)
                return
            if max_bytes is not None and size > max_bytes:
                entry = data.get(key)
                if entry is not None:
                    self._policy.discard(entry)
                self._rejections += 1
                return
            entry = data.get(key)
            if entry is None:
                entry = data[key] = Entry(key, value, deadline, size)
                self._policy.add(entry)
            else:
                entry.value = value  # before the deadline: see Entry
                entry.deadline = deadline
                self._policy.resize(entry, size)

    def delete(self, key: K) -> bool:
        """Remove ``key``; true if a live (unexpired) value was stored under it."""
        now = self._clock()
        with self._lock:
            entry = self._data.get(key)
            if entry is None:
                return False
            self._policy.discard(entry)
            return bool(entry.deadline > now)

    def delete_many(self, keys: Iterable[K]) -> int:
        """Remove several keys; how many held a live value."""
        return sum(self.delete(key) for key in keys)

    def clear(self) -> None:
        """Remove every entry (statistics and popularity history are kept)."""
        with self._lock:
            self._policy.clear()
            self._drained = self._reads
            self._next_expiry = _INF

    # -- size and statistics -------------------------------------------------------------

    def __len__(self) -> int:
        """The number of live entries (expired ones are purged first)."""
        self._purge()
        return len(self._data)

    @property
    def weight(self) -> int:
        """The sum of the ``size`` of live entries (bounded by ``max_bytes``)."""
        self._purge()
        return self._policy.weight

    @property
    def max_entries(self) -> int:
        return self._policy.max_entries

    @property
    def max_bytes(self) -> int | None:
        return self._max_bytes

    @property
    def stats(self) -> MemoryStats:
        policy = self._policy
        return MemoryStats(
            self._reads, self._misses, policy.evictions, policy.rejections + self._rejections, self._expirations
        )

    @property
    def policy(self) -> WTinyLfu[K]:
        """The eviction policy's state (for the simulator and tests; do not mutate)."""
        return self._policy

    def _purge(self) -> None:
        now = self._clock()
        with self._lock:
            if now >= self._next_expiry:
                self._sweep(now)

    # -- internals (lock held) -----------------------------------------------------------

    def _drain(self) -> None:
        """Replay buffered hits into the policy, then let it adapt its window."""
        end = self._reads
        start = self._drained
        if end > start:  # a lost update between reader threads can even move it back
            self._drained = end
            ring = self._ring
            self._policy.replay(ring, max(start, end - len(ring)), end, self._ring_mask)
        # The climber samples over thousands of requests: report to it in batches.
        hits = max(0, end - self._hits_reported)
        misses = self._misses - self._misses_reported
        if hits + misses >= 256:
            self._policy.climb(hits, misses)
            self._hits_reported = end
            self._misses_reported += misses

    def _sweep(self, now: float) -> None:
        """Remove every expired entry and note the next deadline: O(entries), run when
        the earliest deadline has passed and at most once per quarter of the entries in
        sets (amortised O(1) per set; a per-entry heap cost 128 bytes an entry)."""
        self._sets = 0
        discard = self._policy.discard
        soonest = _INF
        for entry in list(self._data.values()):
            deadline = entry.deadline
            if deadline <= now:
                discard(entry)
                self._expirations += 1
            elif deadline < soonest:
                soonest = deadline
        self._next_expiry = soonest
