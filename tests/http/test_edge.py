"""Acceptance: readscale's headers behind the stack's real Varnish (issue 7).

Each test counts the requests that reached the app and reads X-Cache; none asserts a
duration. Sleeps only let a TTL run out.
"""

from __future__ import annotations

import ipaddress
import socket
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from readscale.http.purge import VarnishPurger
from readscale.stack import Stack
from readscale.testing.http import AppServer
from tests.http.conftest import Edge, start_edge

pytestmark = [pytest.mark.stack, pytest.mark.slow]


def test_second_request_for_a_public_route_is_an_edge_hit(edge: Edge) -> None:
    with edge.client() as client:
        first = client.get("/public")
        second = client.get("/public")
    assert first.headers["x-cache"] == "MISS"
    assert second.headers["x-cache"] == "HIT"
    assert second.text == first.text == "public #1"
    assert second.headers["cache-status"].startswith("readscale-edge; hit; ttl=")
    assert "xkey" not in second.headers
    assert edge.backend_hits("/public") == 1


def test_cookie_authenticated_profile_is_never_an_edge_hit(edge: Edge) -> None:
    with edge.client() as client:
        with_cookie = [client.get("/profile", headers={"cookie": f"session=user{i % 2}"}) for i in range(4)]
        anonymous = [client.get("/profile") for _ in range(3)]
        login = [client.get("/login") for _ in range(3)]
    assert [r.headers["x-cache"] for r in with_cookie] == ["PASS"] * 4
    assert [r.text for r in with_cookie] == [f"hello user{i % 2} #{i + 1}" for i in range(4)]
    # No policy declared: private, no-cache, so never stored even without a cookie.
    for r in with_cookie + anonymous:
        assert r.headers["cache-control"] == "private, no-cache"
    assert all(not r.headers["x-cache"].startswith("HIT") for r in anonymous)
    # Declared public but sets a cookie: downgraded by the middleware, never stored.
    assert all(r.headers["cache-control"] == "private, no-cache" for r in login)
    assert all(not r.headers["x-cache"].startswith("HIT") for r in login)
    assert edge.backend_hits("/profile") == 7
    assert edge.backend_hits("/login") == 3


def test_stale_while_revalidate_serves_stale_with_one_backend_request(edge: Edge) -> None:
    with edge.client() as client:
        assert client.get("/swr").text == "swr #1"
        time.sleep(1.3)  # past edge_max_age=1, inside stale-while-revalidate=30
        with ThreadPoolExecutor(10) as pool:
            stale = list(pool.map(lambda _: client.get("/swr"), range(10)))
        stale += [client.get("/swr") for _ in range(3)]
        assert {r.text for r in stale} == {"swr #1"}
        assert {r.headers["x-cache"] for r in stale} == {"HIT-STALE"}
        assert all("detail=stale-while-revalidate" in r.headers["cache-status"] for r in stale)
        deadline = time.monotonic() + 10
        while client.get("/swr").text != "swr #2" and time.monotonic() < deadline:
            time.sleep(0.05)
        fresh = client.get("/swr")
    assert fresh.text == "swr #2"
    assert fresh.headers["x-cache"] == "HIT"
    assert edge.backend_hits("/swr") == 2  # exactly one background revalidation


@pytest.mark.parametrize("probe", ["/healthz", None], ids=["health-probe", "no-probe"])
def test_stale_if_error_serves_stale_while_the_app_is_stopped(
    readscale_app_server_factory: Callable[..., AppServer],
    readscale_stack_factory: Callable[..., Stack],
    probe: str | None,
) -> None:
    edge = start_edge(readscale_app_server_factory, readscale_stack_factory, probe=probe)
    with edge.client() as client:
        first = client.get("/sie")
        assert first.status_code == 200
        edge.app.stop()
        time.sleep(2.6)  # past edge_max_age=1 + stale-while-revalidate=1, inside stale-if-error=300
        served = [client.get("/sie") for _ in range(5)]
    assert [r.status_code for r in served] == [200] * 5
    assert {r.text for r in served} == {first.text}
    assert {r.headers["x-cache"] for r in served} == {"HIT-STALE-IF-ERROR"}
    assert all("detail=stale-if-error" in r.headers["cache-status"] for r in served)


def test_a_past_swr_copy_is_refetched_while_the_app_answers(edge: Edge) -> None:
    with edge.client() as client:
        assert client.get("/sie").headers["x-cache"] == "MISS"
        time.sleep(2.6)
        again = client.get("/sie")
    assert again.headers["x-cache"] == "MISS"  # the stale-if-error window is not used when healthy
    assert edge.backend_hits("/sie") == 2


