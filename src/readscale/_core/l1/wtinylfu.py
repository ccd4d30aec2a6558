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
  leads significantly the window grows at once: LRU is the policy with a
  whole-capacity window, so the policy never stays far below it (issue 17: shift at
  10 % went from 0.435 to 0.525, LRU 0.528). The growth starts at ``shadow_step``
  and doubles with each lead that follows one in the same or the previous sample
  period, up to ``shadow_step_max``: a lasting lead (a shift in a large cache) still
  opens the window in a few leads, a brief one after each shift in a small cache no
  longer throws it to 100 %, which frequency then pays for until the climber walks it
  back (1 M requests, shift at 1 %: 0.373 with fixed steps of 0.25, 0.386 now; fixed
  steps of 0.0625 gave 0.401 there but left shift at 10 %, 200k, 2 points below LRU).
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
- Every key the policy drops leaves ``data`` inside the call and is counted once, in
  ``rejections`` when it lost at admission (a candidate) or ``evictions`` (a victim);
  ``evict``, when given, is called back with it and that flag.
- Pure: no clock, no randomness of its own (``rng`` is injected; it only breaks the rare
  admission tie against hash flooding, as Caffeine does).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, Final, Generic, TypeVar

from readscale._core.l1.climber import WindowClimber
from readscale._core.l1.shadow import ShadowLru
from readscale._core.l1.sketch import FrequencySketch

