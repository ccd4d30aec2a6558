"""Build and run ``rsload`` (rsload.c): the compiled load generator of ``bench backends``.

It is compiled on first use with the system's C compiler into the user's cache folder,
keyed by the source's hash, so a changed source is rebuilt and a fresh machine needs
only ``cc`` (Debian's gcc, which ``make setup`` installs with the build tools).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal

from readscale.errors import ConfigurationError

Protocol = Literal["resp", "meta"]


def binary() -> Path:
    """The compiled generator, built if missing or stale."""
    source = resources.files("readscale.bench.backends").joinpath("rsload.c").read_bytes()
    digest = hashlib.sha256(source).hexdigest()[:16]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "readscale"
    target = cache / f"rsload-{digest}"
    if target.exists():
        return target
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise ConfigurationError("bench backends compiles its load generator: install a C compiler (Debian: gcc)")
    cache.mkdir(parents=True, exist_ok=True)
    src = cache / f"rsload-{digest}.c"
    src.write_bytes(source)
    partial = target.with_suffix(".tmp")
    proc = subprocess.run(
        [compiler, "-O2", "-pthread", "-o", str(partial), str(src)], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise ConfigurationError(f"cannot compile the load generator ({compiler}): {proc.stderr.strip()[-500:]}")
    partial.replace(target)
    return target


@dataclass(frozen=True)
class Target:
    """Where the load goes: one server, or a Redis Cluster's primaries with their slots."""

    protocol: Protocol
    ports: tuple[int, ...]
    #: ((first slot, last slot, index into ports), ...) for a Redis Cluster.
    slots: tuple[tuple[int, int, int], ...] = ()

    def args(self) -> list[str]:
        out = ["--proto", self.protocol, "--ports", ",".join(str(p) for p in self.ports)]
        if self.slots:
            out += ["--slots", ",".join(f"{a}-{b}:{i}" for a, b, i in self.slots)]
        return out


@dataclass(frozen=True)
class LoadResult:
    ops: int
    gets: int
    sets: int
    hits: int
    misses: int
    errors: int
    duration_s: float
    p50_us: int
    p99_us: int
    p999_us: int

    @property
    def ops_per_s(self) -> float:
        return self.ops / self.duration_s if self.duration_s else 0.0


def _run(target: Target, extra: list[str], timeout: float) -> LoadResult:
    argv = [str(binary()), *target.args(), *extra]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"rsload failed ({proc.returncode}): {proc.stderr.strip()[-1000:]}")
    return LoadResult(**json.loads(proc.stdout.strip().splitlines()[-1]))


def load(target: Target, *, keys: int, size: int, conns: int = 8, prefix: str = "rs:") -> LoadResult:
    """Write keys ``prefix0`` .. ``prefix{keys-1}`` once, ``size`` bytes each (pipelined)."""
    args = ["--load", "--keys", str(keys), "--size", str(size), "--conns", str(conns), "--prefix", prefix]
    return _run(target, args, timeout=600)


def run(
    target: Target,
    *,
    conns: int,
    duration_s: float,
    keys: int,
    size: int,
    get_ratio: float = 0.9,
    threads: int = 2,
    prefix: str = "rs:",
) -> LoadResult:
    """``conns`` closed-loop clients for ``duration_s`` seconds over uniform keys."""
    args = [
        "--conns", str(conns), "--threads", str(min(threads, conns)), "--duration", f"{duration_s:g}",
        "--keys", str(keys), "--size", str(size), "--get-ratio", f"{get_ratio:g}", "--prefix", prefix,
    ]  # fmt: skip
    return _run(target, args, timeout=duration_s + 60)
