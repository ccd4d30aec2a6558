"""One behavioural suite for the async primitives and (generated) their sync twins."""

from __future__ import annotations

import pytest

from readscale._shared.primitives.flight import AsyncSingleFlight
from readscale._shared.primitives.locks import AsyncEvent, AsyncLock, async_sleep
from readscale._shared.primitives.tasks import AsyncBackground
from readscale.testing.concurrency import async_gather


@pytest.mark.anyio
async def test_single_flight_runs_the_function_once_for_concurrent_callers() -> None:
    flight: AsyncSingleFlight[str, int] = AsyncSingleFlight()
    calls = 0

    async def load() -> int:
        nonlocal calls
        calls += 1
        await async_sleep(0.05)
        return 42

    results = await async_gather([lambda: flight.run("k", load) for _ in range(50)])
    assert calls == 1
    assert [value for value, _ in results] == [42] * 50
    assert sum(leader for _, leader in results) == 1
    assert not flight.inflight("k")


@pytest.mark.anyio
async def test_single_flight_shares_the_error_and_then_lets_a_new_call_run() -> None:
    flight: AsyncSingleFlight[str, int] = AsyncSingleFlight()
    calls = 0

    async def fail() -> int:
        nonlocal calls
        calls += 1
        await async_sleep(0.05)
        raise RuntimeError("database down")

    results = await async_gather([lambda: flight.run("k", fail) for _ in range(10)], return_exceptions=True)
    assert calls == 1
    assert all(isinstance(r, RuntimeError) for r in results)

    async def ok() -> int:
        return 7

    assert await flight.run("k", ok) == (7, True)


@pytest.mark.anyio
async def test_single_flight_keys_are_independent() -> None:
    flight: AsyncSingleFlight[str, str] = AsyncSingleFlight()
    seen: list[str] = []

    def loader(key: str):  # type: ignore[no-untyped-def]
        async def load() -> str:
            seen.append(key)
            await async_sleep(0.02)
            return key.upper()

        return load

    results = await async_gather([lambda k=k: flight.run(k, loader(k)) for k in ("a", "b", "a", "b")])
    assert sorted(seen) == ["a", "b"]
    assert [value for value, _ in results] == ["A", "B", "A", "B"]


@pytest.mark.anyio
async def test_event_wait_reports_whether_it_was_set() -> None:
    event = AsyncEvent()
    assert await event.wait(0.01) is False
    event.set()
    assert event.is_set()
    assert await event.wait(0.01) is True
    assert await event.wait() is True


@pytest.mark.anyio
async def test_lock_serialises() -> None:
    lock = AsyncLock()
    inside = 0
    peak = 0

    async def critical() -> None:
        nonlocal inside, peak
        async with lock:
            inside += 1
            peak = max(peak, inside)
            await async_sleep(0.005)
            inside -= 1

    await async_gather([critical for _ in range(10)])
    assert peak == 1


@pytest.mark.anyio
async def test_background_runs_one_job_per_key_and_swallows_errors() -> None:
    errors: list[str] = []
    background: AsyncBackground[str] = AsyncBackground(on_error=lambda key, exc: errors.append(f"{key}: {exc}"))
    runs = 0

    async def refresh() -> None:
        nonlocal runs
        runs += 1
        await async_sleep(0.05)

    started = [background.spawn("k", refresh) for _ in range(5)]
    assert started == [True, False, False, False, False]
    assert background.running("k")
    await background.drain()
    assert runs == 1
    assert not background.running("k")

    async def broken() -> None:
        raise ValueError("boom")

    assert background.spawn("bad", broken)
    await background.drain()
    assert errors == ["bad: boom"]
    await background.close()
