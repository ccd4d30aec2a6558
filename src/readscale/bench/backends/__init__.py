"""``readscale bench backends``: Redis, Redis Cluster or Memcached, in numbers.

The same workload against each server, from the same compiled load generator
(``rsload.c``): throughput and p99 as the number of clients grows (Redis on its one
command thread, Redis with two I/O threads, a three-primary Redis Cluster, Memcached with
one and with four worker threads); memory per item at 100 B, 1 KB and 10 KB values, from
each server's own statistics (Redis ``used_memory``, Memcached ``total_malloced``); and
what each keeps through a restart and through the loss of a node. The docs' backend
guide (docs/guides/backends.md) states the choice from these figures.

Load generator and servers share this machine's cores: with 2 cores, throughput at high
concurrency is what one machine does, not what each server would do on its own.
"""

from __future__ import annotations

import socket
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from redis import Redis

from readscale.bench.backends.loadgen import Target, binary, load
from readscale.bench.backends.loadgen import run as run_load
from readscale.bench.harness import BenchReport
from readscale.stack import Stack

CONCURRENCY = (1, 4, 16, 64)
SIZES = (100, 1_000, 10_000)


def _memcached_stat(port: int, group: str, name: str) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"stats {group}\r\n".encode() if group else b"stats\r\n")
        data = b""
        while not data.endswith(b"END\r\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    for line in data.decode().splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] == name:
            return int(parts[2])
    raise RuntimeError(f"memcached on {port} has no stat {name!r}")


def _cluster_primaries(stack: Stack) -> tuple[list[int], list[tuple[int, int, int]]]:
    """The ports of the cluster's primaries and its slot map (as rsload takes it)."""
    return _cluster_primaries_from(stack.cluster_nodes[0].port)


def _used_memory(ports: list[int]) -> int:
    total = 0
    for port in ports:
        with Redis(port=port) as client:
            total += int(client.info("memory")["used_memory"])
    return total


def _flush(ports: list[int]) -> None:
    for port in ports:
        with Redis(port=port) as client:
            client.flushall()


def _dbsize(ports: list[int]) -> int:
    total = 0
    for port in ports:
        with Redis(port=port) as client:
            total += int(client.dbsize())
    return total


def run(*, rounds: int, quick: bool, progress: Callable[[str], None]) -> BenchReport:
    binary()  # compile first: a missing compiler fails before any server starts
    rounds = 1 if quick else min(rounds, 3)
    levels = (1, 16) if quick else CONCURRENCY
    step_s = 1.0 if quick else 3.0
    items = 20_000 if quick else 1_000_000
    keyspace, value = 100_000, 100
    report = BenchReport(
        "backends",
        params={
            "workload": f"90 % GET / 10 % SET, uniform over {keyspace:,} keys of {value} B, closed-loop clients",
            "step_s": step_s,
            "rounds": rounds,
            "memory_items": items,
            "load_generator": "rsload (C, epoll; compiled on first use), 2 threads, on the same machine",
        },
    )
    root = Path(tempfile.mkdtemp(prefix="readscale-bench-backends-"))
    root.chmod(0o755)
    stack = Stack(root / "stack", progress=progress)
    try:
        _throughput(stack, report, levels, rounds, step_s, keyspace, value, progress)
        _memory(stack, report, items, progress)
        _durability(stack, report, 20_000 if quick else 100_000, progress)
    finally:
        stack.down()
    return report


def _throughput(
    stack: Stack,
    report: BenchReport,
    levels: tuple[int, ...],
    rounds: int,
    step_s: float,
    keyspace: int,
    value: int,
    progress: Callable[[str], None],
) -> None:
    progress("starting Redis (1 and 2 I/O threads), a Redis Cluster and Memcached (1 and 4 threads)")
    redis = stack.start_redis(name="redis")
    redis_io = stack.start_redis(name="redis-io", io_threads=2)
    stack.start_cluster()
    cluster_ports, slots = _cluster_primaries(stack)
    mc1 = stack.start_memcached(name="memcached-t1", threads=1, memory_mb=256)
    mc4 = stack.start_memcached(name="memcached-t4", threads=4, memory_mb=256)
    targets = {
        "redis": Target("resp", (redis.port,)),
        "redis, 2 I/O threads": Target("resp", (redis_io.port,)),
        f"redis cluster, {len(cluster_ports)} primaries": Target("resp", tuple(cluster_ports), tuple(slots)),
        "memcached, 1 thread": Target("meta", (mc1.port,)),
        "memcached, 4 threads": Target("meta", (mc4.port,)),
    }
    for name, target in targets.items():
        progress(f"{name}: writing {keyspace:,} keys")
        load(target, keys=keyspace, size=value)
    for level in levels:
        per: dict[str, list[tuple[float, int]]] = {name: [] for name in targets}
        for r in range(rounds):
            for name, target in targets.items():
                result = run_load(target, conns=level, duration_s=step_s, keys=keyspace, size=value)
                if result.errors or result.misses:
                    raise RuntimeError(f"{name}: {result.errors} errors, {result.misses} misses at {level} clients")
                per[name].append((result.ops_per_s, result.p99_us))
                progress(f"{level} clients, round {r + 1}: {name}: {result.ops_per_s:,.0f} ops/s")
        for name, values in per.items():
            values.sort()
            ops, p99 = values[len(values) // 2]
            report.add(f"{name}: {level} clients: throughput", ops, "ops/s", f"p99 {p99} us; median of {rounds}")
            report.add(f"{name}: {level} clients: p99", p99, "us")


def _memory(stack: Stack, report: BenchReport, items: int, progress: Callable[[str], None]) -> None:
    redis = stack.node("redis")
    for size in SIZES:
        payload = f"{items:,} items of {size:,} B"
        # Asked again for each size: on a loaded machine a primary may have been failed over.
        cluster_ports, slots = _cluster_primaries(stack)
        for name, ports, target in (
            ("redis", [redis.port], Target("resp", (redis.port,))),
            ("redis cluster", cluster_ports, Target("resp", tuple(cluster_ports), tuple(slots))),
        ):
            _flush(ports)
            before = _used_memory(ports)
            progress(f"{name}: memory of {payload}")
            load(target, keys=items, size=size, prefix="m:")
            per_item = (_used_memory(ports) - before) / items
            report.add(f"{name}: memory per item, {size} B values", per_item, "B", f"used_memory, {payload}")
            _flush(ports)
        # A fresh Memcached per size, sized for it and stopped after, so its memory goes back.
        memory_mb = int(items * (size + 200) * 1.5 / 2**20) + 64
        node = stack.start_memcached(name=f"memcached-mem-{size}", threads=2, memory_mb=memory_mb)
        before = _memcached_stat(node.port, "slabs", "total_malloced")
        progress(f"memcached: memory of {payload}")
        load(Target("meta", (node.port,)), keys=items, size=size, prefix="m:")
        stored = _memcached_stat(node.port, "", "curr_items")
        if stored != items:
            raise RuntimeError(f"memcached kept {stored:,} of {items:,} items: -m {memory_mb} is too small")
        per_item = (_memcached_stat(node.port, "slabs", "total_malloced") - before) / items
        report.add(f"memcached: memory per item, {size} B values", per_item, "B", f"total_malloced, {payload}")
        stack.stop(node.name)


def _durability(stack: Stack, report: BenchReport, keys: int, progress: Callable[[str], None]) -> None:
    """What each keeps through a restart and through the loss of a node (a share of keys)."""
    # Redis as a cache (the stack's default: no RDB, no AOF) and with an AOF (everysec).
    redis = stack.node("redis")
    aof = stack.start_redis(name="redis-aof", aof=True, appendfsync="everysec")
    for name, node in (("redis, no persistence", redis), ("redis, AOF everysec", aof)):
        _flush([node.port])
        load(Target("resp", (node.port,)), keys=keys, size=100, prefix="d:")
        time.sleep(1.5)  # everysec: the last second reaches the disk
        progress(f"{name}: restart")
        stack.restart(node.name)
        report.add(f"{name}: kept through a restart", _dbsize([node.port]) / keys, "share")
    mc = stack.node("memcached-t1")
    load(Target("meta", (mc.port,)), keys=keys, size=100, prefix="d:")
    progress("memcached: restart")
    stack.restart(mc.name)
    report.add("memcached: kept through a restart", _memcached_stat(mc.port, "", "curr_items") / keys, "share")
    # Memcached: three servers behind readscale's consistent-hash ring; one is lost.
    from readscale.backends import MemcachedBackend

    nodes = [stack.start_memcached(name=f"memcached-ring-{i}", threads=1, memory_mb=128) for i in range(3)]
    backend = MemcachedBackend(addresses=[n.address for n in nodes])
    try:
        for start in range(0, keys, 1000):
            backend.set_many([(f"d:{k}", b"x" * 100, 3600.0) for k in range(start, min(keys, start + 1000))])
    finally:
        backend.close()
    progress("memcached, 3 servers: one killed")
    stack.kill(nodes[0].name)
    kept = sum(_memcached_stat(n.port, "", "curr_items") for n in nodes[1:])
    report.add("memcached, 3 servers: kept when one is lost", kept / keys, "share", "readscale's hash ring")
    # Redis Cluster: a primary killed; its replica takes over (asynchronous replication).
    ports, slots = _cluster_primaries(stack)
    _flush(ports)
    load(Target("resp", tuple(ports), tuple(slots)), keys=keys, size=100, prefix="d:")
    time.sleep(1.0)  # replication is asynchronous: let the replicas catch up, as they do in steady state
    victim = next(n for n in stack.cluster_nodes if n.port == ports[0])
    progress(f"redis cluster: primary {victim.name} killed")
    started = time.monotonic()
    stack.kill(victim.name)
    survivors = [n.port for n in stack.cluster_nodes if n.port != victim.port]
    deadline = started + 60
    while time.monotonic() < deadline:
        time.sleep(0.2)
        try:
            with Redis(port=survivors[0]) as client:
                if client.cluster("info").get("cluster_state") == "ok":
                    new_ports, _ = _cluster_primaries_from(survivors[0])
                    if victim.port not in new_ports:
                        break
        except OSError:
            continue
    failover_s = time.monotonic() - started
    new_ports, _ = _cluster_primaries_from(survivors[0])
    report.add("redis cluster: kept when a primary is lost", _dbsize(new_ports) / keys, "share")
    report.add("redis cluster: failover time", failover_s, "s", "cluster-node-timeout 2 s")


def _cluster_primaries_from(port: int) -> tuple[list[int], list[tuple[int, int, int]]]:
    with Redis(port=port) as client:
        slots = client.execute_command("CLUSTER SLOTS")
    ports: list[int] = []
    ranges = []
    for entry in slots:
        primary_port = int(entry[2][1])
        if primary_port not in ports:
            ports.append(primary_port)
        ranges.append((int(entry[0]), int(entry[1]), ports.index(primary_port)))
    return ports, ranges
