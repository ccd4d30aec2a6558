"""A sampled shadow LRU: what plain LRU would have hit, beside what the policy did hit.

Why: the hill climber compares the hit ratio of one sample period with the previous
one, so it cannot tell "my last move hurt" from "the workload changed" (a scan burst, a
shift of popularity), and on a large cache it needs many periods to walk the window
across. LRU is the policy W-TinyLFU becomes with a window of the whole capacity, so a
shadow LRU fed the same requests is a second, *simultaneous* measurement: when LRU hits
significantly more than the policy on the same requests, the window is too small, now,
whatever the workload did meanwhile. This is the set-dueling idea (Qureshi et al.,
"Adaptive insertion policies for high performance caching", ISCA 2007) with spatial
sampling (Waldspurger et al., "Efficient MRC construction with SHARDS", FAST 2015): the
shadow only follows keys whose hash falls in a fixed fraction ``rate``, with
``rate × capacity`` entries, so it costs a hash and, for sampled keys, one dict move.

Paired counting: for each sampled request the policy's outcome and LRU's are compared;
only the *discordant* ones (one hit, the other missed) carry information, and their
count gives the standard error of the difference (a sign test), so the decision needs
no tuning per workload.

Invariants
- ``len(shadow) <= entries`` at all times; only sampled keys are ever held.
- ``policy_only`` + ``lru_only`` = the discordant sampled requests since the last
  ``take``; ``take`` returns them and starts a new period.
- Pure: no clock, no randomness; the sample is a function of ``hash(key)`` and ``seed``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Final

__all__ = ["ShadowLru"]

_M64: Final = (1 << 64) - 1
_SCALE: Final = 1 << 16


class ShadowLru:
    """An LRU over a hash-sample of the keys, sized ``rate`` × the cache's capacity.

    ``capacity`` is the real cache's entry bound; ``entries`` the most the shadow holds
    (the sample rate is ``min(1, entries / capacity)``).
    """

    __slots__ = ("_cache", "_entries", "_seed", "_threshold", "lru_only", "policy_only", "sampled")

    def __init__(self, capacity: int, *, entries: int, seed: int = 0) -> None:
        if capacity < 1 or entries < 1:
            raise ValueError(f"capacity and entries must be >= 1, not {capacity} and {entries}")
        rate = min(1.0, entries / capacity)
        self._threshold = round(rate * _SCALE)  # a sampled key's hash slice is below this
        self._entries = max(1, round(rate * capacity))
        self._seed = seed & _M64
        self._cache: OrderedDict[Hashable, None] = OrderedDict()
        self.sampled = 0
        self.policy_only = 0  # sampled requests the policy hit and LRU missed
        self.lru_only = 0  # and the other way round

    @property
    def rate(self) -> float:
        return self._threshold / _SCALE

    def __len__(self) -> int:
        return len(self._cache)

    @property
    def threshold(self) -> int:
        """A key is sampled when bits 48..63 of its ``key_hash`` (the sketch's, same
        seed) are below this, so a caller holding that hash can test it itself."""
        return self._threshold

    def observe(self, key: Hashable, hit: bool) -> None:
        """A request for ``key`` that the policy served as a ``hit`` (or a miss)."""
        if self._threshold < _SCALE and ((hash((key, self._seed)) >> 48) & 0xFFFF) >= self._threshold:
            return
        self.observe_sampled(key, hit)

    def observe_sampled(self, key: Hashable, hit: bool) -> None:
        """:meth:`observe` of a key the caller found to be in the sample."""
        self.sampled += 1
        cache = self._cache
        if key in cache:
            cache.move_to_end(key)
            if not hit:
                self.lru_only += 1
        else:
            cache[key] = None
            if len(cache) > self._entries:
                cache.popitem(last=False)
            if hit:
                self.policy_only += 1

    def take(self) -> tuple[int, int, int]:
        """(sampled, policy_only, lru_only) since the last call; a new period starts."""
        out = (self.sampled, self.policy_only, self.lru_only)
        self.sampled = self.policy_only = self.lru_only = 0
        return out

    def clear(self) -> None:
        self._cache.clear()
