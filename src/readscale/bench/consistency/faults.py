"""The servers a consistency run drives: the stack it needs, the faults injected at
their scheduled times (replica apply delays, paused replay, killed replicas, the bus or
the cache's server down), and everything undone after."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any

from readscale.bench.consistency.scenario import Fault
from readscale.stack import Stack

__all__ = ["BUS_NODE", "L2_NODE", "apply_fault", "ensure_backend", "prepare_stack", "restore"]

L2_NODE = "consistency-redis"
BUS_NODE = "consistency-bus"


def prepare_stack(stack: Stack) -> None:
    """Make sure the stack has what the harness drives: a primary with two replicas, the
    cache's Redis and a second Redis for a separate bus (both without persistence)."""
    if "primary" not in stack.nodes or len(stack.replicas) < 2:
        raise RuntimeError("the consistency harness needs a stack with a primary and two replicas")
    stack.start_redis(name=L2_NODE)
    stack.start_redis(name=BUS_NODE)


def ensure_backend(stack: Stack, backend: str) -> None:
    """Start the scenario's cache server if the stack lacks it (once per stack)."""
    if backend == "memcached" and "memcached" not in stack.nodes:
        stack.start_memcached()
    elif backend == "cluster" and not any(name.startswith("cluster") for name in stack.nodes):
        stack.start_cluster()


def restore(stack: Stack) -> None:
    """Undo every fault: replicas running, replaying, without delay, caught up; both
    Redis servers running."""
    for name in (L2_NODE, BUS_NODE, "memcached"):
        if name not in stack.nodes:
            continue
        node = stack.node(name)
        node.thaw()
        if not node.is_running():
            _start(stack, name)
    for replica in stack.replicas:
        if not replica.is_running():
            _start(stack, replica.name)
        _retried(functools.partial(_resume, replica))
        _retried(functools.partial(replica.set_apply_delay, 0))
    deadline = time.monotonic() + 60
    for replica in stack.replicas:
        while stack.replay_lag_bytes(replica.name) != 0:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{replica.name} did not catch up within 60 s")
            time.sleep(0.05)


def _resume(replica: Any) -> None:
    if replica.is_replay_paused():
        replica.resume_replay()


def _retried(action: Callable[[], object], *, within: float = 30.0) -> None:
    """A statement on a replica that is still starting up (after a kill) is retried."""
    deadline = time.monotonic() + within
    while True:
        try:
            action()
            return
        except Exception as exc:
            if "starting up" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _start(stack: Stack, name: str, *, within: float = 20.0) -> None:
    """Start a killed node again, as an operator would: retried while the dead one's
    children still hold its lock file or port."""
    deadline = time.monotonic() + within
    while True:
        try:
            stack.start(name)
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def apply_fault(stack: Stack, fault: Fault, bus: str, backend: str) -> None:
    match fault.action:
        case "delay":
            stack.set_apply_delay(fault.target, fault.value)
        case "pause":
            stack.pause_replay(fault.target)
        case "resume":
            stack.resume_replay(fault.target)
        case "kill":
            stack.kill(fault.target)
        case "start":
            _start(stack, fault.target)
        case "bus_kill":
            if bus == "separate":
                stack.kill(BUS_NODE)
            else:  # the bus shares the cache's Redis: cut every subscription instead
                import redis

                client = redis.Redis.from_url(stack.node(L2_NODE).url)  # type: ignore[attr-defined]
                try:
                    client.client_kill_filter(_type="pubsub")
                finally:
                    client.close()
        case "bus_start":
            if bus == "separate":
                _start(stack, BUS_NODE)
        case "redis_kill":  # the cache's server dies (and comes back empty: no persistence)
            if backend != "cluster":  # a cluster fails over instead: not this fault
                stack.kill(L2_NODE if backend == "redis" else "memcached")
        case "redis_start":
            if backend != "cluster":
                _start(stack, L2_NODE if backend == "redis" else "memcached")
        case _:
            raise ValueError(f"unknown fault {fault.action!r}")
