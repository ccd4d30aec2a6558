"""An ASGI app under uvicorn in a subprocess, on a free loopback port.

Used by the HTTP test fixtures and by ``readscale bench http``; it imports no pytest.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from readscale.errors import StackError
from readscale.stack import _proc


class AppServer:
    """One uvicorn process serving ``app`` (an import string) on 127.0.0.1."""

    def __init__(
        self,
        app: str,
        *,
        app_dir: str | Path | None = None,
        env: dict[str, str] | None = None,
        http: str = "h11",
        loop: str = "asyncio",
        log: Path | None = None,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.app = app
        self.app_dir = str(app_dir or Path.cwd())
        self.env = env or {}
        self.http = http
        self.loop = loop
        self.extra_args = extra_args
        self.log = log or Path(os.devnull)
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def argv(self) -> list[str]:
        return [
            sys.executable, "-m", "uvicorn", self.app,
            "--host", "127.0.0.1", "--port", str(self.port),
            "--app-dir", self.app_dir,
            "--http", self.http, "--loop", self.loop,
            "--log-level", "warning", "--no-access-log", "--lifespan", "off",
            *self.extra_args,
        ]  # fmt: skip

    def start(self, *, timeout: float = 20.0) -> AppServer:
        """Start (or restart, on a fresh port if the old one is gone) and wait for LISTEN."""
        for _ in range(3):
            if not self.port or _proc.is_listening(self.port):
                (self.port,) = _proc.pick_ports(1)
            env = {**os.environ, "PYTHONPATH": os.pathsep.join([self.app_dir, os.environ.get("PYTHONPATH", "")])}
            env.update(self.env)
            with open(self.log, "ab") as out:
                self.process = subprocess.Popen(
                    self.argv(), stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
                )
            process = self.process
            try:
                _proc.wait_until(
                    lambda: _proc.is_listening(self.port),
                    timeout=timeout,
                    what=f"uvicorn {self.app} on port {self.port}",
                    abort=lambda p=process: None if p.poll() is None else f"exited with {p.returncode}",  # type: ignore[misc]
                )
                return self
            except StackError:
                self.stop()
                self.port = 0
        raise StackError(f"uvicorn {self.app} did not start (see {self.log})")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 5 s; waits for the process."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)

    def restart(self) -> AppServer:
        """Start again on the same port (the edge's backend address stays valid)."""
        self.stop()
        port = self.port
        _proc.wait_until(lambda: not _proc.is_listening(port), timeout=10, what=f"port {port} to close")
        return self.start()

    def __enter__(self) -> AppServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
