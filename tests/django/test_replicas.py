"""The Django database router and middleware, in a subprocess (Django settings are process-wide)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from readscale.stack import Stack
from tests.replica_helpers import restore_replicas

pytestmark = pytest.mark.stack
ROOT = Path(__file__).resolve().parents[2]


def test_django_reads_its_writes_through_the_router_and_the_middleware(pg_stack: Stack) -> None:
    restore_replicas(pg_stack)
    ports = {"default": pg_stack.primary.port, **{r.name: r.port for r in pg_stack.replicas}}
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "tests.django.replicaapp.run"],
            cwd=ROOT,
            env={**os.environ, "RS_PORTS": json.dumps(ports)},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        restore_replicas(pg_stack)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["token_after_autocommit_write"] is True
    assert out["read_after_autocommit_write"] == "autocommit", "replicas paused: the fallback read it"
    assert out["read_inside_atomic"] == "atomic", "inside atomic() reads stay on the primary"
    assert out["token_moved_before_commit"] is False, "the position is learned after COMMIT, not before"
    assert out["token_moved_after_commit"] is True
    assert out["read_after_atomic"] == "atomic"
    assert out["stranger_reads"] == "initial", "no token: a (paused) replica serves the read"
    assert (out["migrate_on_replica"], out["migrate_on_primary"]) == (False, True), "migrations: primary only"
    assert out["browser_read"] == "browser", "the middleware's cookie carried the token"
    assert out["stranger_http_read"] == "initial"
    assert out["forged_status"] == 200
    assert out["forged_value_read"] == "initial", "a forged token is a new session"
    assert out["forged_cookie_replaced"] is True, "with a genuine token of its own"
    assert set(out["bad_tokens"]) == {
        "tampered", "expired", "other_secret", "other_cluster", "other_timeline", "garbage"
    }  # fmt: skip
    for name, seen in out["bad_tokens"].items():
        assert seen["statuses"] == [200, 200], name
        assert seen["values"] == ["initial", "initial"], f"{name}: a new session reads any (paused) replica"
        assert seen["replaced_with_live"] == [True, True], f"{name}: the response carries this cluster's token"
    assert out["primary_reads"] >= 3
    assert out["replica_reads"] >= 2
