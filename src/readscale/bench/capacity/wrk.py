"""Drive wrk (a compiled HTTP load generator, from Debian's packages) at a fixed rate.

wrk sends; ``paced.lua`` turns its closed loop into an open one (a schedule of send
times, see the script) and prints one ``READSCALE {json}`` line with what happened. The
URL list is drawn once, Zipf-popular like the demo's browsers, and written to a file
that every step replays.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import subprocess
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from readscale.demo.loadgen import Zipf
from readscale.errors import ConfigurationError

#: Public and private reads in the demo's proportions (its browsers' ACTIONS without the
#: static assets, which the service serves from memory and the edge keeps for a year).
READS = (("product", 0.60), ("category", 0.18), ("trending", 0.05), ("profile", 0.06), ("balance", 0.05))


def write_paths(
    target: Path, *, products: int, categories: int, users: int, count: int, seed: int, alpha: float = 0.9
) -> None:
    """``count`` requests as ``path<TAB>cookie`` lines: products and categories by Zipf
    popularity, a user's own profile and balance with that user's session cookie."""
    rng = random.Random(seed)
    product, category = Zipf(products, alpha), Zipf(categories, alpha)
    names = [name for name, _ in READS]
    weights = [weight for _, weight in READS]
    lines = []
    for kind in rng.choices(names, weights, k=count):
        if kind == "product":
            lines.append(f"/products/{product.draw(rng)}\t")
        elif kind == "category":
            lines.append(f"/categories/{category.draw(rng)}\t")
        elif kind == "trending":
            lines.append("/trending\t")
        else:
            user = rng.randrange(1, users + 1)
            lines.append(f"/users/{user}/{kind}\tsession=user-{user}")
    target.write_text("\n".join(lines) + "\n")


@dataclass(frozen=True)
class StepResult:
    """One wrk run at a target rate."""

    target_rate: float
    requests: int
    duration_s: float
    errors: int
    p50_ms: float
    p99_ms: float
    #: The 99th percentile of how late sends were behind their schedule (0 when never late).
    late_p99_ms: float
    #: CPU seconds of the load generator itself.
    wrk_cpu_s: float

    @property
    def rate(self) -> float:
        return self.requests / self.duration_s if self.duration_s else 0.0

    def to_json(self) -> dict[str, float | int]:
        return {
            "target_rate": round(self.target_rate, 1), "rate": round(self.rate, 1), "requests": self.requests,
            "errors": self.errors, "p50_ms": round(self.p50_ms, 2), "p99_ms": round(self.p99_ms, 2),
            "late_p99_ms": round(self.late_p99_ms, 2),
        }  # fmt: skip


def late_percentile(histogram: list[int], sends: int, q: float) -> float:
    """The ``q`` quantile (0..1) of lateness in ms from the script's power-of-two buckets
    (bucket 0: under 1 ms; bucket b: 2^(b-1) to 2^b ms), over all ``sends`` (on time ones
    count as 0). The bucket's upper edge is returned: a bound, not an estimate."""
    late = sum(histogram)
    on_time = max(0, sends - late)
    need = math.ceil(q * max(sends, late))
    if need <= on_time:
        return 0.0
    running = on_time
    for bucket, count in enumerate(histogram):
        running += count
        if running >= need:
            return 1.0 if bucket == 0 else float(2**bucket)
    return float(2 ** (len(histogram) - 1))


def parse(output: str, target_rate: float, wrk_cpu_s: float) -> StepResult:
    """The script's ``READSCALE {...}`` line → a :class:`StepResult`."""
    for line in output.splitlines():
        if line.startswith("READSCALE "):
            data = json.loads(line.removeprefix("READSCALE "))
            break
    else:
        raise RuntimeError(f"wrk printed no READSCALE line; its output:\n{output[-2000:]}")
    errors = sum(data[k] for k in ("connect_errors", "read_errors", "write_errors", "status_errors", "timeouts"))
    return StepResult(
        target_rate=target_rate,
        requests=data["requests"],
        duration_s=data["duration_us"] / 1e6,
        errors=errors,
        p50_ms=data["p50_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        late_p99_ms=late_percentile(data["late_histogram"], data["requests"], 0.99),
        wrk_cpu_s=wrk_cpu_s,
    )


def wrk_binary() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise ConfigurationError("bench capacity needs wrk (Debian: apt-get install wrk; `make setup` installs it)")
    return found


def connections_for(rate: float, objective_ms: float) -> int:
    """Enough connections that the schedule never waits for one while the server meets
    the objective (Little's law with a margin of 2), within what one process may open."""
    return int(min(2_000, max(8, math.ceil(2 * rate * objective_ms / 1000))))


def run_step(
    url: str, paths: Path, rate: float, *, duration_s: float, objective_ms: float, threads: int = 2
) -> StepResult:
    """Send ``rate`` requests per second to ``url`` for ``duration_s`` seconds."""
    connections = max(threads, connections_for(rate, objective_ms))
    script = resources.files("readscale.bench.capacity").joinpath("paced.lua")
    with resources.as_file(script) as script_path:
        argv = [
            wrk_binary(), f"-t{threads}", f"-c{connections}", f"-d{duration_s:g}s", "--timeout", "5s",
            "-s", str(script_path), url, "--", str(paths), f"{rate:.3f}", str(threads),
        ]  # fmt: skip
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        assert proc.stdout is not None
        with proc.stdout:
            output = proc.stdout.read().decode(errors="replace")
        # wait4, not wait: its resource usage is the load generator's own CPU time.
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise RuntimeError(f"wrk exited with {code}: {output[-2000:]}")
    return parse(output, rate, usage.ru_utime + usage.ru_stime)
