"""A count-min sketch of access frequency with periodic halving: TinyLFU's memory.

TinyLFU (Einziger, Friedman, Manes: "TinyLFU: A Highly Efficient Cache Admission
Policy", ACM ToS 2017) decides whether a new entry may replace an old one by comparing
how often each was requested *recently*. "How often" comes from this sketch; "recently"
comes from the reset: after ``sample_size`` recorded additions every counter is halved,
so old popularity decays geometrically and a key that stops being requested loses its
advantage. Caffeine's ``FrequencySketch`` is the production model.

Invariants
- Four counters per key, one in each of four rows (count-min): ``frequency(key)`` is the
  minimum of them, so it never under-counts between two resets (collisions only add).
- Every counter stays in ``0..counter_max``; a saturated counter stops growing. The cap
  is the "counter width" (15 is Caffeine's 4 bits); admission only compares keys near
  the boundary of the cache, so a cap just above their counts is enough.
- ``additions`` counts increments since the last reset; when it reaches ``sample_size``
  all counters are halved (integer shift) and ``additions`` is reduced the same way,
  minus the truncation of odd counters (Caffeine's correction).
- With the doorkeeper on, a key's first sighting in a sample period only sets a bit in a
  small Bloom filter; the counters start from the second one and ``frequency`` adds the
  bit back. One-hit wonders thus never reach the counters (the paper's §3.4.2). The
  reset clears the doorkeeper.
- Pure: no clock, no random module. The hash seed is an argument, so a test can pin it.
  Keys are hashed with ``hash()``; for str that is randomised per process unless
  PYTHONHASHSEED is set, so exact counts are reproducible only for int keys (the
  simulator's) or a fixed PYTHONHASHSEED.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Final

__all__ = ["FrequencySketch", "key_hash"]

_M64: Final = (1 << 64) - 1
_HALF: Final = bytes(i >> 1 for i in range(256))
_ODD: Final = bytes(i & 1 for i in range(256))


def key_hash(key: Hashable, seed: int) -> int:
    """The sketch's (and the shadow LRU's) hash of ``key``: CPython's tuple hash (xxHash's
    mixing, in C) of ``(key, seed)``, a signed 64-bit int. Issue 17: the former mix,
    ``((hash(key) ^ seed) * golden) & (2**64 - 1)`` in Python integers, cost as much as
    a third of a miss + set; this is one C call. Four counter indexes come from it by
    double hashing (Kirsch and Mitzenmacher): ``(h + i*b) & mask`` for rows i = 0..3,
    with ``b`` its high 32 bits made odd (the mask keeps at most 32 low bits)."""
    return hash((key, seed))


def _next_pow2(n: int) -> int:
    return 1 << max(n - 1, 1).bit_length()


class FrequencySketch:
    """Approximate recent access counts of keys, in a fixed amount of memory.

    ``capacity`` is the number of entries the cache holds; the table has
    ``width_factor * capacity`` counters per row (rounded up to a power of two) and the
    sample period is ``sample_factor * capacity`` additions.
    """

    __slots__ = (
        "_additions",
        "_conservative",
        "_door",
        "_door_mask",
        "_doorkeeper",
        "_mask",
        "_max",
        "_rows",
        "_seed",
        "_width",
        "capacity",
        "resets",
        "sample_size",
    )

    def __init__(
        self,
        capacity: int,
        *,
        width_factor: int = 4,
        counter_max: int = 15,
        sample_factor: int = 10,
        doorkeeper: bool = False,
        conservative: bool = False,
        seed: int = 0,
    ) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, not {capacity}")
        if not 1 <= counter_max <= 255:
            raise ValueError(f"counter_max must be in 1..255, not {counter_max}")
        if sample_factor < 1 or width_factor < 1:
            raise ValueError("sample_factor and width_factor must be >= 1")
        self.capacity = capacity
        self._width = _next_pow2(max(capacity * width_factor, 16))
        self._mask = self._width - 1
        # Four rows, each its own bytearray: an index is ``x & mask`` with no row offset.
        self._rows = (bytearray(self._width), bytearray(self._width), bytearray(self._width), bytearray(self._width))
        self._max = counter_max
        self.sample_size = sample_factor * capacity
        self._doorkeeper = doorkeeper
        self._conservative = conservative
        # About one bit per addition of a sample period keeps false positives low.
        door = _next_pow2(max(self.sample_size, 64)) if doorkeeper else 1
        self._door = bytearray(door)
        self._door_mask = door - 1
        self._seed = seed & _M64
        self._additions = 0
        self.resets = 0

    # The index arithmetic is inlined in the methods below (and in the policy's insert):
    # they run on every write and replayed read, and a Python call costs as much as it.

    def frequency(self, key: Hashable) -> int:
        """The estimated number of times ``key`` was added in the recent past."""
        h = hash((key, self._seed))
        b = (h >> 32) | 1
        m = self._mask
        r0, r1, r2, r3 = self._rows
        f = min(r0[h & m], r1[(h + b) & m], r2[(h + 2 * b) & m], r3[(h + 3 * b) & m])
        if self._doorkeeper and f < self._max:
            door = self._door
            dm = self._door_mask
            if door[h & dm] and door[(h >> 40) & dm]:
                f += 1
        return f

    def frequencies(self, first: Hashable, second: Hashable) -> tuple[int, int]:
        """``(frequency(first), frequency(second))`` in one call (admission's question)."""
        if self._doorkeeper:
            return self.frequency(first), self.frequency(second)
        seed = self._seed
        m = self._mask
        r0, r1, r2, r3 = self._rows
        h = hash((first, seed))
        b = (h >> 32) | 1
        f1 = min(r0[h & m], r1[(h + b) & m], r2[(h + 2 * b) & m], r3[(h + 3 * b) & m])
        h = hash((second, seed))
        b = (h >> 32) | 1
        f2 = min(r0[h & m], r1[(h + b) & m], r2[(h + 2 * b) & m], r3[(h + 3 * b) & m])
        return f1, f2

    def increment(self, key: Hashable) -> None:
        """Record one access of ``key`` (and halve everything when a sample period ends)."""
        self.increment_hashed(hash((key, self._seed)))

    def increment_hashed(self, h: int) -> None:
        """:meth:`increment` of a key whose :func:`key_hash` the caller already has (the
        policy computes it once per event for this sketch and the shadow LRU's sample)."""
        if self._doorkeeper:
            door = self._door
            dm = self._door_mask
            i = h & dm
            j = (h >> 40) & dm
            if not (door[i] and door[j]):
                door[i] = 1
                door[j] = 1
                self._added()
                return
        b = (h >> 32) | 1
        m = self._mask
        r0, r1, r2, r3 = self._rows
        cap = self._max
        i0 = h & m
        i1 = (h + b) & m
        i2 = (h + 2 * b) & m
        i3 = (h + 3 * b) & m
        c0 = r0[i0]
        c1 = r1[i1]
        c2 = r2[i2]
        c3 = r3[i3]
        if self._conservative:
            # Conservative update: raise only the counters at the minimum, which keeps
            # collisions from inflating a key's estimate (Estan and Varghese, 2002).
            low = min(c0, c1, c2, c3)
            if low >= cap:
                return
            if c0 == low:
                r0[i0] = low + 1
            if c1 == low:
                r1[i1] = low + 1
            if c2 == low:
                r2[i2] = low + 1
            if c3 == low:
                r3[i3] = low + 1
        elif c0 < cap or c1 < cap or c2 < cap or c3 < cap:
            r0[i0] = min(c0 + 1, cap)
            r1[i1] = min(c1 + 1, cap)
            r2[i2] = min(c2 + 1, cap)
            r3[i3] = min(c3 + 1, cap)
        else:
            return
        self._additions += 1
        if self._additions >= self.sample_size:
            self.reset()

    def _added(self) -> None:
        self._additions += 1
        if self._additions >= self.sample_size:
            self.reset()

    def reset(self) -> None:
        """Halve every counter (the aging step) and clear the doorkeeper."""
        odd = 0
        for row in self._rows:
            odd += row.translate(_ODD).count(1)
            row[:] = row.translate(_HALF)  # in place: the policy's insert holds the rows
        self._additions = max(0, (self._additions - (odd >> 2)) >> 1)
        if self._doorkeeper:
            self._door = bytearray(len(self._door))
        self.resets += 1

    def clear(self) -> None:
        """Forget everything (used when the sketch is resized)."""
        for row in self._rows:
            row[:] = bytes(len(row))
        self._door = bytearray(len(self._door))
        self._additions = 0
