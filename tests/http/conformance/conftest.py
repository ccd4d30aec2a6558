"""Servers for the conformance run: the suite's own origin (Node, bound to 127.0.0.1), the
stack's Varnish with readscale's VCL, and a stock Varnish (builtin VCL) beside it.

The suite comes from the npm registry (tests/http/conformance/install.sh, run by
scripts/bootstrap.sh into the virtualenv, or here if it has not run yet); it is never
copied into the repository.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from readscale.stack import Stack, StackConfig, _proc
from readscale.stack._node import Node, NodeSpec
from readscale.stack.varnish import VarnishNode
from readscale.testing.shared import new_stack_root
from tests.http.conformance.cache_tests import HERE, SuiteRun

# The parameters that make stock Varnish score as the suite's published Varnish results:
# without default_ttl=0 it caches a response with no freshness for 120 s and fails the
# suite's gate test (freshness-none), so nearly every test would be "not run".
STOCK_PARAMS = ("default_ttl=0", "default_grace=0", "default_keep=3600")
RUN_TIMEOUT = 240.0  # seconds for one run of the whole suite (about 15 s here)


def package_dir() -> Path:
    """Where the suite is installed: $READSCALE_CACHE_TESTS_DIR, else in the virtualenv."""
    base = os.environ.get("READSCALE_CACHE_TESTS_DIR") or str(Path(sys.prefix) / "share" / "readscale-conformance")
    return Path(base)


def node_binary() -> str:
    found = shutil.which("node")
    if found is None:
        pytest.fail("node is missing: the conformance suite needs Node.js (Debian: nodejs npm; scripts/bootstrap.sh)")
    return found


@pytest.fixture(scope="session")
def cache_tests_package() -> Path:
    base = package_dir()
    installed = subprocess.run(
        ["bash", str(HERE / "install.sh"), str(base)], capture_output=True, text=True, timeout=600, check=False
    )
    if installed.returncode != 0:
        pytest.fail(f"could not install http-cache-tests into {base}:\n{installed.stdout}{installed.stderr}")
    return base / "node_modules" / "http-cache-tests"


class CacheTestsOrigin(Node):
    """The suite's origin server (server/server.mjs), on 127.0.0.1 only."""

    kind = "cache-tests-origin"

    def __init__(self, spec: NodeSpec, package: Path) -> None:
        super().__init__(spec)
        self.package = package

    def argv(self) -> list[str]:
        return [
            "env",
            "npm_config_protocol=http",
            f"npm_config_port={self.port}",
            f"npm_config_pidfile={self.dir / 'server.pid'}",
            node_binary(),
            "--require", str(HERE / "bind-loopback.cjs"),
            str(self.package / "server" / "server.mjs"),
        ]  # fmt: skip

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class StockVarnish(VarnishNode):
    """varnishd with its builtin VCL (-b), as a user would start it, plus STOCK_PARAMS."""

    kind = "varnish-stock"

    def before_start(self) -> None:
        return None

    def argv(self) -> list[str]:
        argv = super().argv()
        at = argv.index("-f")
        backend = self.spec.extra["backend"].removeprefix("http://")
        argv[at : at + 2] = ["-b", backend]
        for param in STOCK_PARAMS:
            argv += ["-p", param]
        return argv


def _spec(root: Path, name: str, port: int, **extra: object) -> NodeSpec:
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    return NodeSpec(name=name, kind=name, port=port, dir=str(folder), log=str(folder / "server.log"), extra=dict(extra))


def run_suite(package: Path, base_url: str, target: str, only: list[str] | None = None) -> SuiteRun:
    """One run of the suite (or of the tests ``only`` names) against the cache at ``base_url``."""
    done = subprocess.run(
        [node_binary(), str(HERE / "run-cache-tests.mjs"), str(package), base_url, *(only or [])],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )
    if done.returncode != 0 or not done.stdout.strip():
        raise AssertionError(f"the suite did not run against {target} (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return SuiteRun.from_json(target, done.stdout)


@pytest.fixture(scope="module")
def cache_tests_root() -> Iterator[Path]:
    root = new_stack_root("readscale-conformance-")
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def cache_tests_origin(cache_tests_package: Path, cache_tests_root: Path) -> Iterator[CacheTestsOrigin]:
    (port,) = _proc.pick_ports(1)
    origin = CacheTestsOrigin(_spec(cache_tests_root, "origin", port), cache_tests_package)
    try:
        origin.start(may_move=True)
        yield origin
    finally:
        origin.stop(grace=10)


@pytest.fixture(scope="module")
def conformance_runs(
    cache_tests_package: Path, cache_tests_root: Path, cache_tests_origin: CacheTestsOrigin
) -> Iterator[dict[str, SuiteRun]]:
    """The whole suite against both caches at once, sharing one origin: {"readscale": run,
    "stock": run}."""
    port, admin = _proc.pick_ports(2)
    backend = cache_tests_origin.url
    stock = StockVarnish(_spec(cache_tests_root, "varnish-stock", port, admin_port=admin, backend=backend))
    stack = Stack(cache_tests_root / "stack")
    try:
        stock.start(may_move=True)
        stack.up(StackConfig(postgres=False, redis=False, varnish=True, varnish_backend=backend))
        targets = {"readscale": stack.varnish.url, "stock": stock.url}
        with ThreadPoolExecutor(len(targets)) as pool:
            futures = {name: pool.submit(run_suite, cache_tests_package, url, name) for name, url in targets.items()}
            runs = {name: future.result() for name, future in futures.items()}
        # The few tests whose verdict depends on the machine's speed (SuiteRun.to_rerun),
        # again, one cache at a time, only them; their second results are the ones counted.
        for name, url in targets.items():
            again = runs[name].to_rerun()
            if again:
                runs[name] = runs[name].with_rerun(run_suite(cache_tests_package, url, name, only=again))
        yield runs
    finally:
        stack.down()
        stock.stop(grace=10)
