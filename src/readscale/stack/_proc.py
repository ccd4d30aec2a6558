"""Processes, ports and binaries for the local stack.

Invariants:
- Every server is launched in its own session (``start_new_session``), so a Ctrl-C in
  the terminal never reaches it and the stack alone decides when it stops; its process
  group id equals its pid, so a stop or kill can reach the server's children too
  (PostgreSQL backends, Varnish's cacher process).
- A process is identified by (pid, start time). A recycled pid is never signalled.
- Ports come from below Linux's ephemeral range (32768 and up): ports inside it were
  taken by outgoing connections in tests here. A port is used only if nothing LISTENs on
  it and a bind succeeds; readiness is detected from the LISTEN table, never by
  connect() polling (which can self-connect and steal the port).
- A port is handed out once per process (the last ``_RECENT_PICKS`` picks are never
  picked again): a port picked for a process not started yet (the demo's CDC worker and
  flusher serve metrics on theirs) is not listening, so without this a server started
  meanwhile could be given it, and the later process would die on EADDRINUSE.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import os
import pwd
import random
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from readscale.errors import MissingBinaryError, StackError

# Binary -> the Debian package that provides it.
PACKAGES: dict[str, str] = {
    "initdb": "postgresql-15",
    "postgres": "postgresql-15",
    "pg_basebackup": "postgresql-15",
    "pg_isready": "postgresql-client-15",
    "psql": "postgresql-client-15",
    "redis-server": "redis-server",
    "redis-cli": "redis-tools",
    "memcached": "memcached",
    "varnishd": "varnish",
    "varnishadm": "varnish",
    "varnishstat": "varnish",
}

PORT_RANGE = (20000, 32000)
#: How many of this process's latest picks are never picked again (a sixth of the range).
_RECENT_PICKS = 2000
_recent: deque[int] = deque(maxlen=_RECENT_PICKS)
_recent_lock = threading.Lock()
_PG_BINARIES = frozenset({"initdb", "postgres", "pg_basebackup", "pg_isready", "psql"})


def find_binary(name: str) -> str:
    """Return the path of a server binary, or raise :class:`MissingBinaryError`.

    PostgreSQL's server binaries are not on PATH on Debian, so for them the search
    continues in ``$READSCALE_PG_BINDIR`` (when set, it is the only place searched), then
    PATH, then the newest ``/usr/lib/postgresql/*/bin``.
    """
    package = PACKAGES.get(name, name)
    if name in _PG_BINARIES:
        bindir = os.environ.get("READSCALE_PG_BINDIR")
        if bindir:
            candidate = Path(bindir) / name
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return str(candidate)
            raise MissingBinaryError(name, package)
    found = shutil.which(name)
    if found:
        return found
    if name in _PG_BINARIES:
        for bindir in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version_key, reverse=True):
            candidate = Path(bindir) / name
            if candidate.is_file():
                return str(candidate)
    raise MissingBinaryError(name, package)


def _version_key(path: str) -> tuple[int, ...]:
    part = Path(path).parent.name
    return tuple(int(x) for x in part.split(".") if x.isdigit())


# -- ports -------------------------------------------------------------------------------


def listening_ports() -> set[int]:
    """Ports in LISTEN state on any address, read from /proc (no connect, no side effect)."""
    ports: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table, encoding="ascii") as fh:
                next(fh, None)
                for line in fh:
                    fields = line.split()
                    if len(fields) > 3 and fields[3] == "0A":
                        ports.add(int(fields[1].rsplit(":", 1)[1], 16))
        except FileNotFoundError:
            continue
    return ports


def is_listening(port: int) -> bool:
    return port in listening_ports()


def pick_ports(count: int, *, exclude: Iterable[int] = (), rng: random.Random | None = None) -> list[int]:
    """Pick ``count`` distinct free loopback ports below the ephemeral range, none of
    them handed out by a recent call in this process (see the module docstring)."""
    rng = rng or random.SystemRandom()
    taken = listening_ports() | set(exclude)
    chosen: list[int] = []
    with _recent_lock:
        taken |= set(_recent)
        for _ in range(count * 200):
            if len(chosen) == count:
                break
            port = rng.randrange(*PORT_RANGE)
            if port in taken or port in chosen or _bind_fails(port):
                continue
            chosen.append(port)
        if len(chosen) < count:
            raise StackError(f"could not find {count} free ports in {PORT_RANGE[0]}-{PORT_RANGE[1]}")
        _recent.extend(chosen)
    return chosen


def _bind_fails(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as exc:
            return exc.errno == errno.EADDRINUSE
    return False


# -- processes -------------------------------------------------------------------------


@dataclass(frozen=True)
class ServerUser:
    """The account servers run as: the caller, or an unprivileged one when the caller is root."""

    name: str
    uid: int
    gid: int

    @property
    def is_current(self) -> bool:
        return self.uid == os.geteuid()


def server_user() -> ServerUser:
    """PostgreSQL refuses to run as root, so root runs servers as an unprivileged account.

    ``$READSCALE_STACK_USER`` picks it; otherwise ``postgres`` if it exists, else ``nobody``.
    """
    if os.geteuid() != 0:
        entry = pwd.getpwuid(os.geteuid())
        return ServerUser(entry.pw_name, entry.pw_uid, entry.pw_gid)
    wanted = os.environ.get("READSCALE_STACK_USER")
    for name in [wanted] if wanted else ["postgres", "nobody"]:
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        return ServerUser(entry.pw_name, entry.pw_uid, entry.pw_gid)
    raise StackError(
        f"running as root, but no unprivileged account {wanted or 'postgres or nobody'} exists "
        "to run PostgreSQL; set READSCALE_STACK_USER"
    )


@dataclass(frozen=True)
class _Demotion:
    """The Popen arguments that run a child as ``user`` (all None: run as ourselves)."""

    user: int | None
    group: int | None
    extra_groups: list[int] | None


def _demotion(user: ServerUser | None) -> _Demotion:
    if user is None or user.is_current:
        return _Demotion(None, None, None)
    return _Demotion(user.uid, user.gid, [])


def chown_tree(path: Path, user: ServerUser) -> None:
    if user.is_current:
        return
    for root, dirs, files in os.walk(path):
        os.chown(root, user.uid, user.gid)
        for name in dirs + files:
            os.chown(os.path.join(root, name), user.uid, user.gid, follow_symlinks=False)


def run(
    argv: Sequence[str],
    *,
    user: ServerUser | None = None,
    cwd: Path | None = None,
    timeout: float = 60.0,
    input_text: str | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run a short helper command (initdb, psql, redis-cli) and return its output."""
    demote = _demotion(user)
    try:
        proc = subprocess.run(
            list(argv),
            cwd=cwd,
            input=input_text,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            stdin=None if input_text is not None else subprocess.DEVNULL,
            user=demote.user,
            group=demote.group,
            extra_groups=demote.extra_groups,
        )
    except subprocess.TimeoutExpired as exc:
        raise StackError(f"{Path(argv[0]).name} timed out after {timeout:.0f}s: {' '.join(argv)}") from exc
    if check and proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip()[-2000:]
        raise StackError(f"{Path(argv[0]).name} failed (exit {proc.returncode}): {detail}")
    return proc


def launch(argv: Sequence[str], *, log: Path, cwd: Path, user: ServerUser | None) -> subprocess.Popen[bytes]:
    """Start a server in its own session with output appended to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    demote = _demotion(user)
    with open(log, "ab") as out:
        if user is not None and not user.is_current:
            os.chown(log, user.uid, user.gid)
        return subprocess.Popen(
            list(argv),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
            user=demote.user,
            group=demote.group,
            extra_groups=demote.extra_groups,
        )


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot, or None if it is gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            data = fh.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name may contain spaces and parentheses: split after the last ')'.
    rest = data[data.rindex(")") + 2 :].split()
    state = rest[0]
    if state in ("Z", "X"):
        return None
    return int(rest[19])


def alive(pid: int | None, started: int | None) -> bool:
    if not pid:
        return False
    now = start_time(pid)
    return now is not None and (started is None or now == started)


def _reap(popen: subprocess.Popen[bytes] | None) -> None:
    if popen is not None:
        with contextlib.suppress(ChildProcessError):
            popen.poll()


def _reap_dead(popen: subprocess.Popen[bytes] | None) -> None:
    """Collect the exit status of a child we know is gone (a poll can miss it while
    another thread holds Popen's wait lock, and an unreaped Popen warns when deleted)."""
    if popen is not None and popen.returncode is None:
        with contextlib.suppress(ChildProcessError, subprocess.TimeoutExpired):
            popen.wait(timeout=5)


def signal_group(pid: int, sig: signal.Signals) -> None:
    """Signal the server's whole process group (its pgid equals its pid)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def wait_gone(
    pid: int,
    started: int | None,
    timeout: float,
    popen: subprocess.Popen[bytes] | None = None,
) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _reap(popen)
        if not alive(pid, started):
            return True
        time.sleep(0.01)
    _reap(popen)
    return not alive(pid, started)


def group_members(pgid: int) -> list[int]:
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as fh:
                data = fh.read()
        except OSError:
            continue
        rest = data[data.rindex(")") + 2 :].split()
        if rest[0] not in ("Z", "X") and int(rest[2]) == pgid:
            members.append(int(entry))
    return members


def terminate(
    pid: int,
    started: int | None,
    *,
    sig: signal.Signals = signal.SIGTERM,
    grace: float = 30.0,
    popen: subprocess.Popen[bytes] | None = None,
) -> None:
    """Stop a server: ``sig`` to its leader, then SIGKILL to its group after ``grace``.

    Returns only when no member of the group is left, so nothing outlives ``down``.
    """
    if alive(pid, started):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)
        if not wait_gone(pid, started, grace, popen):
            signal_group(pid, signal.SIGKILL)
            wait_gone(pid, started, 5.0, popen)
    # Children left behind by a leader that died (a crashed postmaster's backends).
    leftovers = group_members(pid)
    if leftovers:
        signal_group(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5.0
        while group_members(pid) and time.monotonic() < deadline:
            time.sleep(0.01)
    _reap_dead(popen)


def kill(pid: int, started: int | None, popen: subprocess.Popen[bytes] | None = None) -> None:
    """SIGKILL the whole group at once: a crash, as far as the server can tell."""
    if alive(pid, started) or group_members(pid):
        signal_group(pid, signal.SIGKILL)
        wait_gone(pid, started, 5.0, popen)
        deadline = time.monotonic() + 5.0
        while group_members(pid) and time.monotonic() < deadline:
            time.sleep(0.01)
    _reap_dead(popen)


def wait_until(
    predicate: Callable[[], bool],
    *,
    timeout: float,
    what: str,
    interval: float = 0.02,
    abort: Callable[[], str | None] | None = None,
) -> None:
    """Poll ``predicate`` until true; ``abort`` may return a reason to give up at once."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return
        if abort is not None:
            reason = abort()
            if reason:
                raise StackError(f"{what}: {reason}")
        if time.monotonic() > deadline:
            raise StackError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return "(no log)"
    return "\n".join(text.strip().splitlines()[-lines:])


def address_in_use(log: Path) -> bool:
    try:
        text = log.read_text(errors="replace")
    except FileNotFoundError:
        return False
    return "in use" in text.lower()
