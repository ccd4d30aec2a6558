"""Small helpers for tests that need a throwaway HTTP origin or a CLI run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

READSCALE = str(Path(sys.executable).with_name("readscale"))


def cli(
    *args: str, env: dict[str, str] | None = None, check: bool = True, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [READSCALE, *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=timeout,
        check=False,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"readscale {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def cli_json(*args: str, env: dict[str, str] | None = None) -> Any:
    return json.loads(cli(*args, "--json", env=env).stdout)


class Origin:
    """A counting HTTP origin: every path answers with the Cache-Control given for it."""

    def __init__(self) -> None:
        self.hits: Counter[str] = Counter()
        self.cache_control: dict[str, str] = {}
        origin = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                origin.hits[self.path] += 1
                body = f"{self.path} #{origin.hits[self.path]}".encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                cc = origin.cache_control.get(self.path)
                if cc:
                    self.send_header("Cache-Control", cc)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"

    @contextmanager
    def running(self) -> Iterator[Origin]:
        thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self.server.shutdown()
            self.server.server_close()


def processes_mentioning(text: str) -> list[str]:
    """Live processes whose command line mentions ``text`` (a stack folder) or whose
    working directory lies under it (PostgreSQL backends rename themselves but keep the
    data folder as their working directory)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            raw = Path(f"/proc/{entry}/cmdline").read_bytes()
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        cmd = raw.replace(b"\0", b" ").decode(errors="replace")
        try:
            cwd = os.readlink(f"/proc/{entry}/cwd")
        except OSError:
            cwd = ""
        if (text in cmd or cwd.startswith(text)) and state not in ("Z", "X"):
            found.append(f"{entry}: {cmd}")
    return found
