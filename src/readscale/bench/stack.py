"""``readscale bench stack``: what a whole local stack costs to start and stop here.

It tells how affordable a stack per test session is: the shared notes measured about
1.4 s for a primary with two replicas and 2-3 s for a six-node Redis Cluster.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from readscale.bench.harness import BenchReport, Rounds
from readscale.stack import Stack


def run(*, rounds: int, quick: bool, progress: Callable[[str], None]) -> BenchReport:
    rounds = 1 if quick else rounds
    report = BenchReport("stack", params={"rounds": rounds, "replicas": 2})
    steps: dict[str, list[float]] = {
        "postgres_primary_2_replicas_up_s": [],
        "redis_up_s": [],
        "redis_cluster_up_s": [],
        "memcached_up_s": [],
        "varnish_up_s": [],
        "down_s": [],
    }
    for i in range(rounds):
        progress(f"round {i + 1}/{rounds}")
        root = Path(tempfile.mkdtemp(prefix="readscale-bench-stack-"))
        root.chmod(0o755)
        stack = Stack(root / "stack")
        try:
            stack.prepare()
            for name, start in _steps(stack):
                began = time.perf_counter()
                start()
                steps[name].append(time.perf_counter() - began)
        finally:
            began = time.perf_counter()
            stack.down()
            steps["down_s"].append(time.perf_counter() - began)
            root.rmdir()
    for name, values in steps.items():
        r = Rounds(tuple(values))
        report.add(name, round(r.median, 3), "s", r.spread())
    return report


def _steps(stack: Stack) -> list[tuple[str, Callable[[], object]]]:
    return [
        ("postgres_primary_2_replicas_up_s", lambda: stack.start_postgres(replicas=2)),
        ("redis_up_s", stack.start_redis),
        ("redis_cluster_up_s", stack.start_cluster),
        ("memcached_up_s", stack.start_memcached),
        ("varnish_up_s", lambda: stack.start_varnish("http://127.0.0.1:9")),
    ]
