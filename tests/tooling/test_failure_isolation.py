"""One failing test cannot fail the next: what it left open is reported against it.

A test that fails mid-way skips its own cleanup, and the traceback pytest keeps holds
what it opened. When that is freed later, its ``ResourceWarning`` (an error in this
suite) used to fail whichever test happened to be running (a whole-suite run failed
``test_fill_through_router`` for a connection the CDC crash test had left open). The
suite's conftest frees it in the failed test's own teardown. This runs a tiny suite
with that conftest in a child pytest and checks where the warning lands.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

TESTS = '''
import gc


class Connection:
    """Warns when deleted while open, as psycopg and redis-py connections do."""

    def __init__(self) -> None:
        self.cycle = self  # freed by the garbage collector, not by reference counting

    def __del__(self) -> None:
        import warnings

        warnings.warn("connection deleted while still open", ResourceWarning)


def test_fails_leaving_a_connection_open() -> None:
    conn = Connection()
    assert conn is None


def test_innocent() -> None:
    gc.collect()  # a collection runs at some point in a later test
'''


def test_a_failed_tests_leftovers_are_reported_against_it(tmp_path: Path) -> None:
    (tmp_path / "conftest.py").write_text(
        "from tests.conftest import _release_what_a_failed_test_left, pytest_runtest_makereport\n"
    )
    (tmp_path / "test_pair.py").write_text(TESTS)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider", "-W", "error", str(tmp_path)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    lines = run.stdout.splitlines()
    assert "PASSED test_pair.py::test_innocent" in lines, run.stdout
    assert any(line.startswith("FAILED test_pair.py::test_fails_leaving_a_connection_open") for line in lines)
    # The warning is still reported, as an error in the failed test's teardown.
    assert any(line.startswith("ERROR test_pair.py::test_fails_leaving_a_connection_open") for line in lines), (
        run.stdout
    )
