"""``readscale bench capacity``: the step search (pure), wrk's open-loop script against a
real server, and the reference service's layer switch (each configuration reads where
it says)."""

from __future__ import annotations

import http.server
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import httpx
import pytest

from readscale.bench.capacity import CONFIGURATIONS
from readscale.bench.capacity.cpu import cpu_seconds
from readscale.bench.capacity.search import Objective, Search, failure
from readscale.bench.capacity.wrk import StepResult, late_percentile, parse, run_step, write_paths
from readscale.demo.shop import parse_layers


def _step(rate: float = 100, requests: int = 500, **kw: float) -> StepResult:
    fields = {"errors": 0, "p50_ms": 1.0, "p99_ms": 10.0, "late_p99_ms": 0.0, "wrk_cpu_s": 0.1} | kw
    return StepResult(target_rate=rate, requests=requests, duration_s=5.0, **fields)  # type: ignore[arg-type]


def test_a_step_fails_on_errors_latency_lateness_or_a_short_rate() -> None:
    objective = Objective(p99_ms=50)
    assert failure(_step(), objective) is None
    assert failure(_step(errors=1), objective) == "1 errors"
    assert "p99" in (failure(_step(p99_ms=51), objective) or "")
    assert "behind schedule" in (failure(_step(late_p99_ms=64), objective) or "")
    assert "achieved" in (failure(_step(rate=200, requests=500), objective) or "")  # 100/s of 200/s


def test_the_search_doubles_then_halves_the_gap_until_within_precision() -> None:
    capacity = 700.0
    search, tried = Search(precision=0.1), []
    while (rate := search.next_rate(100)) is not None:
        tried.append(rate)
        search = search.record(rate, rate <= capacity)
    assert tried[:4] == [100, 200, 400, 800]
    assert search.passed is not None and search.failed is not None
    assert search.passed <= capacity < search.failed <= search.passed * 1.1
    assert len(tried) <= 8


def test_the_search_goes_down_when_the_first_step_fails_and_gives_up_at_the_floor() -> None:
    search, tried = Search(floor=5), []
    while (rate := search.next_rate(100)) is not None:
        tried.append(rate)
        search = search.record(rate, False)
    assert tried == [100, 50, 25, 12.5, 6.25]
    assert search.passed is None


def test_late_percentile_is_an_upper_bound_from_power_of_two_buckets() -> None:
    histogram = [0] * 21
    assert late_percentile(histogram, 1000, 0.99) == 0.0
    histogram[0] = 5  # under 1 ms
    assert late_percentile(histogram, 1000, 0.99) == 0.0  # 995 on time
    histogram[6] = 20  # 32..64 ms late
    assert late_percentile(histogram, 1000, 0.99) == 64.0


def test_parse_reads_the_scripts_line() -> None:
    line = (
        'READSCALE {"requests": 600, "duration_us": 3000000, "connect_errors": 0, "read_errors": 1, '
        '"write_errors": 0, "status_errors": 2, "timeouts": 0, "p50_us": 1500, "p99_us": 9000, '
        '"max_us": 12000, "late_histogram": [' + ", ".join(["0"] * 21) + "]}"
    )
    step = parse("noise\n" + line + "\n", 200.0, 0.5)
    assert (step.requests, step.errors, step.rate, step.p99_ms) == (600, 3, 200.0, 9.0)
    with pytest.raises(RuntimeError, match="no READSCALE line"):
        parse("wrk crashed", 200.0, 0.0)


