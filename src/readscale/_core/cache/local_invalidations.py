"""The invalidations one process has seen, for its in-process tier (L1).

Two questions need them, and neither can ask the cache server:

- **May this L1 copy be put?** A value read from the L2 (or loaded) before an
  invalidation must not enter the L1 after it: the bus message that dropped the key may
  already have been handled, and the copy would then live its whole L1 TTL. Every
  invalidation (this process's own and the bus's) gets a sequence number; a reader
  takes the number before it reads and puts its copy only if the key was not
  invalidated since (:meth:`LocalInvalidations.invalidated_since`).
- **May this reader join a load in flight?** Only one begun after the key's last
  invalidation here (:meth:`LocalInvalidations.generation`): a slow load begun before it
  would hand the old value to readers that arrive after it completed.
- **What floor does a fill have without an L2?** An L1-only cache keeps no tombstones
  on a server, so the invalidations it hears are its tombstones: each keeps the change's
  LSN for the tombstone's life (:meth:`LocalInvalidations.floor`).

The table is bounded: past ``limit`` keys the oldest are dropped and their sequence
number and floor become a floor for every key (conservative, never unsafe). No I/O, no
clock: ``now`` is an argument.
"""

from __future__ import annotations

from readscale._core.cache.fill import PRIMARY_ONLY, merge_floor

__all__ = ["LocalInvalidations"]


class LocalInvalidations:
    """Sequence numbers and floors of recent invalidations, per key."""

    __slots__ = ("_dropped_floor", "_dropped_seq", "_flushed_seq", "_keys", "_tags_seq", "limit", "seq")

    def __init__(self, limit: int = 100_000) -> None:
        self.limit = limit
        self.seq = 0
        self._keys: dict[str, tuple[int, int, float]] = {}  # key -> (seq, floor LSN, deadline)
        self._flushed_seq = 0
        self._tags_seq = 0
        self._dropped_seq = 0
        self._dropped_floor: tuple[int, float] | None = None

    def mark(self, keys: list[str] | tuple[str, ...], lsn: int | None, until: float, now: float) -> None:
        """``keys`` were invalidated (``lsn`` None: position unknown); their floor stands
        until ``until`` (the caller's clock)."""
        self.seq += 1
        floor = PRIMARY_ONLY if lsn is None else lsn
        table = self._keys
        for key in keys:
            old = table.pop(key, None)
            if old is not None and old[2] > now:
                table[key] = (self.seq, max(floor, old[1]), max(until, old[2]))
            else:
                table[key] = (self.seq, floor, until)
        while len(table) > self.limit:
            oldest = next(iter(table))
            seq, lsn_, deadline = table.pop(oldest)
            self._dropped_seq = max(self._dropped_seq, seq)
            if deadline > now:
                old_floor = self._dropped_floor
                if old_floor is not None and old_floor[1] > now:
                    self._dropped_floor = (max(lsn_, old_floor[0]), max(deadline, old_floor[1]))
                else:
                    self._dropped_floor = (lsn_, deadline)

    def flush(self) -> None:
        """Everything local was dropped (a bus gap, a flush): no earlier read may be put."""
        self.seq += 1
        self._flushed_seq = self.seq

    def tags_bumped(self) -> None:
        """Tag or namespace versions moved (bumped here or heard on the bus)."""
        self.seq += 1
        self._tags_seq = self.seq

    def generation(self, key: str, *, tagged: bool = False) -> int:
        """A number that changes whenever ``key`` may have been invalidated here (with
        ``tagged``, whenever any tag version moved too). Readers that share one load
        (single-flight) share it only within a generation: a reader that arrives after an
        invalidation never gets a value loaded before it."""
        found = self._keys.get(key)
        own = found[0] if found is not None else 0
        return max(own, self._flushed_seq, self._dropped_seq, self._tags_seq if tagged else 0)

    def invalidated_since(self, key: str, seq: int) -> bool:
        """True when ``key`` may have been invalidated after sequence number ``seq``."""
        if self._flushed_seq > seq or self._dropped_seq > seq:
            return True
        found = self._keys.get(key)
        return found is not None and found[0] > seq

    def floor(self, key: str, now: float) -> int | None:
        """The floor a fill of ``key`` must read at or past, from invalidations heard here."""
        found = self._keys.get(key)
        own = found[1] if found is not None and found[2] > now else None
        dropped = self._dropped_floor
        return merge_floor(own, dropped[0] if dropped is not None and dropped[1] > now else None)

    def __len__(self) -> int:
        return len(self._keys)
