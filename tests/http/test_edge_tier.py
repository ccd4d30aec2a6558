"""An edge of two real Varnish nodes (the stack's), one of them unreachable while purges
run: once it is back, neither node serves a response older than docs/edge.md's bound
(counted), and the purges it missed show in the metrics.

The origin versions each item; a purge follows every new version. A response is *stale*
when its version was superseded; a stale response counts against the bound when it is
served later than the bound after the node came back (replay), or with an Age past
``max_life`` (the lifetime cap). Counts are asserted, never durations.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from prometheus_client import CollectorRegistry

from readscale._shared.primitives.locks import Event
from readscale.http import render_vcl
from readscale.http.purge import RetryPolicy, VarnishPurger
from readscale.metrics import PurgeCollector
from readscale.stack import Stack, StackConfig
from readscale.stack.varnish import VarnishNode

pytestmark = pytest.mark.stack

ITEMS = 8


class VersionedOrigin:
    """``GET /item/<i>``: ``{"item": i, "version": v}``, shareable for an hour, tagged item:<i>."""

    def __init__(self) -> None:
        self.versions = dict.fromkeys(range(ITEMS), 1)
        self.superseded: dict[tuple[int, int], float] = {}  # (item, version) -> when it stopped being current
        self._lock = threading.Lock()
        origin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                return None

            def do_GET(self) -> None:
                item = int(self.path.rsplit("/", 1)[-1])
                with origin._lock:
                    body = json.dumps({"item": item, "version": origin.versions[item]}).encode()
                self.send_response(200)
                self.send_header("Cache-Control", "public, s-maxage=3600")
                self.send_header("xkey", f"item:{item}")
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def bump(self, item: int) -> None:
        with self._lock:
            self.superseded[(item, self.versions[item])] = time.monotonic()
            self.versions[item] += 1

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def origin() -> Iterator[VersionedOrigin]:
    server = VersionedOrigin()
    yield server
    server.close()


def edge_of_two(
    stack_factory: object, origin: VersionedOrigin, max_life: int | None
) -> tuple[Stack, list[VarnishNode]]:
    config = StackConfig(
        postgres=False, redis=False, varnish=True, varnish_backend=origin.url, varnish_nodes=2,
        varnish_max_life=max_life,
    )  # fmt: skip
    stack = stack_factory(config)  # type: ignore[operator]
    nodes = stack.varnish_nodes
    assert len(nodes) == 2
    return stack, nodes


def read_all(client: httpx.Client, nodes: list[VarnishNode]) -> list[tuple[int, int, int, float]]:
    """(item, version, Age, when) for every item through every node."""
    seen = []
    for node in nodes:
        for item in range(ITEMS):
            response = client.get(f"{node.url}/item/{item}")
            assert response.status_code == 200
            seen.append((item, response.json()["version"], int(response.headers.get("age", "0")), time.monotonic()))
    return seen


def purge_while_unreachable(
    stack: Stack, down: VarnishNode, origin: VersionedOrigin, purger: VarnishPurger, rounds: int
) -> float:
    """Freeze ``down`` (it holds its cache and answers nothing: unreachable, as a network
    partition makes it; a node restarted instead would come back empty), write and purge
    every item ``rounds`` times, thaw it; returns when it was back."""
    stack.freeze(down.name)
    try:
        for _ in range(rounds):
            for item in range(ITEMS):
                origin.bump(item)
                purger.purge_tags([f"item:{item}"], soft=False)
    finally:
        stack.thaw(down.name)
    return time.monotonic()


def metric(registry: CollectorRegistry, name: str, node: VarnishNode) -> float:
    return registry.get_sample_value(name, {"vendor": "varnish", "node": node.url}) or 0.0


def test_a_node_back_from_an_outage_is_replayed_within_the_bound(
    readscale_stack_factory: object, origin: VersionedOrigin
) -> None:
    stack, (a, b) = edge_of_two(readscale_stack_factory, origin, max_life=None)
    retry = RetryPolicy(attempts=2, base=0.05, cap=1.0)
    purger = VarnishPurger([a.url, b.url], retry=retry, timeout=0.3)
    registry = CollectorRegistry()
    registry.register(PurgeCollector(purger))
    interval = 0.2
    bound = retry.cap + interval + 2 * 0.3  # docs/edge.md: cap + interval (+ the replay's own requests)
    stop = Event()
    replayer = threading.Thread(target=purger.run_replayer, args=(stop,), kwargs={"interval": interval}, daemon=True)
    replayer.start()
    with httpx.Client(timeout=10) as client:
        try:
            read_all(client, [a, b])  # both nodes hold every item, version 1
            back = purge_while_unreachable(stack, b, origin, purger, rounds=2)
            served = []
            deadline = back + bound + 1.5
            while time.monotonic() < deadline:
                served += read_all(client, [a, b])
        finally:
            stop.set()
            replayer.join(timeout=10)
            purger.close()
    stale = [(item, v, when) for item, v, _age, when in served if (item, v) in origin.superseded]
    past_bound = [s for s in stale if s[2] - back > bound]
    assert len(past_bound) == 0, f"{len(past_bound)} stale responses past the bound, e.g. {past_bound[:3]}"
    assert metric(registry, "readscale_purge_failures_total", b) >= 1
    assert metric(registry, "readscale_purge_failures_total", a) == 0
    assert metric(registry, "readscale_purge_backlog_items", b) == 0
    assert metric(registry, "readscale_purge_replays_total", b) >= 1


def test_without_its_backlog_a_node_serves_nothing_older_than_max_life(
    readscale_stack_factory: object, origin: VersionedOrigin
) -> None:
    max_life = 2
    stack, (a, b) = edge_of_two(readscale_stack_factory, origin, max_life=max_life)
    purger = VarnishPurger([a.url, b.url], retry=RetryPolicy(attempts=1, base=0.05, cap=1.0), timeout=0.3)
    registry = CollectorRegistry()
    registry.register(PurgeCollector(purger))
    with httpx.Client(timeout=10) as client:
        read_all(client, [a, b])
        back = purge_while_unreachable(stack, b, origin, purger, rounds=1)
        purger.close()  # the application restarts: b's backlog is gone, only max_life holds
        served = []
        while time.monotonic() < back + max_life + 1.5:
            served += read_all(client, [a, b])
    assert metric(registry, "readscale_purge_failures_total", b) >= 1
    assert metric(registry, "readscale_purge_backlog_items", b) >= 1
    too_old = [(item, v, age) for item, v, age, _when in served if age > max_life]
    assert len(too_old) == 0, f"{len(too_old)} responses older than max_life, e.g. {too_old[:3]}"
    stale_at_the_end = [s for s in served if s[3] > back + max_life + 0.5 and (s[0], s[1]) in origin.superseded]
    assert len(stale_at_the_end) == 0


def test_ban_all_empties_a_node_and_the_purge_acl_is_configurable(
    readscale_stack_factory: object, origin: VersionedOrigin
) -> None:
    _stack, (a, _b) = edge_of_two(readscale_stack_factory, origin, max_life=None)
    with httpx.Client(base_url=a.url, timeout=10) as client:
        read_all(client, [a])
        assert client.get("/item/0").headers["x-cache"] == "HIT"
        banned = client.request("PURGE", "/", headers={"readscale-ban-all": "1"})
        assert banned.status_code == 200
        assert [client.get(f"/item/{i}").headers["x-cache"] for i in range(ITEMS)] == ["MISS"] * ITEMS
        # The same VCL with a purge ACL that leaves loopback out: loopback is refused.
        vcl = a.dir / "acl.vcl"
        vcl.write_text(render_vcl(origin.url, purge_acl=["10.9.9.0/24", "fd00::7"]))
        vcl.chmod(0o644)
        a.admin("vcl.load", "acl", str(vcl))
        a.admin("vcl.use", "acl")
        assert client.request("PURGE", "/", headers={"xkey-purge": "item:0"}).status_code == 403
        assert client.request("PURGE", "/", headers={"readscale-ban-all": "1"}).status_code == 403
        assert client.get("/item/0").headers["x-cache"] == "HIT"
