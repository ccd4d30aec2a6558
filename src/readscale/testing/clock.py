"""A clock you move by hand, for exact tests of freshness, TTLs and breakers."""

from __future__ import annotations


class FakeClock:
    """Callable like ``time.time``/``time.monotonic``; returns ``now`` until advanced."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
