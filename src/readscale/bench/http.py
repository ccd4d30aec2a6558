"""``readscale bench http``: what the edge absorbs, and what readscale's middleware costs.

Contenders, measured with ``wrk`` on loopback in interleaved rounds (medians reported):

- ``edge_hit_rps``: a readscale-managed page (public policy, ETag, CDN-Cache-Control,
  xkey tag) served from Varnish's cache.
- ``varnish_static_rps``: a fingerprinted static object served from the same Varnish:
  the edge's limit on this machine.
- ``app_rps``: the managed page straight from the app (uvicorn, one process).
- ``bare_app_rps``: the same handler on plain Starlette, Cache-Control set by hand.

Derived: ``edge_hit_ratio_of_limit`` = edge_hit / varnish_static (target >= 0.9), and
``middleware_overhead_ratio`` = bare_app / app (cost per request with the middleware
over without it; target <= 1.10).

``edge_share_<framework>``: the share of one fixed workload (browser-like requests over
Zipf-popular pages, three languages, thirty User-Agents, no cookies) that Varnish answers
from its cache (``Cache-Status: ...; hit``), through the same page served by each
framework's recommended stack (FastAPI, Starlette, Flask, Django, sessions on, the
causal-token middleware inside the HTTP one). ``edge_share_spread`` = max - min (target
<= 0.05): a framework whose plumbing defeated the edge (Vary: User-Agent, private pages)
shows here.

The machine's cores are shared with wrk itself (and, on a shared host, with others):
run it under ``flock /tmp/readscale-bench.lock`` so benches never overlap.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from readscale.bench.harness import BenchReport, ratio, round_robin
from readscale.errors import MissingBinaryError, StackError
from readscale.stack import Stack, StackConfig
from readscale.testing.appserver import AppServer

_RPS = re.compile(r"Requests/sec:\s+([\d.]+)")
_NON_2XX = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")


def wrk(url: str, *, seconds: int, threads: int, connections: int) -> float:
    """Requests per second for ``url`` (raises if any response was not 2xx/3xx)."""
    binary = shutil.which("wrk")
    if binary is None:
        raise MissingBinaryError("wrk", "wrk")
    out = subprocess.run(
        [binary, f"-t{threads}", f"-c{connections}", f"-d{seconds}s", url],
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 30,
    ).stdout
    if (bad := _NON_2XX.search(out)) is not None:
        raise StackError(f"wrk saw {bad.group(1)} failed responses from {url}:\n{out}")
    found = _RPS.search(out)
    if found is None:
        raise StackError(f"could not read wrk's output:\n{out}")
    return float(found.group(1))


def in_process_overhead_us(calls: int, rounds: int) -> tuple[float, float]:
    """(bare, managed) microseconds per request calling the ASGI apps directly (best round).

    No server, no sockets: the steadiest view of what the middleware itself costs.
    """
    import asyncio

    from readscale.bench._http_apps import bare, managed

    headers = [(b"host", b"127.0.0.1:8000"), (b"user-agent", b"wrk"), (b"accept", b"*/*")]
    template = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
        "path": "/item/1", "raw_path": b"/item/1", "query_string": b"", "root_path": "",
        "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 8000),
    }  # fmt: skip

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: object) -> None:
        return None

    async def per_call(app: Any) -> float:
        began = time.perf_counter()
        for _ in range(calls):
            await app({**template, "headers": list(headers)}, receive, send)
        return (time.perf_counter() - began) / calls * 1e6

    async def main() -> tuple[float, float]:
        best = [float("inf"), float("inf")]
        for _ in range(rounds + 1):
            best[0] = min(best[0], await per_call(bare))
            best[1] = min(best[1], await per_call(managed))
        return best[0], best[1]

    return asyncio.run(main())


FRAMEWORK_PAGES = {
    "fastapi": ("readscale.bench._http_apps:fastapi_page", ()),
    "starlette": ("readscale.bench._http_apps:starlette_page", ()),
    "flask": ("readscale.bench._http_apps:flask_page", ("--interface", "wsgi")),
    "django": ("readscale.bench._http_apps:django_page", ()),
}


def edge_workload(requests: int, *, pages: int = 300, seed: int = 13) -> list[tuple[str, dict[str, str]]]:
    """A fixed, seeded list of (path, headers): Zipf(1.1) pages, 3 languages, 30 agents."""
    import random

    rng = random.Random(seed)
    weights = [1 / (rank**1.1) for rank in range(1, pages + 1)]
    ids = rng.choices(range(pages), weights=weights, k=requests)
    agents = [f"Mozilla/5.0 (bench {n}) Chrome/{100 + n}.0" for n in range(30)]
    return [
        (
            f"/page/{item}",
            {"user-agent": rng.choice(agents), "accept-language": rng.choice(["en", "fr", "de"]), "accept": "*/*"},
        )
        for item in ids
    ]


def edge_shares(*, requests: int, workdir: Path, progress: Callable[[str], None]) -> dict[str, float]:
    """The share of :func:`edge_workload` Varnish answers from cache, per framework."""
    import httpx

    from readscale.http import parse_cache_status

    workload = edge_workload(requests)
    shares: dict[str, float] = {}
    for name, (target, extra) in FRAMEWORK_PAGES.items():
        progress(f"edge share through {name}")
        app = AppServer(target, http="h11", loop="asyncio", log=workdir / f"uvicorn-{name}.log", extra_args=extra)
        stack = Stack(workdir / f"stack-{name}")
        try:
            app.start()
            stack.up(StackConfig(postgres=False, redis=False, varnish=True, varnish_backend=app.url))
            hits = 0
            with httpx.Client(base_url=stack.varnish.url, timeout=30) as client:
                for path, headers in workload:
                    response = client.get(path, headers=headers)
                    if response.status_code != 200:
                        raise StackError(f"{name}: {path} answered {response.status_code}")
                    members = parse_cache_status(response.headers.get("cache-status", ""))
                    hits += any(m.cache == "readscale-edge" and m.hit for m in members)
            shares[name] = hits / len(workload)
        finally:
            stack.down()
            app.stop()
    return shares


def run(*, rounds: int, quick: bool, progress: Callable[[str], None]) -> BenchReport:
    rounds = 1 if quick else rounds
    seconds = 1 if quick else 3
    edge_load = {"threads": 2, "connections": 64}
    app_load = {"threads": 1, "connections": 32}
    report = BenchReport(
        "http",
        params={
            "rounds": rounds,
            "seconds_per_round": seconds,
            "edge_wrk": edge_load,
            "app_wrk": app_load,
            "uvicorn": "1 process, --loop uvloop --http httptools",
            "payload_bytes": 500,
            "note": "2 cores shared with wrk (and possibly other users); loopback only",
        },
    )
    workdir = Path(tempfile.mkdtemp(prefix="readscale-bench-http-"))
    workdir.chmod(0o755)
    static = workdir / "static"
    static.mkdir()
    (static / "blob.bin").write_bytes(b"s" * 500)
    env = {"READSCALE_BENCH_STATIC": str(static)}
    common = {"http": "httptools", "loop": "uvloop", "log": workdir / "uvicorn.log", "env": env}
    managed = AppServer("readscale.bench._http_apps:managed", **common)  # type: ignore[arg-type]
    bare = AppServer("readscale.bench._http_apps:bare", **common)  # type: ignore[arg-type]
    stack = Stack(workdir / "stack")
    try:
        progress("starting the apps and Varnish")
        managed.start()
        bare.start()
        stack.up(StackConfig(postgres=False, redis=False, varnish=True, varnish_backend=managed.url))
        from readscale.http import AssetManifest

        blob = AssetManifest.build(static).url("blob.bin")
        edge = stack.varnish.url
        urls = {
            "edge_hit_rps": (f"{edge}/item/1", edge_load),
            "varnish_static_rps": (f"{edge}{blob}", edge_load),
            "app_rps": (f"{managed.url}/item/1", app_load),
            "bare_app_rps": (f"{bare.url}/item/1", app_load),
        }

        def contender(name: str) -> Callable[[], float]:
            url, load = urls[name]

            def one_round() -> float:
                progress(f"{name}: {url}")
                return wrk(url, seconds=seconds, **load)

            return one_round

        results = round_robin({name: contender(name) for name in urls}, rounds, warmup=1)
        hits = stack.varnish.counters()
    finally:
        stack.down()
        managed.stop()
        bare.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    for name, r in results.items():
        report.add(name, round(r.median), "req/s", r.spread("{:.0f}"))
    edge_hit = results["edge_hit_rps"].median
    report.add(
        "edge_hit_ratio_of_limit",
        round(ratio(edge_hit, results["varnish_static_rps"].median), 3),
        "ratio",
        "edge_hit_rps / varnish_static_rps (target >= 0.9)",
    )
    report.add(
        "middleware_overhead_ratio",
        round(ratio(results["bare_app_rps"].median, results["app_rps"].median), 3),
        "ratio",
        "bare_app_rps / app_rps: cost per request with readscale's middleware (target <= 1.10)",
    )
    share_dir = Path(tempfile.mkdtemp(prefix="readscale-bench-edge-share-"))
    share_dir.chmod(0o755)
    try:
        shares = edge_shares(requests=600 if quick else 3000, workdir=share_dir, progress=progress)
    finally:
        shutil.rmtree(share_dir, ignore_errors=True)
    for name, share in shares.items():
        note = "requests Varnish answered from cache, same workload"
        report.add(f"edge_share_{name}", round(share, 4), "ratio", note)
    report.add(
        "edge_share_spread",
        round(max(shares.values()) - min(shares.values()), 4),
        "ratio",
        "max - min of the four frameworks' edge shares (target <= 0.05)",
    )
    progress("in-process middleware cost")
    bare_us, managed_us = in_process_overhead_us(2000 if quick else 10000, rounds)
    report.add(
        "middleware_overhead_us",
        round(managed_us - bare_us, 2),
        "us/request",
        f"in process, best of {rounds + 1} rounds: managed {managed_us:.2f} us vs bare {bare_us:.2f} us",
    )
    report.add("edge_to_app_speedup", round(ratio(edge_hit, results["app_rps"].median), 2), "x", "edge_hit / app")
    report.add(
        "varnish_cache_hit_share",
        round(ratio(hits.get("MAIN.cache_hit", 0), hits.get("MAIN.client_req", 0)), 4),
        "ratio",
        "MAIN.cache_hit / MAIN.client_req over the whole run",
    )
    return report
