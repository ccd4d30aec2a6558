"""Acceptance: `readscale stack up --json`, `status`, `down` with every kind of server."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import psycopg
import pytest
from redis.cluster import ClusterNode, RedisCluster

from readscale.stack.memcached import version_ping
from readscale.testing import new_stack_root
from tests.helpers import Origin, cli, cli_json, processes_mentioning

pytestmark = [pytest.mark.stack, pytest.mark.slow]


def memcached_roundtrip(address: str) -> bytes:
    import socket

    host, port = address.split(":")
    with socket.create_connection((host, int(port)), timeout=2) as sock:
        sock.sendall(b"set readscale-smoke 0 60 5\r\nhello\r\nget readscale-smoke\r\n")
        data = b""
        while not data.endswith(b"END\r\n"):
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    return data


def test_up_status_down_with_every_server() -> None:
    base = new_stack_root()
    root = base / "stack"
    password = "cli-pg-secret-7d2"
    env = {"READSCALE_STACK_DIR": str(root), "READSCALE_STACK_PG_PASSWORD": password}
    origin = Origin()
    origin.cache_control["/cacheable"] = "public, max-age=0, s-maxage=60"
    with origin.running():
        try:
            endpoints = cli_json(
                "stack",
                "up",
                "--cluster",
                "--memcached",
                "--varnish",
                "--varnish-backend",
                origin.url,
                "--pg-tls",
                "--pg-user",
                "app",
                env=env,
            )
            status = cli_json("stack", "status", env=env)
            assert password not in json.dumps([endpoints, status])
            # The application role: over TLS (verify-full against the stack's CA) with its password.
            for node in [endpoints["postgres"]["primary"], *endpoints["postgres"]["replicas"]]:
                with psycopg.connect(node["app_dsn"], password=password) as conn:
                    ssl_row = "SELECT current_user::text, ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
                    assert conn.execute(ssl_row).fetchone() == ("app", True)
            assert {n["name"] for n in status["nodes"]} == {
                "primary", "r1", "r2", "redis", "memcached", "varnish", *(f"cluster{i}" for i in range(1, 7))
            }  # fmt: skip
            assert all(n["ready"] for n in status["nodes"]), status["nodes"]

            # PostgreSQL: two streaming standbys, and a row written on the primary is read on each.
            primary = endpoints["postgres"]["primary"]["dsn"]
            with psycopg.connect(primary, autocommit=True) as conn:
                streaming = conn.execute(
                    "SELECT application_name FROM pg_stat_replication WHERE state = 'streaming' ORDER BY 1"
                ).fetchall()
                assert [r[0] for r in streaming] == ["r1", "r2"]
                conn.execute("CREATE TABLE t (id int PRIMARY KEY, v text)")
                conn.execute("INSERT INTO t VALUES (1, 'on the primary')")
                lsn = conn.execute("SELECT pg_current_wal_lsn()").fetchone()[0]  # type: ignore[index]
            for replica in endpoints["postgres"]["replicas"]:
                with psycopg.connect(replica["dsn"], autocommit=True) as conn:
                    deadline = time.monotonic() + 10
                    while not conn.execute("SELECT pg_last_wal_replay_lsn() >= %s", (lsn,)).fetchone()[0]:  # type: ignore[index]
                        assert time.monotonic() < deadline, f"{replica['name']} never replayed {lsn}"
                        time.sleep(0.01)
                    assert conn.execute("SELECT v FROM t WHERE id = 1").fetchone() == ("on the primary",)

            # Redis Cluster: ok, every slot covered, a key set through one node is read through another.
            nodes = endpoints["redis_cluster"]["nodes"]
            first_host, first_port = nodes[0].split(":")
            last_host, last_port = nodes[-1].split(":")
            one = RedisCluster(startup_nodes=[ClusterNode(first_host, int(first_port))], protocol=2)
            other = RedisCluster(startup_nodes=[ClusterNode(last_host, int(last_port))], protocol=2)
            try:
                info = one.cluster_info()
                assert info["cluster_state"] == "ok"
                assert int(info["cluster_slots_assigned"]) == 16384
                for i in range(20):
                    one.set(f"key:{i}", f"value {i}")
                assert [other.get(f"key:{i}") for i in range(20)] == [f"value {i}".encode() for i in range(20)]
            finally:
                one.close()
                other.close()

            # Memcached set and get.
            reply = memcached_roundtrip(endpoints["memcached"]["address"])
            assert b"VALUE readscale-smoke 0 5\r\nhello\r\n" in reply

            # Varnish: the second request for a cacheable URL comes from its cache.
            with httpx.Client(base_url=endpoints["varnish"]["url"], cookies=None) as http:
                first = http.get("/cacheable")
                second = http.get("/cacheable")
            assert first.status_code == second.status_code == 200
            assert first.headers["x-cache"].startswith("MISS")
            assert second.headers["x-cache"] == "HIT"
            assert second.text == first.text
            assert origin.hits["/cacheable"] == 1

            pids = [n["pid"] for n in status["nodes"]]
        finally:
            down = cli("stack", "down", env=env, check=False)
    assert down.returncode == 0, down.stderr
    assert not root.exists()
    assert processes_mentioning(str(base)) == []
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1][:3]
    assert not version_ping(int(endpoints["memcached"]["port"]))
    base.rmdir()


def test_status_and_down_without_a_stack_say_so() -> None:
    base = new_stack_root()
    env = {"READSCALE_STACK_DIR": str(base / "nothing")}
    for command in ("status", "down"):
        proc = cli("stack", command, env=env, check=False)
        assert proc.returncode == 1
        assert "no stack in" in proc.stderr
        assert "Traceback" not in proc.stderr
    base.rmdir()
