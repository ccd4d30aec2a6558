"""How far, in seconds, the CDC worker is behind the primary: from WAL positions only.

The slot's confirmed position says how many bytes are left, not how old they are. The
worker samples the primary's current position at each measurement; every change it has
not applied lies past the confirmed position, so it was written after the primary passed
that position: after the latest sample still at or before it. ``now`` minus that
sample's time bounds the age of the oldest unapplied change (to within one poll)."""

from __future__ import annotations

from collections import deque

#: Samples kept: at the worker's poll interval, minutes of history.
MAX_SAMPLES = 4096


class LagSamples:
    """The primary's WAL position over time; ``seconds`` is the bound above."""

    __slots__ = ("_samples",)

    def __init__(self, maxlen: int = MAX_SAMPLES) -> None:
        self._samples: deque[tuple[float, int]] = deque(maxlen=maxlen)

    def seconds(self, *, current: int, confirmed: int, now: float) -> float:
        """Record (``now``, ``current``) and return the lag in seconds of ``confirmed``:
        0 when caught up; the oldest sample's age when every kept sample is past it."""
        self._samples.append((now, current))
        if confirmed >= current:
            return 0.0
        behind_since: float | None = None
        for at, position in reversed(self._samples):
            if position <= confirmed:
                behind_since = at
                break
        if behind_since is None:
            behind_since = self._samples[0][0]
        # Drop samples older than the one that bounds the lag: they will not bound it again.
        while len(self._samples) > 1 and self._samples[0][0] < behind_since:
            self._samples.popleft()
        return max(0.0, now - behind_since)
