"""The reference service's whole environment on one machine, started and stopped as one.

The stack (PostgreSQL primary and replicas, Redis with an AOF, Varnish in front), the
seeded shop, the service under uvicorn, the CDC worker and the write-behind flusher.
``readscale demo`` measures it; ``readscale bench chaos`` breaks it one part at a time,
so each process can be killed and started again by name.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import httpx
import psycopg

from readscale.demo import schema
from readscale.errors import ConfigurationError, StackError
from readscale.stack import Stack, StackConfig
from readscale.stack._proc import pick_ports

Process = Literal["app", "cdc", "flusher"]
PROCESSES: tuple[Process, ...] = ("app", "cdc", "flusher")
STATS_KEY = "demo:stats"
WRITE_BEHIND_QUEUE = "views"
CDC_SLOT = "demo_cdc"
# The CDC worker is the backstop for every cached row: products (changed in SQL by the
# admin, nobody invalidates them in code) and profiles (written through, but a write
# made while Redis was down leaves Redis' old copy, which another process could read
# once Redis is back: the worker deletes it as soon as Redis answers).
CDC_RULES = """\
[[rule]]
table = "products"
keys = ["product:{id}"]
tags = ["category:{category_id}"]

[[rule]]
table = "users"
keys = ["user:{id}:profile"]
"""


@dataclass(frozen=True)
class EnvironmentConfig:
    size: schema.ShopSize = field(default_factory=schema.ShopSize)
    workers: int = 2
    replicas: int = 2
    replica_delay_s: float = 0.0
    #: Also Prometheus, scraping the service's, the CDC worker's and the flusher's /metrics.
    prometheus: bool = False


class DemoEnvironment:
    """Start with :meth:`start`, stop with :meth:`close` (also on error, and idempotent)."""

    def __init__(self, config: EnvironmentConfig, progress: Callable[[str], None] = lambda message: None) -> None:
        if config.workers < 1 or config.replicas < 1:
            raise ConfigurationError("the demo needs at least one worker and one replica")
        self.config = config
        self.progress = progress
        self.base = Path(tempfile.mkdtemp(prefix="readscale-demo-"))
        self.base.chmod(0o755)
        self.stack = Stack(self.base / "stack", progress=progress)
        self.app_port, cdc_port, flusher_port = pick_ports(3)
        self.metrics_ports: dict[Process, int] = {"app": self.app_port, "cdc": cdc_port, "flusher": flusher_port}
        self.static_dir = self.base / "static"
        self.logs = {name: self.base / f"{name}.log" for name in PROCESSES}
        self._procs: dict[Process, subprocess.Popen[bytes]] = {}
        self._env: dict[str, str] = {}

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> DemoEnvironment:
        config, stack = self.config, self.stack
        stack.up(
            StackConfig(
                # AOF: Redis holds the write-behind queue, whose acknowledged writes must
                # survive a kill (Redis writes the AOF before it replies).
                replicas=config.replicas, redis=True, redis_aof=True, varnish=True,
                varnish_backend=self.app_url, varnish_probe="/healthz",
                prometheus=config.prometheus, prometheus_targets=tuple(self.metrics_urls.values()),
                prometheus_interval=0.5,
            )
        )  # fmt: skip
        if config.replica_delay_s:
            stack.set_apply_delay(stack.replicas[-1].name, config.replica_delay_s)
        self.progress("seeding the shop")
        with psycopg.connect(stack.primary.dsn, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            conn.execute(schema.DDL)
            for statement in schema.seed_sql(config.size):
                conn.execute(statement)
        from readscale.demo.app import write_static

        write_static(self.static_dir)
        (self.base / "cdc-rules.toml").write_text(CDC_RULES)
        self._env = {
            "READSCALE_DEMO_PRIMARY": stack.primary.dsn,
            "READSCALE_DEMO_REPLICAS": ",".join(r.dsn for r in stack.replicas),
            "READSCALE_DEMO_REDIS": stack.redis.url,
            "READSCALE_DEMO_SECRET": os.urandom(16).hex(),
            "READSCALE_DEMO_STATS_KEY": STATS_KEY,
            "READSCALE_DEMO_STATIC": str(self.static_dir),
            "READSCALE_DEMO_METRICS_DIR": str(self.base / "metrics"),
        }
        self.progress(f"starting the service ({config.workers} uvicorn workers), the CDC worker and the flusher")
        for name in PROCESSES:
            self.start_process(name)
        # The CDC worker and the flusher are running once their metrics endpoint answers
        # (bound, past their imports): one that died at start (its port taken, a bad
        # argument) is named here, not found later as invalidations or writes missing.
        for name in ("cdc", "flusher"):
            self.wait_metrics(name, 60)
        self.wait_http(f"{stack.varnish.url}/healthz", 30)
        time.sleep(1.0)  # the CDC slot exists before the first change
        return self

    def close(self, keep_logs: Path | None = None) -> None:
        """Stop every process and server and remove the folder (copying the logs first)."""
        for name in PROCESSES:
            self.stop_process(name, signal.SIGTERM)
        if keep_logs is not None:
            keep_logs.mkdir(parents=True, exist_ok=True)
            for log in self.logs.values():
                if log.exists():
                    shutil.copy2(log, keep_logs / log.name)
        self.stack.down()
        shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> DemoEnvironment:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- endpoints -------------------------------------------------------------------------

    @property
    def app_url(self) -> str:
        return f"http://127.0.0.1:{self.app_port}"

    @property
    def metrics_urls(self) -> dict[Process, str]:
        """Each process's Prometheus endpoint."""
        return {name: f"http://127.0.0.1:{port}/metrics" for name, port in self.metrics_ports.items()}

    @property
    def edge_url(self) -> str:
        return self.stack.varnish.url

    @property
    def redis_url(self) -> str:
        return self.stack.redis.url

    # -- processes -------------------------------------------------------------------------

    def _argv(self, name: Process) -> list[str]:
        stack = self.stack
        cli = str(Path(sys.executable).with_name("readscale"))
        if name == "app":
            return [
                sys.executable, "-m", "uvicorn", "readscale.demo.app:app_from_env", "--factory",
                "--host", "127.0.0.1", "--port", str(self.app_port), "--workers", str(self.config.workers),
                "--log-level", "warning", "--no-access-log",
            ]  # fmt: skip
        if name == "cdc":
            return [
                cli, "cdc", "run", "--dsn", stack.primary.dsn, "--rules", str(self.base / "cdc-rules.toml"),
                "--redis-url", stack.redis.url, "--slot", CDC_SLOT, "--purge-varnish", stack.varnish.url,
                "--metrics-port", str(self.metrics_ports["cdc"]),
            ]  # fmt: skip
        return [
            cli, "writebehind", "run", "--redis-url", stack.redis.url, "--dsn", stack.primary.dsn,
            "--table", "product_views", "--key-column", "key", "--version-column", "version",
            "--value-column", "value", "--queue", WRITE_BEHIND_QUEUE,
            "--metrics-port", str(self.metrics_ports["flusher"]),
        ]  # fmt: skip

    def start_process(self, name: Process) -> None:
        """Start one of the environment's processes (again, after a kill)."""
        proc = self._procs.get(name)
        if proc is not None and proc.poll() is None:
            raise StackError(f"the demo's {name} process is already running")
        log = self.logs[name]
        with open(log, "ab") as out:  # the child keeps its own copy of the descriptor
            self._procs[name] = subprocess.Popen(
                self._argv(name),
                env={**os.environ, **self._env},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        if name == "app":
            self.wait_http(f"{self.app_url}/healthz", 30)

    def restart_app(self, layers: str) -> None:
        """Start the service again using only ``layers`` below HTTP (``READSCALE_DEMO_LAYERS``,
        e.g. ``""`` for primary only, ``"replicas,cache"`` for all)."""
        self.stop_process("app", signal.SIGTERM)
        self._env["READSCALE_DEMO_LAYERS"] = layers
        self.start_process("app")
        # The edge's health probe marked the service sick while it was down.
        self.wait_http(f"{self.edge_url}/healthz", 30)

    def pid(self, name: Process) -> int | None:
        """The process id of a running process of the environment (its group's leader)."""
        proc = self._procs.get(name)
        return proc.pid if proc is not None and proc.poll() is None else None

    def stop_process(self, name: Process, sig: signal.Signals = signal.SIGKILL) -> None:
        """Signal a process's whole group and wait for it (SIGKILL after 10 s)."""
        proc = self._procs.get(name)
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)

    def exit_code(self, name: Process) -> int | None:
        """The exit code of a process of the environment that has ended (None: running,
        or never started)."""
        proc = self._procs.get(name)
        return None if proc is None else proc.poll()

    def wait_metrics(self, name: Process, timeout: float) -> None:
        """Wait until process ``name`` serves its metrics; StackError with its log if it
        exits first or does not answer within ``timeout`` seconds."""
        url = self.metrics_urls[name]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            code = self.exit_code(name)
            if code is not None:
                log = self.logs[name]
                raise StackError(f"the demo's {name} exited ({code}) at start; log {log}:\n{log.read_text()[-2000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url, timeout=1.0).status_code == 200:
                    return
            time.sleep(0.1)
        raise StackError(f"the demo's {name} did not serve {url} within {timeout:.0f}s")

    def wait_http(self, url: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        app = self._procs.get("app")
        while time.monotonic() < deadline:
            if app is not None and app.poll() is not None:
                log = self.logs["app"]
                raise StackError(f"the demo service exited ({app.returncode}); log {log}:\n{log.read_text()[-2000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url, timeout=1.0).status_code == 200:
                    return
            time.sleep(0.1)
        raise StackError(f"{url} did not answer within {timeout:.0f}s")

    def static_urls(self) -> tuple[str, ...]:
        from readscale.http import AssetManifest

        manifest = AssetManifest.build(self.static_dir)
        return tuple(sorted(manifest.url(name) for name in ("app.css", "app.js")))
