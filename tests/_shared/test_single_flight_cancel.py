"""Async-only: a cancelled leader does not strand the callers waiting on its call."""

from __future__ import annotations

import asyncio

import pytest

from readscale._shared.primitives.flight import AsyncSingleFlight


@pytest.mark.anyio
async def test_followers_take_over_from_a_cancelled_leader() -> None:
    flight: AsyncSingleFlight[str, str] = AsyncSingleFlight()
    calls = 0
    started = asyncio.Event()

    async def load() -> str:
        nonlocal calls
        calls += 1
        started.set()
        await asyncio.sleep(0.1)
        return "value"

    leader = asyncio.ensure_future(flight.run("k", load))
    await started.wait()
    followers = [asyncio.ensure_future(flight.run("k", load)) for _ in range(5)]
    await asyncio.sleep(0)
    leader.cancel()
    results = await asyncio.gather(*followers)
    assert [value for value, _ in results] == ["value"] * 5
    assert sum(took for _, took in results) == 1  # exactly one follower re-ran it
    assert calls == 2
    with pytest.raises(asyncio.CancelledError):
        await leader