def test_tag_purge_invalidates_exactly_the_tagged_pages(edge: Edge) -> None:
    pages = [f"/page/{n}" for n in range(1, 6)]
    with edge.client() as client:
        assert [client.get(p).headers["x-cache"] for p in pages] == ["MISS"] * 5
        assert [client.get(p).headers["x-cache"] for p in pages] == ["HIT"] * 5
        purger = VarnishPurger(edge.url)
        result = purger.purge_tags(["group-a"], soft=False)
        purger.close()
        after = [client.get(p).headers["x-cache"] for p in pages]
    assert result.purged == 3
    assert after == ["MISS", "MISS", "MISS", "HIT", "HIT"]
    assert [edge.backend_hits(p) for p in pages] == [2, 2, 2, 1, 1]


def test_soft_purge_serves_stale_once_while_refreshing(edge: Edge) -> None:
    with edge.client() as client:
        client.get("/page/4")
        purger = VarnishPurger(edge.url)
        assert purger.purge_tags(["page-4"]).purged == 1  # soft by default
        purger.close()
        client.get("/page/4")
        time.sleep(0.3)
        assert edge.backend_hits("/page/4") == 2


def test_fifty_concurrent_misses_reach_the_app_once(edge: Edge) -> None:
    with (
        httpx.Client(base_url=edge.url, timeout=30, limits=httpx.Limits(max_connections=60)) as client,
        ThreadPoolExecutor(50) as pool,
    ):
        responses = list(pool.map(lambda _: client.get("/slow"), range(50)))
    assert [r.status_code for r in responses] == [200] * 50
    assert {r.text for r in responses} == {"slow #1"}
    assert sorted(r.headers["x-cache"] for r in responses).count("MISS") == 1
    assert edge.backend_hits("/slow") == 1


def test_not_modified_with_required_fields_and_etags_equal_across_hash_seeds(
    readscale_app_server_factory: Callable[..., AppServer],
) -> None:
    apps = [
        readscale_app_server_factory("tests.starlette.app:app", env={"PYTHONHASHSEED": seed}) for seed in ("1", "4242")
    ]
    full = [httpx.get(app.url + "/document") for app in apps]
    etags = {r.headers["etag"] for r in full}
    assert len(etags) == 1
    etag = etags.pop()
    assert etag.startswith('"') and etag.endswith('"') and not etag.startswith("W/")
    for app in apps:
        r = httpx.get(app.url + "/document", headers={"if-none-match": f'W/"other", {etag}'})
        assert r.status_code == 304
        assert r.content == b""
        assert r.headers["etag"] == etag
        assert r.headers["cache-control"] == full[0].headers["cache-control"]
        assert r.headers["cdn-cache-control"] == full[0].headers["cdn-cache-control"]
        assert "date" in r.headers
        assert "content-type" not in r.headers
        assert "content-length" not in r.headers or r.headers["content-length"] == "0"


def test_edge_answers_if_none_match_from_its_copy(edge: Edge) -> None:
    with edge.client() as client:
        full = client.get("/document")
        r = client.get("/document", headers={"if-none-match": full.headers["etag"]})
    assert r.status_code == 304
    assert r.content == b""
    assert r.headers["etag"] == full.headers["etag"]
    assert edge.backend_hits("/document") == 1


def test_cheap_validator_answers_304_before_rendering(edge: Edge) -> None:
    url = edge.app.url
    first = httpx.get(url + "/versioned/k")
    etag = first.headers["etag"]
    again = httpx.get(url + "/versioned/k", headers={"if-none-match": etag})
    assert again.status_code == 304
    assert again.headers["etag"] == etag
    assert again.headers["cache-control"] == first.headers["cache-control"]
    assert edge.backend_hits("/versioned/k") == 1  # the 304 was answered before rendering
    httpx.post(url + "/bump/k")
    changed = httpx.get(url + "/versioned/k", headers={"if-none-match": etag})
    assert changed.status_code == 200
    assert changed.headers["etag"] != etag
    other = httpx.get(url + "/versioned/other", headers={"if-none-match": etag})
    assert other.status_code == 200  # a tag from another resource never validates this one


def test_the_edge_revalidates_an_expired_copy_with_the_apps_validator(edge: Edge) -> None:
    """Past its edge max-age the copy is revalidated (If-None-Match from the edge), so the
    app's check_not_modified answers 304 without rendering, and the copy is fresh again."""
    with edge.client() as client:
        first = client.get("/revalidated/r")
        assert client.get("/revalidated/r").headers["x-cache"] == "HIT"
        time.sleep(1.3)  # past edge_max_age=1; no stale window
        revalidated = client.get("/revalidated/r")
        fresh_again = client.get("/revalidated/r")
        httpx.post(edge.app.url + "/bump/r")
        time.sleep(1.3)
        changed = client.get("/revalidated/r")
    assert revalidated.status_code == 200
    assert revalidated.json() == first.json() == {"key": "r", "version": 1}
    assert revalidated.headers["etag"] == first.headers["etag"]
    assert "fwd-status=304" in revalidated.headers["cache-status"]
    assert fresh_again.headers["x-cache"] == "HIT"
    assert changed.json() == {"key": "r", "version": 2}
    assert changed.headers["etag"] != first.headers["etag"]
    assert edge.backend_hits("/revalidated/r") == 2  # rendered for version 1 and version 2 only


