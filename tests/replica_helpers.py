"""Helpers shared by the replica tests (async, generated sync, and integrations)."""

from __future__ import annotations

import collections
import contextlib
import itertools
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg

from readscale import ReplicaSettings
from readscale.stack import Stack


def router_settings(stack: Stack, **overrides: Any) -> ReplicaSettings:
    """Settings for a router over ``stack``'s primary and replicas (named r1, r2, ...)."""
    base: dict[str, Any] = {
        "primary": stack.primary.dsn,
        "replicas": {replica.name: replica.dsn for replica in stack.replicas},
        "seed": 1,
        "max_pool_size": 10,
    }
    return ReplicaSettings(**{**base, **overrides})


def wait_until(predicate: Callable[[], bool], *, timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"{what} not reached within {timeout} s"
        time.sleep(0.02)


def restore_replicas(stack: Stack) -> None:
    """Undo replay pauses and apply delays on every replica and wait until they caught up."""
    for replica in stack.replicas:
        if not replica.is_running():
            replica.start()
        if replica.is_replay_paused():
            replica.resume_replay()
        replica.set_apply_delay(0)
    for replica in stack.replicas:
        wait_until(lambda r=replica: stack.replay_lag_bytes(r.name) == 0, what=f"{replica.name} to catch up")


# -- monotonic reads: a read whose statement sees more than its guard --------------------
#
# The scenario of issue 12 (defect 1): r2 replays DELAY seconds late while a writer bumps
# a counter; a session's first read is guarded on r1, but its statement takes its
# snapshot LATE seconds later (a slow statement, a long read() block, an ORM that runs
# its query after routing); GAP seconds after it ended (r2 has by then replayed past the
# guard, not past what the statement saw), the session reads again. If the token only
# holds the guard's position, that second read may be routed to r2 and go back in time.

MONOTONIC_TABLE = "monotonic_probe"
DELAY = 0.5  # r2's apply delay
LATE = 0.3  # the first read's snapshot is taken this long after its guard
GAP = 0.3  # the second read starts this long after the first one ended
# A statement whose snapshot is taken LATE seconds after it starts: a VOLATILE function
# runs each query with a new snapshot under READ COMMITTED.
LATE_READ_FUNCTION = "rs_late_read"
MONOTONIC_SETUP = [
    f"CREATE TABLE IF NOT EXISTS {MONOTONIC_TABLE} (id int PRIMARY KEY, n bigint NOT NULL)",
    f"INSERT INTO {MONOTONIC_TABLE} VALUES (0, 0) ON CONFLICT (id) DO UPDATE SET n = 0",
    f"""CREATE OR REPLACE FUNCTION {LATE_READ_FUNCTION}(delay float8) RETURNS bigint
        LANGUAGE plpgsql VOLATILE AS $$
        BEGIN
            PERFORM pg_sleep(delay);
            RETURN (SELECT n FROM {MONOTONIC_TABLE} WHERE id = 0);
        END $$""",
]
READ_SQL = f"SELECT n, inet_server_port() FROM {MONOTONIC_TABLE} WHERE id = 0"
LATE_READ_SQL = f"SELECT {LATE_READ_FUNCTION}(%s), inet_server_port()"


@dataclass(frozen=True)
class Targets:
    """Where the scenario writes and checks: the primary, r2, and every node's port."""

    primary_dsn: str
    r2_dsn: str
    ports: dict[int, str]

    @classmethod
    def of(cls, stack: Stack) -> Targets:
        nodes = [stack.primary, *stack.replicas]
        return cls(stack.primary.dsn, stack.replica("r2").dsn, {node.port: node.name for node in nodes})

    @classmethod
    def from_ports(cls, ports: dict[str, int]) -> Targets:
        """From alias -> port (``default`` is the primary), as the Django runner gets them."""
        dsn = "postgresql://postgres@127.0.0.1:{}/postgres".format
        names = {port: "primary" if alias == "default" else alias for alias, port in ports.items()}
        return cls(dsn(ports["default"]), dsn(ports["r2"]), names)


def prepare_monotonic(stack: Stack) -> None:
    """The counter and the late-read function on the primary, replayed everywhere."""
    with psycopg.connect(stack.primary.dsn, autocommit=True) as conn:
        for statement in MONOTONIC_SETUP:
            conn.execute(statement)
    restore_replicas(stack)


@dataclass
class MonotonicHistory:
    """Every read of every session, in order: (session, step, value, node); and, for each
    first read, what r2 showed when the second read started (the control)."""

    ports: dict[int, str]
    reads: list[tuple[int, int, int, str]] = field(default_factory=list)
    controls: list[tuple[int, int]] = field(default_factory=list)  # (first read's value, r2's value)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def of(cls, where: Stack | Targets) -> MonotonicHistory:
        targets = where if isinstance(where, Targets) else Targets.of(where)
        return cls(dict(targets.ports))

    def record(self, session: int, step: int, value: Any, port: Any) -> None:
        with self.lock:
            self.reads.append((session, step, int(value), self.ports.get(int(port), f"port {port}")))

    def control(self, first: int, r2_value: Any) -> None:
        with self.lock:
            self.controls.append((first, int(r2_value)))

    def go_backs(self) -> list[tuple[tuple[int, int, int, str], tuple[int, int, int, str]]]:
        """Consecutive reads of one session where the later saw an older counter."""
        out = []
        for session in {r[0] for r in self.reads}:
            mine = sorted((r for r in self.reads if r[0] == session), key=lambda r: r[1])
            out += [(a, b) for a, b in itertools.pairwise(mine) if b[2] < a[2]]
        return out

    def would_go_back(self) -> int:
        """First reads that r2 was behind when the second read started: where a second
        read routed to r2 would have gone back (the scenario provoked the bug)."""
        return sum(1 for first, r2 in self.controls if r2 < first)

    def summary(self) -> str:
        pairs = collections.Counter(
            f"{a[3]}->{b[3]}" for a, b in itertools.pairwise(sorted(self.reads)) if a[0] == b[0]
        )
        return (
            f"{len(self.reads)} reads, {len(self.go_backs())} went back, "
            f"{self.would_go_back()} of {len(self.controls)} would on r2; routes {dict(pairs)}"
        )


@contextlib.contextmanager
def steady_writes(where: Stack | Targets, interval: float = 0.01) -> Iterator[None]:
    """A writer bumping the counter every ``interval`` seconds on its own thread."""
    stop = threading.Event()
    dsn = where.primary_dsn if isinstance(where, Targets) else where.primary.dsn

    def run() -> None:
        with psycopg.connect(dsn, autocommit=True) as conn:
            while not stop.is_set():
                conn.execute(f"UPDATE {MONOTONIC_TABLE} SET n = n + 1 WHERE id = 0")
                stop.wait(interval)

    writer = threading.Thread(target=run, name="steady-writes")
    writer.start()
    try:
        yield
    finally:
        stop.set()
        writer.join()


@contextlib.contextmanager
def r2_delayed(stack: Stack) -> Iterator[None]:
    """r2 replays DELAY seconds late for the block; both replicas caught up afterwards."""
    restore_replicas(stack)
    stack.set_apply_delay("r2", DELAY)
    try:
        yield
    finally:
        restore_replicas(stack)


def monotonic_sessions_in_threads(
    where: Stack | Targets,
    first: Callable[[int], tuple[Any, Any]],
    second: Callable[[int], tuple[Any, Any]],
    *,
    sessions: int = 12,
    pairs: int = 4,
    scope: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext,
) -> MonotonicHistory:
    """``sessions`` threads, each running ``pairs`` times: ``first(i)`` (a late read), a
    pause of GAP seconds with a control read of r2, then ``second(i)``; each thread runs
    inside ``scope()`` (e.g. its own causal context). Both return (value, server port)."""
    targets = where if isinstance(where, Targets) else Targets.of(where)
    history = MonotonicHistory.of(targets)

    def session(i: int) -> None:
        with psycopg.connect(targets.r2_dsn, autocommit=True) as control, scope():
            for pair in range(pairs):
                value, port = first(i)
                history.record(i, 2 * pair, value, port)
                time.sleep(GAP)
                seen = control.execute(READ_SQL).fetchone()
                assert seen is not None
                history.control(int(value), seen[0])
                value, port = second(i)
                history.record(i, 2 * pair + 1, value, port)

    errors: list[BaseException] = []

    def guarded(i: int) -> None:
        try:
            session(i)
        except BaseException as exc:
            errors.append(exc)

    with steady_writes(targets):
        threads = [threading.Thread(target=guarded, args=(i,)) for i in range(sessions)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    if errors:
        raise errors[0]
    return history
