"""One server process of the local stack: its persisted description and its life cycle.

A node's whole description is a plain dict (``NodeSpec``) written to the stack's state
file after every change, so another shell (``readscale stack status`` / ``down``) can
find and stop it. The command line is rebuilt from the spec on every start, so a start
that lost a race for its port can move to another one.
"""

from __future__ import annotations

import signal
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from readscale.errors import StackError
from readscale.stack import _proc
from readscale.stack._proc import ServerUser

_START_ATTEMPTS = 5


@dataclass
class NodeSpec:
    name: str
    kind: str
    port: int
    dir: str
    log: str
    pid: int | None = None
    started: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NodeSpec:
        return cls(**data)


class Node:
    """A server the stack launched. Subclasses give the command line and readiness probe."""

    kind: ClassVar[str] = "node"
    stop_signal: ClassVar[signal.Signals] = signal.SIGTERM
    start_timeout: ClassVar[float] = 30.0
    runs_as_server_user: ClassVar[bool] = False

    def __init__(self, spec: NodeSpec, user: ServerUser | None = None) -> None:
        self.spec = spec
        self.user = user
        self._popen: subprocess.Popen[bytes] | None = None
        self.on_change: list[Any] = []

    # -- what subclasses provide -------------------------------------------------------

    def argv(self) -> list[str]:
        raise NotImplementedError

    def probe(self) -> bool:
        """True once the server answers. Called only after its port LISTENs."""
        return True

    def endpoint(self) -> dict[str, Any]:
        return {"name": self.name, "port": self.port}

    # -- properties ----------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def port(self) -> int:
        return self.spec.port

    @property
    def dir(self) -> Path:
        return Path(self.spec.dir)

    @property
    def log(self) -> Path:
        return Path(self.spec.log)

    @property
    def pid(self) -> int | None:
        return self.spec.pid

    def _launch_user(self) -> ServerUser | None:
        return self.user if self.runs_as_server_user else None

    # -- life cycle ----------------------------------------------------------------------

    def is_running(self) -> bool:
        return _proc.alive(self.spec.pid, self.spec.started)

    def is_ready(self) -> bool:
        return self.is_running() and _proc.is_listening(self.port) and self.probe()

    def start(self, *, timeout: float | None = None, may_move: bool = False) -> None:
        """Start the server and return once it answers.

        ``may_move`` lets a first start pick another port when it lost its port to
        another process between the check and the bind (EADDRINUSE).
        """
        if self.is_running():
            return
        for attempt in range(_START_ATTEMPTS):
            if _proc.is_listening(self.port):
                if not may_move:
                    raise StackError(f"{self.name}: port {self.port} is already in use by another process")
                self._move()
                continue
            try:
                self._start_once(timeout or self.start_timeout)
                return
            except _PortLost:
                if not may_move or attempt == _START_ATTEMPTS - 1:
                    raise StackError(f"{self.name}: port {self.port} was taken by another process") from None
                self._move()
        raise StackError(f"{self.name}: could not start after {_START_ATTEMPTS} attempts")

    def _move(self) -> None:
        exclude = {self.port, *self.reserved_ports()}
        (port,) = _proc.pick_ports(1, exclude=exclude)
        self.spec.port = port
        self.ports_changed()

    def reserved_ports(self) -> set[int]:
        return set()

    def ports_changed(self) -> None:
        """Hook for nodes with a second port derived from the first."""

    def _start_once(self, timeout: float) -> None:
        self.before_start()
        popen = _proc.launch(self.argv(), log=self.log, cwd=self.dir, user=self._launch_user())
        self._popen = popen
        self.spec.pid = popen.pid
        # The start time identifies the process even if its pid is later recycled.
        for _ in range(100):
            self.spec.started = _proc.start_time(popen.pid)
            if self.spec.started is not None or popen.poll() is not None:
                break
            time.sleep(0.001)
        self._changed()

        def aborted() -> str | None:
            if popen.poll() is not None:
                if _proc.address_in_use(self.log):
                    raise _PortLost
                return f"exited with code {popen.returncode}; log {self.log}:\n{_proc.log_tail(self.log)}"
            return None

        try:
            _proc.wait_until(
                lambda: _proc.is_listening(self.port) and self.probe(),
                timeout=timeout,
                what=f"{self.name} to answer on port {self.port}",
                abort=aborted,
            )
        except BaseException:
            self.kill()
            raise

    def before_start(self) -> None:
        """Hook run before each launch (write a config file, clear a stale pid file)."""

    def stop(self, *, grace: float = 30.0) -> None:
        """A clean shutdown; the group is killed if the server does not exit in ``grace``."""
        if self.spec.pid:
            self.thaw()
            _proc.terminate(
                self.spec.pid,
                self.spec.started,
                sig=self.stop_signal,
                grace=grace,
                popen=self._popen,
            )
        self._forget()

    def kill(self) -> None:
        """SIGKILL the server and its children: a crash, as far as clients can tell."""
        if self.spec.pid:
            _proc.kill(self.spec.pid, self.spec.started, popen=self._popen)
        self._forget()

    def freeze(self) -> None:
        """SIGSTOP the server: it keeps its connections but answers nothing (a hung server)."""
        if self.spec.pid:
            _proc.signal_group(self.spec.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        """SIGCONT a frozen server."""
        if self.spec.pid:
            _proc.signal_group(self.spec.pid, signal.SIGCONT)

    def restart(self) -> None:
        self.stop()
        self.start()

    def _forget(self) -> None:
        self.spec.pid = None
        self.spec.started = None
        self._popen = None
        self._changed()

    def _changed(self) -> None:
        for callback in self.on_change:
            callback()

    def status(self) -> dict[str, Any]:
        running = self.is_running()
        return {
            **self.endpoint(),
            "kind": self.kind,
            "pid": self.spec.pid if running else None,
            "running": running,
            "ready": running and _proc.is_listening(self.port) and self.probe(),
        }


class _PortLost(Exception):
    """The server exited because another process took its port first."""