def test_a_write_through_the_edge_invalidates_the_page(edge: Edge) -> None:
    with edge.client() as client:
        assert [client.get("/bumped/w").headers["x-cache"] for _ in range(2)] == ["MISS", "HIT"]
        assert client.post("/bumped/w").status_code == 200
        after = client.get("/bumped/w")
    assert after.headers["x-cache"] == "MISS"
    assert after.json() == {"key": "w", "version": 2}


def test_cache_poisoning_attempts_poison_nobody(edge: Edge) -> None:
    with edge.client() as client:
        attacks = [
            {"x-forwarded-host": "evil.test"},
            {"x-forwarded-host": "evil.test", "x-forwarded-proto": "https"},
            {"x-lang": "<script>evil</script>"},
            {"x-original-url": "/admin", "x-http-method-override": "DELETE"},
        ]
        poisoned = 0
        for _ in range(3):
            for headers in attacks:
                client.get("/reflect", headers=headers)
                victims = [client.get("/reflect") for _ in range(5)]
                poisoned += sum("evil" in r.text for r in victims)
                assert all(r.status_code == 200 for r in victims)
        attacker = client.get("/reflect", headers={"x-lang": "de"})
    assert poisoned == 0
    assert "x-lang" in attacker.headers["vary"].lower()
    assert attacker.text.endswith(">de</a>")  # the keyed variant still works for its own requests


def _non_loopback_ip() -> str | None:
    """One of this machine's own IPv4 addresses outside 127.0.0.0/8 (from ``ip``, or
    ``hostname -I``), or None if it has none."""
    found: list[str] = []
    ip = subprocess.run(
        ["ip", "-4", "-o", "addr", "show", "scope", "global"], capture_output=True, text=True, check=False
    )
    for line in ip.stdout.splitlines():
        fields = line.split()
        if "inet" in fields:
            found.append(fields[fields.index("inet") + 1].split("/")[0])
    if not found:
        hostname = subprocess.run(["hostname", "-I"], capture_output=True, text=True, check=False)
        found = hostname.stdout.split()
    for address in found:
        try:
            parsed = ipaddress.ip_address(address)
        except ValueError:
            continue
        if parsed.version == 4 and not parsed.is_loopback:
            return address
    return None


def _raw_purge(port: int, source: str, headers: str) -> tuple[bytes, str]:
    """Send PURGE to the stack's Varnish on 127.0.0.1 from ``source``; return the reply
    and the source address the connection really had."""
    with socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0)) as sock:
        bound = sock.getsockname()[0]
        sock.sendall(f"PURGE /page/1 HTTP/1.1\r\nHost: x\r\n{headers}Connection: close\r\n\r\n".encode())
        reply = b""
        while chunk := sock.recv(4096):
            reply += chunk
    return reply, bound


def test_purge_from_a_non_loopback_address_is_refused(edge: Edge) -> None:
    ip = _non_loopback_ip()
    if ip is None:
        pytest.skip("this machine has no non-loopback IPv4 address to send from (ip -4 addr, hostname -I)")
    with edge.client() as client:
        client.get("/page/1")
        client.get("/page/2")
        assert client.get("/page/1").headers["x-cache"] == "HIT"
        # The same purges from the machine's own non-loopback address: refused, nothing purged.
        attempts = ["xkey-purge: group-a page-1\r\n", "xkey-softpurge: page-1\r\n", ""]
        for headers in attempts:
            reply, bound = _raw_purge(edge.varnish.port, ip, headers)
            assert bound == ip, "the request really left from the non-loopback address"
            assert reply.startswith(b"HTTP/1.1 403"), reply[:200]
            assert f"Purge not allowed from {ip}".encode() in reply, "Varnish saw that address as client.ip"
        still = [client.get(f"/page/{n}") for n in (1, 2)]
        assert [r.headers["x-cache"] for r in still] == ["HIT", "HIT"]
        # The control: from loopback the very same purge is accepted and takes effect.
        reply, bound = _raw_purge(edge.varnish.port, "127.0.0.1", attempts[0])
        assert bound == "127.0.0.1"
        assert reply.startswith(b"HTTP/1.1 200"), reply[:200]
        assert client.get("/page/1").headers["x-cache"] == "MISS"
    assert edge.backend_hits("/page/1") == 2
