"""A short, reproducible atheris session in the test suite (skipped without atheris).

A fixed seed and a fixed number of runs (tens of thousands, a few seconds here), so the
result does not depend on the machine's speed. Longer sessions: see atheris_main.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("atheris", reason="atheris is not installed (pip install atheris; Linux, CPython <= 3.11)")

ROOT = Path(__file__).resolve().parents[2]
RUNS = 30_000


def test_atheris_finds_no_input_that_breaks_a_parser_contract(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "tests.fuzz.atheris_main", f"-runs={RUNS}", "-seed=1", f"-artifact_prefix={tmp_path}/"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    crashes = sorted(p.name for p in tmp_path.iterdir())
    assert proc.returncode == 0, f"{crashes}\n{proc.stderr[-3000:]}"
    assert f"Done {RUNS} runs" in proc.stderr
