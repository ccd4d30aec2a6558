"""The connection gate of the sync backends: callers queue for a slot, a wedged pool
raises a named TimeoutError after ``timeout``, and every slot comes back on exit."""

from __future__ import annotations

import threading

import pytest

from readscale._shared.primitives.locks import Semaphore


def test_a_full_gate_times_out_with_a_clear_message() -> None:
    gate = Semaphore(2, timeout=0.01)
    with gate, gate, pytest.raises(TimeoutError, match=r"No connection available within 0.01 s \(2 in use\)"):
        gate.__enter__()


def test_slots_come_back_on_exit_even_after_an_error() -> None:
    gate = Semaphore(1, timeout=0.01)
    for _ in range(3):
        with pytest.raises(ValueError), gate:
            raise ValueError("the command failed")
    with gate:  # the slot was returned each time
        pass


def test_a_waiter_gets_the_slot_a_holder_returns() -> None:
    gate = Semaphore(1, timeout=5.0)
    held = threading.Event()
    release = threading.Event()
    order: list[str] = []

    def holder() -> None:
        with gate:
            order.append("holder")
            held.set()
            release.wait(5)

    thread = threading.Thread(target=holder)
    thread.start()
    held.wait(5)
    release.set()
    with gate:  # blocks until the holder leaves, then enters
        order.append("waiter")
    thread.join(5)
    assert order == ["holder", "waiter"]
