"""Shared test helpers. The stack fixtures come from readscale's own pytest plugin
(``readscale.testing``), the same ones users get."""

from __future__ import annotations

import gc
import socket
import sys
from collections.abc import Generator, Iterator

import pytest

_CALL_FAILED = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, pytest.TestReport]:
    report = yield
    if report.when == "call" and report.failed:
        item.stash[_CALL_FAILED] = True
    return report


@pytest.fixture(autouse=True)
def _release_what_a_failed_test_left(request: pytest.FixtureRequest) -> Iterator[None]:
    """After a failed test, free what it still held, in its own teardown.

    A test that fails mid-way skips its own cleanup: its connections and clients stay
    referenced by the traceback pytest keeps for post-mortem debugging (``sys.last_*``),
    until the next test's call phase drops it and some later collection frees them. Their
    ``ResourceWarning`` (an error here) then fails whichever innocent test is running.
    Collected here, the warning is reported against the test that failed. Set up first
    (autouse, no dependencies), this runs after the test's other fixtures are torn down.
    """
    yield
    if request.node.stash.get(_CALL_FAILED, False):
        # pytest's post-mortem prompt (--pdb) has already run by teardown.
        for name in ("last_type", "last_value", "last_traceback", "last_exc"):
            if hasattr(sys, name):
                delattr(sys, name)
        gc.collect()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def silent_address() -> Iterator[str]:
    """A port that accepts connections (the kernel's backlog) and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield f"127.0.0.1:{listener.getsockname()[1]}"