__all__ = ["Entry", "TinyLfuConfig", "WTinyLfu"]

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
      ``shadow_step`` 0.0625 doubling up to ``shadow_step_max`` 0.25 (see the module
      docstring; equal values give fixed steps), ``shadow_tolerance`` 3 standard errors (the test runs on
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
    shadow_step: float = 0.0625
    shadow_tolerance: float = 3.0
    shadow_min_sample: int = 1_000
    shadow_gap: float = 0.005
    shadow_step_max: float = 0.25


_WINDOW: Final = 1
_PROBATION: Final = 2
_PROTECTED: Final = 3
_INF: Final = float("inf")
# The low 62 bits of a key's hash: all the sketch's indexes need (see add).
_LOW_BITS: Final = 0x3FFFFFFFFFFFFFFF
# What the insert's common case does with the candidate that leaves the window.
_MOVE: Final = 0  # to probation, no contest
_EVICT: Final = 1  # dropped as its own victim (probation empty)
_REJECT: Final = 2  # dropped: not more frequent than the victim
_ADMIT: Final = 3  # to probation, the victim dropped


class Entry:
    """One cached key: the store's value and deadline, the policy's size, segment and
    links, in one object of fixed slots (issue 17: an ``OrderedDict`` node per segment
    plus a ``(value, deadline)`` tuple per key cost ~100 bytes more per entry, and every
    move a dict operation).

    ``seg`` is the segment (1 window, 2 probation, 3 protected) or 0 once the entry has
    left the policy; ``prev``/``next`` link it into its segment's circular list, whose
    head is a sentinel entry (``head.next`` the least recently used, ``head.prev`` the
    most). The store writes ``value`` before ``deadline`` on an overwrite, so a reader
    that checks the deadline first never returns an older value than the deadline says.
    """

    __slots__ = ("deadline", "key", "next", "prev", "seg", "size", "value")

    def __init__(self, key: Any, value: Any, deadline: float, size: int) -> None:
        self.key = key
        self.value = value
        self.deadline = deadline
        self.size = size
        self.seg = 0
        self.prev: Entry = self
        self.next: Entry = self


def _sentinel() -> Entry:
    return Entry(None, None, -_INF, 0)


def _view(head: Entry) -> dict[Any, int]:
    out: dict[Any, int] = {}
    e = head.next
    while e is not head:
        out[e.key] = e.size
        e = e.next
    return out


class WTinyLfu(Generic[K]):
    """Window TinyLFU bookkeeping over keys and their sizes (see the module docstring).

    The policy owns ``data`` (key -> :class:`Entry`); a store shares that dict, creates
    entries itself and calls :meth:`add` / :meth:`touch` / :meth:`resize` /
    :meth:`discard`; a dropped key leaves ``data`` inside the call and is counted in
    ``evictions`` or ``rejections`` (and reported to ``evict`` when one is given).
    :meth:`insert`, :meth:`update`, :meth:`remove` and :meth:`record_hit` do the same by
    key, for the simulator and tests.
    """

    def __init__(
        self,
        max_entries: int,
        max_bytes: int | None,
        evict: Callable[[K, bool], None] | None,
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
        self._bytes_bounded = max_bytes is not None
        self._evict = evict
        self._rng = rng
        self._seed = seed
        self._hash_seed = seed & ((1 << 64) - 1)  # the sketch's and the shadow's
        self.data: dict[K, Entry] = {}
        self._wh = _sentinel()
        self._bh = _sentinel()
        self._ph = _sentinel()
        self._wn = self._bn = self._pn = 0
        self.window_bytes = 0
        self.probation_bytes = 0
        self.protected_bytes = 0
        self.evictions = 0
        self.rejections = 0
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
        self._shadow_threshold = 0  # sampled keys' top 16 mixed-hash bits are below it
        if cfg.adaptive and cfg.shadow_entries:
            self.shadow = ShadowLru(max_entries, entries=cfg.shadow_entries, seed=seed)
            self._shadow_threshold = self.shadow.threshold
        self._lead_streak = 0  # shadow leads in a row (no period without one between)
        self._led = False  # the shadow LRU led in the current sample period
        # The insert's inlined increment and admission assume this sketch layout.
        self._inline_sketch = cfg.conservative and not cfg.doorkeeper
        self._share = 0.0
        self._set_share(cfg.window)

    # -- sizes and views -----------------------------------------------------------------

    @property
    def entries(self) -> int:
        return self._wn + self._bn + self._pn

    @property
    def weight(self) -> int:
        return self.window_bytes + self.probation_bytes + self.protected_bytes

    @property
    def window(self) -> dict[K, int]:
        """The window's keys -> sizes, least recently used first (a copy)."""
        return _view(self._wh)

    @property
    def probation(self) -> dict[K, int]:
        return _view(self._bh)

    @property
    def protected(self) -> dict[K, int]:
        return _view(self._ph)

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

    # -- events by key (simulator, tests) ------------------------------------------------

    def record_hit(self, key: K) -> None:
        """A read hit ``key``."""
        e = self.data.get(key)
        if e is not None:
            self.touch(e)
            return
        h = hash((key, self._hash_seed))
        if ((h >> 48) & 0xFFFF) < self._shadow_threshold:
            self.shadow.observe_sampled(key, True)  # type: ignore[union-attr]
        self.sketch.increment_hashed(h)

    def insert(self, key: K, size: int) -> None:
        """A new key was stored: it enters the window, then evict down to the bounds."""
        e = Entry(key, None, _INF, size)
        self.data[key] = e
        self.add(e)

    def update(self, key: K, size: int) -> None:
        """An existing key was overwritten: an access, and maybe a new size."""
        self.resize(self.data[key], size)

    def remove(self, key: K) -> None:
        """``key`` left the store for another reason (deleted, expired)."""
        e = self.data.get(key)
        if e is not None:
            self.discard(e)

    # -- events by entry (the store) -----------------------------------------------------

    def touch(self, e: Entry) -> None:
        """A read hit ``e`` (replayed from the store's read buffer)."""
        h = hash((e.key, self._hash_seed))
        if ((h >> 48) & 0xFFFF) < self._shadow_threshold:
            self.shadow.observe_sampled(e.key, True)  # type: ignore[union-attr]
        self._access(e, h)

    def replay(self, ring: list[Any], start: int, end: int, mask: int) -> None:
        """Replay the hits in ``ring[start:end]`` (positions modulo ``mask + 1``): what
        :meth:`touch` does for each, with the sketch's increment inlined."""
        if not self._inline_sketch:
            touch = self.touch
            for i in range(start, end):
                e = ring[i & mask]
                if e.seg:
                    touch(e)
            return
        seed = self._hash_seed
        threshold = self._shadow_threshold
        shadow = self.shadow
        sketch = self.sketch
        m = sketch._mask
        r0, r1, r2, r3 = sketch._rows
        cap = sketch._max
        wh = self._wh
        ph = self._ph
        for i in range(start, end):
            e = ring[i & mask]
            seg = e.seg
            if not seg:
                continue  # removed since it was read
            key = e.key
            h = hash((key, seed))
            hi = h >> 32  # see add: two operations on the 64-bit hash, then small ints
            h &= _LOW_BITS
            if ((hi >> 16) & 0xFFFF) < threshold:
                shadow.observe_sampled(key, True)  # type: ignore[union-attr]
            # sketch.increment_hashed(h), conservative, no doorkeeper
            b = hi | 1
            i0 = h & m
            i1 = (h + b) & m
            i2 = (h + 2 * b) & m
            i3 = (h + 3 * b) & m
            c0 = r0[i0]
            c1 = r1[i1]
            c2 = r2[i2]
            c3 = r3[i3]
            low = c0 if c0 < c1 else c1  # min(c0, c1, c2, c3), without the call
            if c2 < low:
                low = c2
            if c3 < low:
                low = c3
            if low < cap:
                low += 1
                if c0 < low:
                    r0[i0] = low
                if c1 < low:
                    r1[i1] = low
                if c2 < low:
                    r2[i2] = low
                if c3 < low:
                    r3[i3] = low
                n = sketch._additions + 1
                sketch._additions = n
                if n >= sketch.sample_size:
                    sketch.reset()
            if seg == _PROBATION:
                self._promote(e)
                continue
            head = wh if seg == _WINDOW else ph
            if head.prev is not e:  # move to the MRU end
                p = e.prev
                nxt = e.next
                p.next = nxt
                nxt.prev = p
                last = head.prev
                e.prev = last
                e.next = head
                last.next = e
                head.prev = e

    def _access(self, e: Entry, h: int) -> None:
        self.sketch.increment_hashed(h)
        seg = e.seg
        if seg == _PROBATION:
            self._promote(e)
            return
        head = self._wh if seg == _WINDOW else self._ph
        if head.prev is not e:  # move to the MRU end
            p = e.prev
            n = e.next
            p.next = n
            n.prev = p
            last = head.prev
            e.prev = last
            e.next = head
            last.next = e
            head.prev = e

    def _promote(self, e: Entry) -> None:
        """A probation hit: ``e`` moves to protected, whose overflow goes back."""
        p = e.prev
        n = e.next
        p.next = n
        n.prev = p
        self._bn -= 1
        self.probation_bytes -= e.size
        head = self._ph
        last = head.prev
        e.prev = last
        e.next = head
        last.next = e
        head.prev = e
        e.seg = _PROTECTED
        self._pn += 1
        self.protected_bytes += e.size
        self._demote_protected()

    def add(self, e: Entry) -> None:
        """``e`` (already in ``data``) is new: it enters the window, then evict down to
        the bounds.

        Written flat, the sketch's increment and admission inlined (issue 17: a miss +
        set cost 4.8 µs, 7x cachetools' LRU): in the common case one key leaves the
        window, faces one victim, and one of them goes, and a Python call costs as much
        as that work. Anything else (a byte bound, a window over its limit after a
        resize, a doorkeeper) takes the general path, ``_evict_to_bounds``."""
        sketch = self.sketch
        if sketch.capacity < self.max_entries and self._wn + self._bn + self._pn >= sketch.capacity:
            sketch = self.sketch = self._new_sketch(min(self.max_entries, sketch.capacity * 4))
            self._retune_aging()
        key = e.key
        seed = self._hash_seed
        h = hash((key, seed))
        # The hash is a full 64-bit int: past 62 bits a compiled build (mypyc) works on it
        # as a Python object, below as a machine word. So two operations take what is
        # needed from it, the high half (the shadow's sample bits 48..63, the probe step)
        # and the low 62 bits (the indexes: a mask of at most 62 bits sees the same
        # (h + i*b) & mask either way); the rest is small-int arithmetic. Same values.
        hi = h >> 32
        if ((hi >> 16) & 0xFFFF) < self._shadow_threshold:
            self.shadow.observe_sampled(key, False)  # type: ignore[union-attr]
        if self._inline_sketch:
            # sketch.increment_hashed(h), conservative, no doorkeeper
            h &= _LOW_BITS
            b = hi | 1
            m = sketch._mask
            r0, r1, r2, r3 = sketch._rows
            i0 = h & m
            i1 = (h + b) & m
            i2 = (h + 2 * b) & m
            i3 = (h + 3 * b) & m
            c0 = r0[i0]
            c1 = r1[i1]
            c2 = r2[i2]
            c3 = r3[i3]
            low = c0 if c0 < c1 else c1  # min(c0, c1, c2, c3), without the call
            if c2 < low:
                low = c2
            if c3 < low:
                low = c3
            if low < sketch._max:
                low += 1
                if c0 < low:
                    r0[i0] = low
                if c1 < low:
                    r1[i1] = low
                if c2 < low:
                    r2[i2] = low
                if c3 < low:
                    r3[i3] = low
                n = sketch._additions + 1
                sketch._additions = n
                if n >= sketch.sample_size:
                    sketch.reset()
        else:
            sketch.increment_hashed(h)
        head = self._wh
        last = head.prev
        e.prev = last
        e.next = head
        last.next = e
        head.prev = e
        e.seg = _WINDOW
        wn = self._wn = self._wn + 1
        self.window_bytes += e.size
        limit = self._window_limit[0]
        if self._bytes_bounded or wn - 1 > limit or not self._inline_sketch:
            self._evict_to_bounds()
            return
        if wn <= limit:  # nothing leaves the window
            if wn + self._bn + self._pn > self.max_entries:
                self._evict_to_bounds()
            return
        # The window's LRU entry leaves it as the candidate (it would move to probation's
        # MRU end and face probation's LRU victim: decided first, so a loser is dropped
        # from the window without the round trip through probation).
        c = head.next
        bh = self._bh
        victim = bh.next
        if wn + self._bn + self._pn <= self.max_entries:
            outcome = _MOVE  # no contest: the cache is not full
        elif victim is bh:
            outcome = _EVICT  # probation is empty: the candidate would be its own victim
        else:
            # sketch.frequencies(c.key, victim.key), inlined
            m = sketch._mask
            r0, r1, r2, r3 = sketch._rows
            h = hash((c.key, seed))
            b = (h >> 32) | 1
            h &= _LOW_BITS
            cf = r0[h & m]
            f = r1[(h + b) & m]
            if f < cf:
                cf = f
            f = r2[(h + 2 * b) & m]
            if f < cf:
                cf = f
            f = r3[(h + 3 * b) & m]
            if f < cf:
                cf = f
            h = hash((victim.key, seed))
            b = (h >> 32) | 1
            h &= _LOW_BITS
            vf = r0[h & m]
            f = r1[(h + b) & m]
            if f < vf:
                vf = f
            f = r2[(h + 2 * b) & m]
            if f < vf:
                vf = f
            f = r3[(h + 3 * b) & m]
            if f < vf:
                vf = f
            outcome = _ADMIT
            if cf <= vf:
                threshold = self.config.hashdos_threshold
                if not (threshold and cf >= threshold and self._rng is not None and self._rng() < 1 / 128):
                    outcome = _REJECT
        nxt = c.next
        head.next = nxt
        nxt.prev = head
        self._wn = wn - 1
        size = c.size
        self.window_bytes -= size
        if outcome in (_REJECT, _EVICT):
            c.seg = 0
            del self.data[c.key]
            rejected = outcome == _REJECT
            if rejected:
                self.rejections += 1
            else:
                self.evictions += 1
            if self._evict is not None:
                self._evict(c.key, rejected)
            return
        if outcome == _ADMIT:
            # The victim goes; the candidate takes probation's MRU end.
            p = victim.prev
            nxt = victim.next
            p.next = nxt
            nxt.prev = p
            victim.seg = 0
            self._bn -= 1
            self.probation_bytes -= victim.size
            del self.data[victim.key]
            self.evictions += 1
            if self._evict is not None:
                self._evict(victim.key, False)
        last = bh.prev
        c.prev = last
        c.next = bh
        last.next = c
        bh.prev = c
        c.seg = _PROBATION
        self._bn += 1
        self.probation_bytes += size

    def resize(self, e: Entry, size: int) -> None:
        """``e`` was overwritten: an access, and maybe a new size."""
        self.touch(e)
        old = e.size
        e.size = size
        seg = e.seg
        if seg == _WINDOW:
            self.window_bytes += size - old
        elif seg == _PROBATION:
            self.probation_bytes += size - old
        elif seg == _PROTECTED:
            self.protected_bytes += size - old
        self._evict_to_bounds()

    def discard(self, e: Entry) -> None:
        """``e`` left the store for another reason (deleted, expired): unlink it."""
        self._unlink(e)
        del self.data[e.key]

    def clear(self) -> None:
        """Forget every key (the sketch keeps its history: popularity outlives a flush)."""
        for e in self.data.values():
            e.seg = 0
        self.data.clear()
        for head in (self._wh, self._bh, self._ph):
            head.prev = head.next = head
        self._wn = self._bn = self._pn = 0
        self.window_bytes = self.probation_bytes = self.protected_bytes = 0

    # -- list operations -----------------------------------------------------------------

    def _unlink(self, e: Entry) -> None:
        p = e.prev
        n = e.next
        p.next = n
        n.prev = p
        seg = e.seg
        e.seg = 0
        if seg == _WINDOW:
            self._wn -= 1
            self.window_bytes -= e.size
        elif seg == _PROBATION:
            self._bn -= 1
            self.probation_bytes -= e.size
        elif seg == _PROTECTED:
            self._pn -= 1
            self.protected_bytes -= e.size

    def _drop(self, e: Entry, rejected: bool) -> None:
        self._unlink(e)
        del self.data[e.key]
        if rejected:
            self.rejections += 1
        else:
            self.evictions += 1
        if self._evict is not None:
            self._evict(e.key, rejected)

    # -- eviction ------------------------------------------------------------------------

    def _demote_protected(self) -> None:
        limit, limit_bytes = self._protected_limit
        if self._pn <= limit and self.protected_bytes <= limit_bytes:
            return
        ph = self._ph
        bh = self._bh
        while self._pn and (self._pn > limit or self.protected_bytes > limit_bytes):
            e = ph.next
            n = e.next
            ph.next = n
            n.prev = ph
            self._pn -= 1
            self.protected_bytes -= e.size
            last = bh.prev
            e.prev = last
            e.next = bh
            last.next = e
            bh.prev = e
            e.seg = _PROBATION
            self._bn += 1
            self.probation_bytes += e.size

    def _window_to_probation(self) -> list[Entry]:
        wh = self._wh
        bh = self._bh
        limit, limit_bytes = self._window_limit
        moved: list[Entry] = []
        while self._wn and (self._wn > limit or self.window_bytes > limit_bytes):
            e = wh.next
            n = e.next
            wh.next = n
            n.prev = wh
            self._wn -= 1
            self.window_bytes -= e.size
            last = bh.prev
            e.prev = last
            e.next = bh
            last.next = e
            bh.prev = e
            e.seg = _PROBATION
            self._bn += 1
            self.probation_bytes += e.size
            moved.append(e)
        return moved

    def _over(self) -> bool:
        return self._wn + self._bn + self._pn > self.max_entries or self.weight > self.max_bytes

    def _evict_to_bounds(self) -> None:
        limit, limit_bytes = self._window_limit
        candidates = self._window_to_probation() if self._wn > limit or self.window_bytes > limit_bytes else []
        max_entries = self.max_entries
        max_bytes = self.max_bytes
        bh = self._bh
        # Candidates are compared newest first, as Caffeine walks probation backwards;
        # one that wins faces the next victim too: it must outrank all it displaces.
        while (
            self._wn + self._bn + self._pn > max_entries
            or self.window_bytes + self.probation_bytes + self.protected_bytes > max_bytes
        ):
            candidate = None
            while candidates:
                e = candidates.pop()
                if e.seg == _PROBATION:
                    candidate = e
                    break
            if candidate is None:
                self._evict_oldest()
                continue
            victim = bh.next
            if victim is candidate:
                self._drop(candidate, False)
            elif candidate.size > max_bytes or not self._admit(candidate.key, victim.key):
                self._drop(candidate, True)
            else:
                self._drop(victim, False)
                candidates.append(candidate)

    def _evict_oldest(self) -> None:
        for head in (self._bh, self._ph, self._wh):
            if head.next is not head:
                self._drop(head.next, False)
                return

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
            step = min(cfg.shadow_step_max, cfg.shadow_step * 2.0**self._lead_streak)
            self._lead_streak += 1
            self._led = True
            self.resize_window(self._share + step)
        requests = self._hits + self._misses
        period = min(cfg.climb_sample_factor * self.sketch.capacity, cfg.climb_max_sample)
        if requests < max(period, cfg.climb_min_sample):
            return
        hit_rate = self._hits / requests
        fell = self._hit_rate is not None and self._hit_rate - hit_rate >= cfg.drop_threshold
        self._hit_rate = hit_rate
        self._hits = self._misses = 0
        if not self._led:
            self._lead_streak = 0
        self._led = False
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
        # Shrinking: the window's LRU entries move to probation (no admission contest:
        # they are already cached). Growing: probation's LRU entries move to the window.
        self._window_to_probation()
        self._demote_protected()
        limit, limit_bytes = self._window_limit
        bh = self._bh
        wh = self._wh
        while bh.next is not bh:
            e = bh.next
            size = e.size
            if self._wn + 1 > limit or self.window_bytes + size > limit_bytes:
                break
            n = e.next
            bh.next = n
            n.prev = bh
            self._bn -= 1
            self.probation_bytes -= size
            last = wh.prev
            e.prev = last
            e.next = wh
            last.next = e
            wh.prev = e
            e.seg = _WINDOW
            self._wn += 1
            self.window_bytes += size
        self._retune_aging()

    def _retune_aging(self) -> None:
        cfg = self.config
        if cfg.aging_min_factor is None:
            return
        pull = min(1.0, self._share / cfg.aging_ref)
        factor = cfg.sample_factor - (cfg.sample_factor - cfg.aging_min_factor) * pull
        self.sketch.sample_size = max(1, int(factor * self.sketch.capacity))
