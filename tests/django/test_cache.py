"""readscale's Django cache backend on a real small Django site (tests/django/cacheapp,
in a process of its own): cache_page, ``{% cache %}``, cached sessions and django-cachalot
go through it; get_or_load shares one load; tags invalidate; a dead server fails open;
the serializer is named and pickle is signed; the Redis Cluster and memcached variants
keep Django's semantics. And ``readscale.django`` imports without psycopg (and the
memcached variant without redis-py)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.stack]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def site(redis_url: str, redis_cluster_nodes: list[str], memcached_address: str) -> dict[str, Any]:
    db = redis_url.rsplit("/", 1)[0] + "/10"
    dead = f"redis://127.0.0.1:{_free_port()}/0"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.django.cacheapp.run",
            db,
            f"redis://{redis_cluster_nodes[0]}",
            memcached_address,
            dead,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-4000:]
    result: dict[str, Any] = json.loads(run.stdout.strip().splitlines()[-1])
    return result


def test_cache_page_and_fragments_are_stored_in_readscale(site: dict[str, Any]) -> None:
    assert site["page_calls"] == 1 and site["page_bodies"] == ["page 1"] * 3
    assert site["fragment_calls"] == 1 and site["fragments"] == ["[1]"] * 3
    assert site["page_keys_in_redis"] >= 1 and site["fragment_keys_in_redis"] == 1


def test_cached_sessions(site: dict[str, Any]) -> None:
    assert site["session_read"] == [1, 2, 3]
    assert site["session_keys_in_redis"] == 1


def test_cachalot_caches_queries_and_invalidates_them(site: dict[str, Any]) -> None:
    assert site["cachalot_queries"] == 1, "three identical queries, one reached the database"
    assert site["cachalot_names"] == [["a"]] * 3
    assert site["cachalot_after_write"] == ["a", "b"]


def test_get_or_load_shares_one_load_and_tags_invalidate(site: dict[str, Any]) -> None:
    assert site["stampede_loader_calls"] == 1 and site["stampede_callers"] == 20
    assert site["stampede_results"] == ["loaded"]
    assert site["tag_before"] == "v" and site["tag_after"] == "gone"


def test_a_dead_server_fails_open(site: dict[str, Any]) -> None:
    assert site["dead_get"] == "default"
    assert site["dead_loads"] == ["from loader"]
    assert site["dead_l2_available"] is False


def test_the_l1_serves_repeated_reads(site: dict[str, Any]) -> None:
    assert site["l1_values"] == [{"n": 1}] * 5
    assert site["l1_hits"] == 5


def test_the_serializer_is_named_and_pickle_is_signed(site: dict[str, Any]) -> None:
    assert "OPTIONS['SERIALIZER'] must be named" in site["missing_serializer"]
    assert site["json_refuses"] is True and site["json_plain"] == {"a": [1, 2]}
    assert site["json_stores_no_pickle"] is True
    assert site["forged_get"] == "miss" and site["forged_ran"] == 0, "an unsigned pickle is never loaded"
    assert site["signed_get"] == {"ok": True}
    assert site["other_key_get"] == "miss", "an entry signed with another key is a miss"


@pytest.mark.parametrize("alias", ["default", "cluster", "memcached"])
def test_redis_cluster_and_memcached_variants(site: dict[str, Any], alias: str) -> None:
    """Django's semantics on each server; ``incr`` from 4 threads x 50 loses no update
    (a compare and set, not a read then a write)."""
    got = site[alias]
    assert got["counter"] == 200
    assert got["expired"] == ["miss", True, "new"], "add over an item expired by its entry but kept by the server"
    assert got["added"] == [False, True]
    assert got["touched"] is True
    assert got["many"] == {"a": 11, "b": 1, "c": 3, "d": 4}
    assert got["after_clear"] == "cleared"


def test_async_methods(site: dict[str, Any]) -> None:
    assert site["async"] == {
        "added": [False, True],
        "incremented": 6,
        "many": {"async": 6, "async2": 2},
        "touched": True,
        "after": "gone",
    }


def test_imports_without_psycopg_or_redis() -> None:
    """The HTTP middleware and the memcached cache backend need neither psycopg nor
    redis-py (gap 2 of issue 15)."""
    code = textwrap.dedent(
        """
        import importlib.abc, sys
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path, target=None):
                if name.split(".")[0] in ("psycopg", "psycopg_pool", "redis", "hiredis"):
                    raise ImportError(f"blocked {name}")
        sys.meta_path.insert(0, Block())
        import django
        from django.conf import settings
        settings.configure(SECRET_KEY="s" * 40)
        django.setup()
        from readscale.django import HttpCacheMiddleware, http_policy
        from readscale.django.cache import MemcachedCache
        cache = MemcachedCache("127.0.0.1:1", {"OPTIONS": {"SERIALIZER": "json"}})
        assert cache.readscale.backend.name == "memcached"
        assert not [m for m in sys.modules if m.split(".")[0] in ("psycopg", "redis")]
        print("ok")
        """
    )
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False)
    assert run.stdout.strip() == "ok", run.stderr[-3000:]
