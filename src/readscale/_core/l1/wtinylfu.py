"""W-TinyLFU: which entry an in-process cache keeps and which it evicts.

The policy of Caffeine (Einziger, Friedman, Manes: "TinyLFU: A Highly Efficient Cache
Admission Policy", ACM ToS 2017; Caffeine's ``BoundedLocalCache`` and its simulator).
It only does bookkeeping on keys and sizes; the store that owns the values
(``readscale.l1``) calls it under its write lock and removes whatever it is told to.

Layout: a small admission **window** (LRU) in front of a **main** space split into
**probation** and **protected** (segmented LRU). A new key enters the window. When the
window overflows, its LRU entries move to probation as *candidates*; while the cache is
over its bounds, each candidate is compared with probation's LRU *victim* and the one
the frequency sketch has seen less often is dropped (the candidate is then *rejected*,
the victim *evicted*). A hit in probation promotes to protected; protected overflow
demotes its LRU back to probation. The window absorbs bursts of new keys (recency); the
sketch keeps one-hit wonders from flushing the popular keys (frequency).

Adaptation (``readscale._core.l1.climber``): the window's share of the capacity is hill
climbed on the hit ratio, as in Caffeine. Two additions of ours tie the sketch's memory
to what the climber sees, because the best memory differs by workload: on a stationary
Zipf trace a long one measures popularity best (α=0.99 at 1 %: 0.583 with Caffeine's
10x-capacity period, 0.599 with 100x), on a drifting one old counts block the new
popular keys.
- The sample period shrinks from ``sample_factor`` to ``aging_min_factor`` times the
  capacity as the window grows to ``aging_ref`` of it: a large window means recency pays
  (the bench's "news" trace: 0.15 without the coupling, 0.20 with it, LRU 0.18).
- A sampled shadow LRU (``readscale._core.l1.shadow``) is fed the same requests; the
  climber climbs the policy's *advantage over LRU* on them (a scan burst or a shift
  moves both, so it no longer mistakes a burst for its own move), and whenever LRU
  leads significantly the window grows by ``shadow_step`` at once: LRU is the policy
  with a whole-capacity window, so the policy never stays far below it (issue 17:
  shift at 10 % went from 0.435 to 0.525, LRU 0.528).
- The window never shrinks below ``min_window`` (1 %): a one-entry window with the
  hash-flooding tie-break churned a loop slightly larger than the cache (0.72 against
  0.84 with 1 %).
- A sharp fall of the hit ratio (``drop_threshold``) halves every counter
  ``drop_halvings`` times at once: the workload changed (the "shift" trace at 10 %:
  0.516 without, 0.521 with; held-out shifts every 20k requests: 0.324 without, 0.338
  with, LRU 0.337).

Invariants (checked by the unit and Hypothesis tests)
- Every key is in exactly one of window, probation, protected; the byte totals are the
  sums of their sizes.
- After ``insert`` or ``update`` returns, entries <= ``max_entries`` and bytes <=
  ``max_bytes``: eviction runs inside the call, never later.
- ``evict`` is called back once per key the policy drops, with ``rejected`` true when the
  key lost at admission (a candidate) and false for a victim.
- Pure: no clock, no randomness of its own (``rng`` is injected; it only breaks the rare
  admission tie against hash flooding, as Caffeine does).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

from readscale._core.l1.climber import WindowClimber
from readscale._core.l1.shadow import ShadowLru
from readscale._core.l1.sketch import FrequencySketch

__all__ = ["TinyLfuConfig", "WTinyLfu"]

K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True, slots=True)
class TinyLfuConfig:
    """Tuning of the policy. The defaults were chosen on ``readscale bench hitratio``;
    Caffeine's own values, where ours differ, are given in brackets.

    - ``window`` (0.01): initial share of the capacity for the admission window.
    - ``protected`` (0.8): share of the main space for keys hit at least twice.
    - ``counter_max`` 255 [15, 4-bit]: the sketch's counter cap; a long sample period
      needs room to count.
    - ``sample_factor`` 100 [10]: counters are halved every ``sample_factor`` x capacity
      additions (how long popularity is remembered).
    - ``width_factor`` 8: counters per row per entry of capacity (4 rows of bytes:
      32 bytes per entry). 4 lost 0.004-0.009 of hit ratio, 16 gained nothing.
    - ``conservative`` True [False]: increment only the minimum counters; it recovers
      at width 8 what width 16 gives.
    - ``doorkeeper`` False: the paper's Bloom filter for one-hit wonders; no gain once
      the sketch is wide enough, and a byte per addition of memory.
    - ``adaptive`` True: hill-climb the window (``climb_*``, see ``_core.climber``):
      sample every ``climb_sample_factor`` x capacity requests (30 lost 0.16 of hit
      ratio on the 10 % news trace: too slow to adapt) but at least
      ``climb_min_sample`` (a 100-entry cache sampled every 1,000 requests chased
      noise: -0.02 to -0.03 on Zipf), step ``climb_step`` of the
      capacity, decay ``climb_decay`` [0.98], restart above a ``climb_restart``
      change, ignore changes under ``climb_tolerance`` standard errors [none: it costs
      0.004-0.015 on Zipf as the window follows noise]; ``climb_warmup`` waits until
      the cache is full (a filling cache improves whatever the climber does, and that
      fooled it).
    - ``aging_min_factor`` 5, ``aging_ref`` 0.1, ``drop_halvings`` 2: the sketch-memory
      couplings of the module docstring (None / 0 disable them; 4 halvings helped one
      shifting trace and hurt two).
    - ``climb_max_sample`` 20,000: the sample period is at most this many requests
      (10x capacity was too slow on large caches: 10 samples in 1 M requests at 10 %).
    - ``climb_restart`` 1.0 [0.05]: off; the shadow LRU answers "the workload changed",
      and the restart made the window swing on every scan burst. ``climb_swing`` 1.0:
      a change smaller than the recent typical change (an EWMA) moves nothing.
    - ``shadow_entries`` 2,048 (0: no shadow, the hit ratio is climbed as before):
      the shadow LRU's size, its sample rate ``shadow_entries / max_entries``;
      ``shadow_step`` 0.25, ``shadow_tolerance`` 3 standard errors (the test runs on
      every report, so it must be strict), ``shadow_gap`` 0.005 of the sampled requests
      and ``shadow_min_sample`` 1,000 sampled requests before it may act.
    - ``min_window`` 0.01, ``drop_threshold`` 0.05: see the module docstring.
    - ``hashdos_threshold`` 6: a losing candidate at least this frequent still gets in
      with probability 1/128 (0 disables), so crafted collisions cannot pin a victim.
    """

    window: float = 0.01
    protected: float = 0.8
    counter_max: int = 255
    sample_factor: int = 100
    width_factor: int = 8
    conservative: bool = True
    doorkeeper: bool = False
    adaptive: bool = True
    climb_sample_factor: int = 10
    climb_min_sample: int = 5_000
    climb_step: float = 0.0625
    climb_decay: float = 0.9
    climb_restart: float = 1.0
    climb_tolerance: float = 2.0
    climb_warmup: bool = True
    drop_halvings: int = 2
    aging_min_factor: int | None = 5
    aging_ref: float = 0.1
    hashdos_threshold: int = 6
    climb_max_sample: int = 20_000
    min_window: float = 0.01
    drop_threshold: float = 0.05
    climb_swing: float = 1.0
    shadow_entries: int = 2_048
    shadow_step: float = 0.25
    shadow_tolerance: float = 3.0
    shadow_min_sample: int = 1_000
    shadow_gap: float = 0.005


class WTinyLfu(Generic[K]):
    """Window TinyLFU bookkeeping over keys and their sizes (see the module docstring)."""

    def __init__(
        self,
        max_entries: int,
        max_bytes: int | None,
        evict: Callable[[K, bool], None],
        *,
        config: TinyLfuConfig | None = None,
        seed: int = 0,
        rng: Callable[[], float] | None = None,
    ) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be >= 1, not {max_entries}")
        if max_bytes is not None and max_bytes < 1:
            raise ValueError(f"max_bytes must be >= 1 or None, not {max_bytes}")
        cfg = config or TinyLfuConfig()
        self.config = cfg
        self.max_entries = max_entries
        self.max_bytes = max_bytes if max_bytes is not None else 1 << 62
        self._evict = evict
        self._rng = rng
        self._seed = seed
        self.window: OrderedDict[K, int] = OrderedDict()
        self.probation: OrderedDict[K, int] = OrderedDict()
        self.protected: OrderedDict[K, int] = OrderedDict()
        self.window_bytes = 0
        self.probation_bytes = 0
        self.protected_bytes = 0
        # Sized to the population actually seen (Caffeine sizes it lazily too), so a
        # large bound costs no memory until the cache fills.
        self.sketch = self._new_sketch(min(max_entries, 256))
        self._climber = WindowClimber(
            step=cfg.climb_step,
            decay=cfg.climb_decay,
            restart=cfg.climb_restart,
            tolerance=cfg.climb_tolerance,
            swing_factor=cfg.climb_swing,
        )
        self._warm = not cfg.climb_warmup
        self._hits = 0  # of the current sample period
        self._misses = 0
        self._hit_rate: float | None = None  # of the last full period
        self.shadow: ShadowLru | None = None
        if cfg.adaptive and cfg.shadow_entries:
            self.shadow = ShadowLru(max_entries, entries=cfg.shadow_entries, seed=seed)
        self._share = 0.0
        self._set_share(cfg.window)

    # -- sizes ---------------------------------------------------------------------------

    @property
    def entries(self) -> int:
        return len(self.window) + len(self.probation) + len(self.protected)

    @property
    def weight(self) -> int:
        return self.window_bytes + self.probation_bytes + self.protected_bytes

    @property
    def window_share(self) -> float:
        """The window's current share of the capacity (moved by the hill climber)."""
        return self._share

    def _set_share(self, share: float) -> None:
        self._share = min(max(share, self.config.min_window, 1 / self.max_entries), 1.0)
        main = 1.0 - self._share
        self._window_limit = (self._share * self.max_entries, self._share * self.max_bytes)
        protected = self.config.protected * main
        self._protected_limit = (protected * self.max_entries, protected * self.max_bytes)

    def _new_sketch(self, capacity: int) -> FrequencySketch:
        cfg = self.config
        return FrequencySketch(
            capacity,
            width_factor=cfg.width_factor,
            counter_max=cfg.counter_max,
            sample_factor=cfg.sample_factor,
            doorkeeper=cfg.doorkeeper,
            conservative=cfg.conservative,
            seed=self._seed,
        )

    # -- events from the store -----------------------------------------------------------

    def record_hit(self, key: K) -> None:
        """A read hit ``key`` (replayed from the store's read buffer)."""
        shadow = self.shadow
        if shadow is not None:
            shadow.observe(key, True)
        self._touch(key)

    def _touch(self, key: K) -> None:
        self.sketch.increment(key)
        if key in self.window:
            self.window.move_to_end(key)
        elif key in self.protected:
            self.protected.move_to_end(key)
        elif key in self.probation:
            size = self.probation.pop(key)
            self.probation_bytes -= size
            self.protected[key] = size
            self.protected_bytes += size
            self._demote_protected()

    def insert(self, key: K, size: int) -> None:
        """A new key was stored: it enters the window, then evict down to the bounds."""
        if self.sketch.capacity < self.max_entries and self.entries >= self.sketch.capacity:
            self.sketch = self._new_sketch(min(self.max_entries, self.sketch.capacity * 4))
            self._retune_aging()
        shadow = self.shadow
        if shadow is not None:
            shadow.observe(key, False)
        self.sketch.increment(key)
        self.window[key] = size
        self.window_bytes += size
        self._evict_to_bounds()

    def update(self, key: K, size: int) -> None:
        """An existing key was overwritten: an access, and maybe a new size."""
        self._touch(key)
        for segment in (self.window, self.probation, self.protected):
            old = segment.get(key)
            if old is not None:
                segment[key] = size
                self._add_bytes(segment, size - old)
                break
        self._evict_to_bounds()

    def remove(self, key: K) -> None:
        """``key`` left the store for another reason (deleted, expired)."""
        for segment in (self.window, self.probation, self.protected):
            size = segment.pop(key, None)
            if size is not None:
                self._add_bytes(segment, -size)
                return

    def clear(self) -> None:
        """Forget every key (the sketch keeps its history: popularity outlives a flush)."""
        self.window.clear()
        self.probation.clear()
        self.protected.clear()
        self.window_bytes = self.probation_bytes = self.protected_bytes = 0

    def _add_bytes(self, segment: OrderedDict[K, int], delta: int) -> None:
        if segment is self.window:
            self.window_bytes += delta
        elif segment is self.probation:
            self.probation_bytes += delta
        else:
            self.protected_bytes += delta

    # -- eviction ------------------------------------------------------------------------

    def _demote_protected(self) -> None:
        protected = self.protected
        limit, limit_bytes = self._protected_limit
        while protected and (len(protected) > limit or self.protected_bytes > limit_bytes):
            key, size = protected.popitem(last=False)
            self.protected_bytes -= size
            self.probation[key] = size
            self.probation_bytes += size

    def _window_to_probation(self) -> list[K]:
        window = self.window
        probation = self.probation
        limit, limit_bytes = self._window_limit
        moved: list[K] = []
        while window and (len(window) > limit or self.window_bytes > limit_bytes):
            key, size = window.popitem(last=False)
            self.window_bytes -= size
            probation[key] = size
            self.probation_bytes += size
            moved.append(key)
        return moved

    def _over(self) -> bool:
        return (
            len(self.window) + len(self.probation) + len(self.protected) > self.max_entries
            or self.window_bytes + self.probation_bytes + self.protected_bytes > self.max_bytes
        )

    def _evict_to_bounds(self) -> None:
        # Written flat (no helper calls on the common path: one key leaves the window,
        # faces one victim, one of them goes): a Python call costs as much as the work.
        window = self.window
        probation = self.probation
        protected = self.protected
        max_entries = self.max_entries
        max_bytes = self.max_bytes
        limit, limit_bytes = self._window_limit
        candidates = self._window_to_probation() if len(window) > limit or self.window_bytes > limit_bytes else []
        # Candidates are compared newest first, as Caffeine walks probation backwards;
        # one that wins faces the next victim too: it must outrank all it displaces.
        while (
            len(window) + len(probation) + len(protected) > max_entries
            or self.window_bytes + self.probation_bytes + self.protected_bytes > max_bytes
        ):
            candidate = None
            while candidates:
                key = candidates.pop()
                if key in probation:
                    candidate = key
                    break
            if candidate is None:
                self._evict_oldest()
                continue
            victim = next(iter(probation))
            if victim == candidate:
                drop, rejected = candidate, False
            elif probation[candidate] > max_bytes or not self._admit(candidate, victim):
                drop, rejected = candidate, True
            else:
                drop, rejected = victim, False
                candidates.append(candidate)
            self.probation_bytes -= probation.pop(drop)
            self._evict(drop, rejected)

    def _evict_oldest(self) -> None:
        for segment in (self.probation, self.protected, self.window):
            if segment:
                self._drop(segment, next(iter(segment)), rejected=False)
                return

    def _drop(self, segment: OrderedDict[K, int], key: K, *, rejected: bool) -> None:
        size = segment.pop(key)
        self._add_bytes(segment, -size)
        self._evict(key, rejected)

    def _admit(self, candidate: K, victim: K) -> bool:
        candidate_freq, victim_freq = self.sketch.frequencies(candidate, victim)
        if candidate_freq > victim_freq:
            return True
        threshold = self.config.hashdos_threshold
        if threshold and candidate_freq >= threshold and self._rng is not None:
            return self._rng() < 1 / 128
        return False

    # -- adaptation ----------------------------------------------------------------------

    def climb(self, hits: int, misses: int) -> None:
        """Report ``hits`` and ``misses`` since the last call; the window (and the
        sketch's memory) adapt once a sample period has passed."""
        cfg = self.config
        if not cfg.adaptive:
            return
        if not self._warm:
            if self.entries < self.max_entries and self.weight < self.max_bytes * 0.95:
                return
            self._warm = True
        self._hits += hits
        self._misses += misses
        shadow = self.shadow
        if shadow is not None and shadow.sampled >= cfg.shadow_min_sample and self._lru_leads(shadow):
            # LRU hits significantly more on the same requests: the window is too small
            # now, whatever the hit ratio did meanwhile. Checked on every report, not
            # once a period: a paired test needs few requests to see a real lead.
            shadow.take()
            self._climber.redirect(upward=True)
            self.resize_window(self._share + cfg.shadow_step)
        requests = self._hits + self._misses
        period = min(cfg.climb_sample_factor * self.sketch.capacity, cfg.climb_max_sample)
        if requests < max(period, cfg.climb_min_sample):
            return
        hit_rate = self._hits / requests
        fell = self._hit_rate is not None and self._hit_rate - hit_rate >= cfg.drop_threshold
        self._hit_rate = hit_rate
        self._hits = self._misses = 0
        climber = self._climber
        sampled, policy_only, lru_only = shadow.take() if shadow is not None else (0, 0, 0)
        if not sampled:
            change = climber.judge(hit_rate, (2 * hit_rate * (1 - hit_rate) / requests) ** 0.5)
        else:
            # Climb the advantage over LRU on the same requests rather than the hit
            # ratio: a scan burst or a shift moves both, what is left is mostly what
            # the window did. Only discordant requests count (a paired sign test).
            discordant = policy_only + lru_only
            change = climber.judge((policy_only - lru_only) / sampled, (2 * discordant) ** 0.5 / sampled)
        if change:
            self.resize_window(self._share + change)
        if fell:
            # The hit ratio fell sharply: the workload changed and the counts of the
            # old popular keys now block the new ones. Age them at once.
            for _ in range(cfg.drop_halvings):
                self.sketch.reset()

    def _lru_leads(self, shadow: ShadowLru) -> bool:
        lead = shadow.lru_only - shadow.policy_only
        cfg = self.config
        noise = (shadow.lru_only + shadow.policy_only) ** 0.5
        return lead > cfg.shadow_tolerance * noise and lead > cfg.shadow_gap * shadow.sampled

    def resize_window(self, share: float) -> None:
        """Give the window ``share`` of the capacity (the main space gets the rest)."""
        self._set_share(share)
        window = self.window
        probation = self.probation
        # Shrinking: the window's LRU entries move to probation (no admission contest:
        # they are already cached). Growing: probation's LRU entries move to the window.
        self._window_to_probation()
        self._demote_protected()
        limit, limit_bytes = self._window_limit
        while probation:
            key = next(iter(probation))
            size = probation[key]
            if len(window) + 1 > limit or self.window_bytes + size > limit_bytes:
                break
            del probation[key]
            self.probation_bytes -= size
            window[key] = size
            self.window_bytes += size
        self._retune_aging()

    def _retune_aging(self) -> None:
        cfg = self.config
        if cfg.aging_min_factor is None:
            return
        pull = min(1.0, self._share / cfg.aging_ref)
        factor = cfg.sample_factor - (cfg.sample_factor - cfg.aging_min_factor) * pull
        self.sketch.sample_size = max(1, int(factor * self.sketch.capacity))