def test_the_url_list_is_deterministic_zipf_and_carries_each_users_own_cookie(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    write_paths(a, products=100, categories=5, users=10, count=5000, seed=3)
    write_paths(b, products=100, categories=5, users=10, count=5000, seed=3)
    assert a.read_text() == b.read_text()
    lines = [line.split("\t") for line in a.read_text().splitlines()]
    kinds = Counter(
        path.split("/")[1] if not path.startswith("/users") else path.rsplit("/", 1)[1] for path, _ in lines
    )
    assert kinds["products"] > kinds["categories"] > kinds["trending"] > 0
    products = Counter(path for path, _ in lines if path.startswith("/products/"))
    assert products["/products/1"] > products["/products/50"]  # Zipf: rank 1 is the most popular
    for path, cookie in lines:
        if path.startswith("/users/"):
            assert cookie == f"session=user-{path.split('/')[2]}"
        else:
            assert cookie == ""


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the service and the edge
    delay = 0.0
    seen: ClassVar[Counter[str]] = Counter()

    def do_GET(self) -> None:
        time.sleep(self.delay)
        type(self).seen[self.headers.get("Cookie") or ""] += 1
        body = b"ok"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


class _Server(http.server.ThreadingHTTPServer):
    request_queue_size = 256  # wrk opens its connections at once (the default 5 drops SYNs)
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # wrk resets its connections when it stops


@pytest.fixture
def server() -> Iterator[tuple[str, type[_Handler]]]:
    handler = type("Handler", (_Handler,), {"delay": 0.0, "seen": Counter()})
    httpd = _Server(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", handler
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.mark.slow
def test_wrk_sends_at_the_scheduled_rate_with_the_cookies(server: tuple[str, type[_Handler]], tmp_path: Path) -> None:
    url, handler = server
    paths = tmp_path / "paths"
    paths.write_text("/a\t\n/b\tsession=user-7\n")
    step = run_step(url, paths, 100, duration_s=3, objective_ms=50)
    # Open loop at 100/s for 3 s: about 300 sends (plus at most one unpaced first send per connection).
    assert 270 <= step.requests <= 330, step
    assert step.errors == 0 and step.late_p99_ms == 0.0
    assert handler.seen["session=user-7"] > 100 and handler.seen[""] > 100


@pytest.mark.slow
def test_a_server_that_queues_shows_as_late_sends(server: tuple[str, type[_Handler]], tmp_path: Path) -> None:
    url, handler = server
    handler.delay = 0.2  # 10 connections at 0.2 s each: at most 50/s, asked for 200/s
    paths = tmp_path / "paths"
    paths.write_text("/a\t\n")
    step = run_step(url, paths, 200, duration_s=3, objective_ms=25)  # 10 connections
    assert step.late_p99_ms >= 64.0
    assert failure(step, Objective(p99_ms=25)) is not None


def test_cpu_seconds_counts_a_process_tree() -> None:
    import os

    before = cpu_seconds({"me": [os.getpid()]})["me"]
    deadline = time.process_time() + 0.2
    while time.process_time() < deadline:
        pass
    after = cpu_seconds({"me": [os.getpid()], "nobody": [999_999_999]})
    assert after["me"] - before >= 0.15
    assert after["nobody"] == 0.0


def test_layers_name_only_what_the_service_knows() -> None:
    assert parse_layers("") == frozenset()
    assert parse_layers("replicas, cache") == {"replicas", "cache"}
    with pytest.raises(ValueError, match="unknown layer"):
        parse_layers("replicas,edge")
    assert [c.name for c in CONFIGURATIONS] == ["primary", "replicas", "cache", "edge"]


@pytest.mark.stack
@pytest.mark.slow
def test_each_configuration_reads_where_it_says() -> None:
    """The reference service with each layer set: primary only reads the primary,
    + replicas reads a replica, + cache answers repeated reads from the cache, and the edge
    answers repeated reads itself (Varnish's X-Cache)."""
    from readscale.demo.environment import DemoEnvironment, EnvironmentConfig

    env = DemoEnvironment(EnvironmentConfig(workers=1, replicas=1))
    try:
        env.start()
        for config in CONFIGURATIONS:
            env.restart_app(config.layers)
            base = env.edge_url if config.via_edge else env.app_url
            served = []
            for _ in range(3):
                response = httpx.get(f"{base}/products/7", timeout=10)
                assert response.status_code == 200
                served.append(response.headers.get("x-readscale-served", ""))
            if config.name == "primary":
                assert served == ["primary"] * 3
            elif config.name == "replicas":
                assert all(s.startswith("replica:") for s in served), served
            elif config.name == "cache":
                assert served[-1].startswith("app_cache"), served
            else:
                assert served.count(served[-1]) >= 1 and served[-1].startswith("app_cache")
                assert "HIT" in httpx.get(f"{base}/products/7", timeout=10).headers.get("x-cache", "").upper()
    finally:
        env.close()
