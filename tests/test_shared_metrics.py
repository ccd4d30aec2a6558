"""SharedMetrics: the metrics of every worker of a server, from whichever a scrape reaches.

The merge rules are checked on plain snapshots; then a real ``uvicorn --workers 2``
serves requests that are each one cache miss, and every scrape must count all of them,
whichever worker answers it (the worker's own registry counts only its share)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from readscale.metrics import Family, SharedMetrics, merge_snapshots
from readscale.stack._proc import pick_ports

ROOT = Path(__file__).resolve().parents[1]


def family(kind: str, *samples: tuple[str, dict[str, str], float]) -> Family:
    return (kind, "doc", list(samples))


def test_counters_and_histograms_add_up_over_every_worker_gauges_are_per_live_worker() -> None:
    own = {
        "c": family("counter", ("c_total", {"tier": "l1"}, 2.0)),
        "h": family("histogram", ("h_bucket", {"le": "1.0"}, 1.0), ("h_count", {}, 1.0), ("h_sum", {}, 0.5)),
        "g": family("gauge", ("g", {}, 7.0)),
    }
    live = {
        "c": family("counter", ("c_total", {"tier": "l1"}, 3.0), ("c_total", {"tier": "l2"}, 1.0)),
        "h": family("histogram", ("h_bucket", {"le": "1.0"}, 2.0), ("h_count", {}, 2.0), ("h_sum", {}, 1.0)),
        "g": family("gauge", ("g", {}, 5.0)),
    }
    dead = {"c": family("counter", ("c_total", {"tier": "l1"}, 10.0)), "g": family("gauge", ("g", {}, 99.0))}
    merged = merge_snapshots(own, {101: (True, live), 102: (False, dead)})
    values = {(name, s, tuple(sorted(labels.items()))): v for name, (_, _, ss) in merged.items() for s, labels, v in ss}
    assert values[("c", "c_total", (("tier", "l1"),))] == 15.0  # a dead worker's counts stay
    assert values[("c", "c_total", (("tier", "l2"),))] == 1.0
    assert values[("h", "h_bucket", (("le", "1.0"),))] == 3.0
    assert values[("h", "h_sum", ())] == 1.5
    gauges = {labels: v for (name, _, labels), v in values.items() if name == "g"}
    assert gauges == {(("pid", str(os.getpid())),): 7.0, (("pid", "101"),): 5.0}  # none of the dead one


def test_an_interval_that_cannot_work_is_refused(tmp_path: Path) -> None:
    from readscale.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="interval"):
        SharedMetrics(object(), tmp_path, interval=0)


def _total(text: str) -> float:
    found = re.findall(r'^readscale_cache_misses_total\{cache="workers",tier="l2"\} (\S+)$', text, re.M)
    assert len(found) == 1, text
    return float(found[0])


@pytest.mark.timeout(120)
def test_every_scrape_counts_every_workers_requests(tmp_path: Path) -> None:
    (port,) = pick_ports(1)
    env = {**os.environ, "READSCALE_TEST_METRICS_DIR": str(tmp_path / "metrics"), "PYTHONPATH": str(ROOT / "src")}
    env["PYTHONPATH"] += os.pathsep + str(ROOT)
    log = (tmp_path / "uvicorn.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--factory", "tests.metrics_workers.app:build", "--workers", "2",
         "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(url + "/metrics", timeout=1)
                break
            except httpx.HTTPError:
                assert server.poll() is None, (tmp_path / "uvicorn.log").read_text()
                assert time.monotonic() < deadline, "uvicorn never answered"
                time.sleep(0.2)
        sent, pids = 0, set()
        # A new connection per request: the kernel hands them to both workers.
        while len(pids) < 2 or sent < 200:
            assert sent < 5_000, f"one worker took every connection: {pids}"
            pids.add(httpx.get(url + "/miss", timeout=5).headers["x-pid"])
            sent += 1
        time.sleep(1.0)  # > the interval: each worker has written its snapshot since
        scraped = {}
        for _ in range(20):
            answer = httpx.get(url + "/metrics", timeout=5)
            scraped.setdefault(answer.headers["x-pid"], []).append(_total(answer.text))
        # Whichever worker a scrape reached (the kernel's choice), it counts every request.
        assert all(total == sent for totals in scraped.values() for total in totals), (sent, scraped)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
        log.close()
