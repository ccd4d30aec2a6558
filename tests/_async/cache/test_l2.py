"""The L2 gate's one call path (``AsyncL2Gate.call``), without a server: what the breaker
is asked, how a failure fails open, and when a success closes the breaker."""

from __future__ import annotations

from typing import Any, cast

import pytest

from readscale._async.backends.base import AsyncBackend
from readscale._async.cache.l2 import UNREACHED, Admit, AsyncL2Gate, Stored
from readscale._core.cache import breaker as circuit
from readscale._shared.cache.stats import CacheStats
from readscale.errors import CacheUnavailableError, ValueTooLargeError


class Stub:
    """A backend whose ``get`` answers, fails, or is too large, as told."""

    name = "stub"

    def __init__(self) -> None:
        self.fail: BaseException | None = None
        self.calls = 0

    async def get(self, key: str) -> bytes | None:
        self.calls += 1
        if self.fail is not None:
            raise self.fail
        return key.encode()

    async def fill(self, key: str, value: bytes, ttl: float, token: str, lsn: int | None) -> bool:
        self.calls += 1
        return False  # the fill's right was gone: refused


def gate(stub: Stub, now: list[float]) -> AsyncL2Gate:
    return AsyncL2Gate(
        cast(AsyncBackend, stub),
        stats=CacheStats(),
        breaker=circuit.BreakerSettings(failure_threshold=1, cooldown=1.0),
        tombstone_ttl=35.0,
        monotonic=lambda: now[0],
    )


def get(key: str) -> Any:
    return lambda backend: backend.get(key)


@pytest.mark.anyio
async def test_a_failure_fails_open_and_opens_the_breaker_which_then_skips() -> None:
    stub, now = Stub(), [0.0]
    l2 = gate(stub, now)
    assert await l2.call(get("k")) == b"k"
    stub.fail = CacheUnavailableError("down")
    assert await l2.call(get("k")) is UNREACHED
    assert l2.stats.l2.errors == 1
    assert l2.stats.breaker_opens == 1
    stub.fail = None
    assert await l2.call(get("k")) is UNREACHED  # skipped: no call made
    assert stub.calls == 2
    assert l2.stats.l2.skipped == 1


@pytest.mark.anyio
async def test_a_probe_that_answers_closes_the_breaker_whatever_it_answered() -> None:
    """Any answer is the server's: a fill it refused, as the probe, closes the breaker
    too (before, such a probe never reported and held the breaker half-open: every
    later call was skipped, found in review of the fill paths)."""
    stub, now = Stub(), [0.0]
    l2 = gate(stub, now)
    stub.fail = CacheUnavailableError("down")
    await l2.call(get("k"))
    stub.fail = None
    now[0] = 2.0  # past the cooldown: one probe, a fill the server refuses
    assert await l2.store("k", b"v", 10.0, "lease-token", None, write=False, raise_too_large=False) is Stored.REFUSED
    assert l2.available
    assert await l2.call(get("k")) == b"k"


@pytest.mark.anyio
async def test_an_admitted_call_skips_the_breaker_and_other_errors_reach_the_caller() -> None:
    stub, now = Stub(), [0.0]
    l2 = gate(stub, now)
    l2.breaker = circuit.BreakerState(circuit.Circuit.OPEN, 1, 0.0, 1.0)
    assert await l2.call(get("k"), admit=Admit.ADMITTED) == b"k"
    stub.fail = ValueTooLargeError("k", 10, 5)
    with pytest.raises(ValueTooLargeError):
        await l2.call(get("k"), admit=Admit.ADMITTED)


@pytest.mark.anyio
async def test_no_backend_is_unreached() -> None:
    l2 = AsyncL2Gate(None, stats=CacheStats(), breaker=None, tombstone_ttl=35.0, monotonic=lambda: 0.0)
    assert await l2.call(get("k")) is UNREACHED
