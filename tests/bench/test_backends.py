"""``readscale bench backends``' load generator against the real servers: every answer
parsed, every key routed to the node that owns it, counts that add up."""

from __future__ import annotations

import pytest
import redis
import redis.cluster

from readscale.bench.backends import _cluster_primaries_from, _memcached_stat
from readscale.bench.backends.loadgen import Target, load, run

pytestmark = pytest.mark.slow


def _port(url_or_address: str) -> int:
    return int(url_or_address.rsplit(":", 1)[1].split("/", maxsplit=1)[0])


def test_resp_load_then_gets_that_all_hit(redis_url: str) -> None:
    port = _port(redis_url)
    with redis.Redis(port=port) as client:
        client.delete(*(f"t:{k}" for k in range(500)))
        written = load(Target("resp", (port,)), keys=500, size=300, prefix="t:")
        assert (written.sets, written.errors) == (500, 0)
        assert all(len(client.get(f"t:{k}") or b"") == 300 for k in (0, 250, 499))
    result = run(Target("resp", (port,)), conns=4, duration_s=0.5, keys=500, size=300, get_ratio=1.0, prefix="t:")
    assert result.gets == result.hits == result.ops > 0
    assert result.misses == result.errors == 0
    assert 0 < result.p50_us <= result.p99_us <= result.p999_us


def test_resp_counts_misses_when_the_keys_are_not_there(redis_url: str) -> None:
    port = _port(redis_url)
    result = run(Target("resp", (port,)), conns=2, duration_s=0.3, keys=100, size=10, get_ratio=1.0, prefix="nope:")
    assert result.misses == result.gets > 0 and result.hits == 0


def test_meta_protocol_against_memcached(memcached_address: str) -> None:
    port = _port(memcached_address)
    written = load(Target("meta", (port,)), keys=400, size=2000, prefix="tm:")
    assert (written.sets, written.errors) == (400, 0)
    result = run(Target("meta", (port,)), conns=3, duration_s=0.5, keys=400, size=2000, get_ratio=0.8, prefix="tm:")
    assert result.hits == result.gets > 0 and result.sets > 0 and result.errors == 0
    assert _memcached_stat(port, "", "curr_items") >= 400


def test_cluster_keys_go_to_the_primary_that_owns_their_slot(
    redis_cluster_client: redis.cluster.RedisCluster, redis_cluster_nodes: list[str]
) -> None:
    ports, slots = _cluster_primaries_from(_port(redis_cluster_nodes[0]))
    assert len(ports) == 3 and sum(b - a + 1 for a, b, _ in slots) == 16384
    target = Target("resp", tuple(ports), tuple(slots))
    written = load(target, keys=3000, size=50, prefix="tc:")
    # A key sent to the wrong primary answers -MOVED: counted as an error.
    assert (written.sets, written.errors) == (3000, 0)
    for port in ports:
        with redis.Redis(port=port) as client:
            assert 700 < client.dbsize() < 1300  # CRC16 spreads the keys evenly
    result = run(target, conns=6, duration_s=0.5, keys=3000, size=50, get_ratio=1.0, prefix="tc:")
    assert result.hits == result.gets > 0 and result.errors == 0


def test_loading_fewer_keys_than_clients_finishes(redis_url: str) -> None:
    written = load(Target("resp", (_port(redis_url),)), keys=3, size=5, conns=8, prefix="few:")
    assert (written.sets, written.errors) == (3, 0)
