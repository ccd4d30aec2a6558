"""Acceptance: nothing of ours is left after a missing binary, a failed up or Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from readscale.errors import StackError
from readscale.stack import Stack, StackConfig, _start
from readscale.testing import new_stack_root
from tests.helpers import READSCALE, cli, processes_mentioning

pytestmark = pytest.mark.stack


def test_missing_binary_is_named_with_its_package_and_leaves_nothing(tmp_path: Path) -> None:
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()
    root = tmp_path / "stack"
    proc = cli("stack", "up", env={"PATH": str(empty_bin), "READSCALE_STACK_DIR": str(root)}, check=False)
    assert proc.returncode == 1
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert "redis-server was not found" in lines[0]
    assert "apt-get install -y redis-server" in lines[0]
    assert not root.exists()


def test_missing_postgres_binaries_are_named_too(tmp_path: Path) -> None:
    root = tmp_path / "stack"
    proc = cli(
        "stack", "up", "--no-redis",
        env={"READSCALE_PG_BINDIR": str(tmp_path), "READSCALE_STACK_DIR": str(root)}, check=False,
    )  # fmt: skip
    assert proc.returncode == 1
    assert "initdb was not found" in proc.stderr
    assert "postgresql-15" in proc.stderr
    assert not root.exists()


def test_a_failed_up_stops_what_it_started(monkeypatch: pytest.MonkeyPatch) -> None:
    base = new_stack_root()

    def broken_cluster(nodes: object) -> None:
        raise StackError("cluster creation failed (injected)")

    monkeypatch.setattr(_start, "create_cluster", broken_cluster)
    stack = Stack(base / "stack")
    with pytest.raises(StackError, match="injected"):
        stack.up(StackConfig(replicas=1, cluster=True))
    assert not (base / "stack").exists()
    assert processes_mentioning(str(base)) == []
    base.rmdir()


def test_ctrl_c_during_up_leaves_nothing() -> None:
    base = new_stack_root()
    root = base / "stack"
    env = {**os.environ, "READSCALE_STACK_DIR": str(root)}
    proc = subprocess.Popen(
        [READSCALE, "stack", "up", "--cluster"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # Interrupt once the primary runs, while the replicas and the cluster are still coming.
    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the primary never started"
        try:
            state = json.loads((root / "state.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            state = {"nodes": []}
        if any(n["name"] == "primary" and n["pid"] for n in state["nodes"]):
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err
    assert not root.exists()
    assert processes_mentioning(str(base)) == []
    base.rmdir()


def test_a_second_up_in_the_same_folder_is_refused(pg_stack: Stack) -> None:
    other = Stack(pg_stack.root)
    with pytest.raises(StackError, match="already running"):
        other.up(StackConfig(replicas=0, redis=False))
    assert pg_stack.primary.is_ready()
