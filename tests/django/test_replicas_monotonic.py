"""Monotonic reads through the Django database router and middleware (issue 12, defect 1),
each scenario in a fresh interpreter (Django settings are process-wide); see
tests/django/replicaapp/monotonic.py for what each one does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from readscale.stack import Stack
from tests.replica_helpers import prepare_monotonic, r2_delayed

pytestmark = [pytest.mark.stack, pytest.mark.chaos]
ROOT = Path(__file__).resolve().parents[2]


def run(stack: Stack, scenario: str) -> dict[str, Any]:
    ports = {"default": stack.primary.port, **{r.name: r.port for r in stack.replicas}}
    proc = subprocess.run(
        [sys.executable, "-m", "tests.django.replicaapp.monotonic", scenario],
        cwd=ROOT,
        env={**os.environ, "RS_PORTS": json.dumps(ports)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    out: dict[str, Any] = json.loads(proc.stdout)
    return out


@pytest.mark.parametrize("scenario", ["router", "middleware", "atomic"])
def test_django_reads_never_go_back_in_time(pg_stack: Stack, scenario: str) -> None:
    prepare_monotonic(pg_stack)
    with r2_delayed(pg_stack):
        out = run(pg_stack, scenario)
    assert out["reads"] == 12 * 4 * 2
    assert out["would_go_back"] > 0, out["summary"]
    assert out["go_backs"] == 0, out["summary"]


def test_the_statement_hooks_mark_what_they_read_and_a_commit_settles_it(pg_stack: Stack) -> None:
    prepare_monotonic(pg_stack)
    out = run(pg_stack, "hooks")
    assert out["replica_statement"] == ["r1"], "a statement on a replica alias leaves it unsettled"
    assert out["after_settle"] == []
    assert out["primary_read"] == ["primary"], "so does a read on the primary alias"
    assert out["after_write"] == [], "the write's commit position bounds both"
    assert out["settles"] == 1
