"""A small Django site on readscale's cache backend, in a process of its own (Django's
settings are process-wide): cache_page, a ``{% cache %}`` fragment, cached sessions and
django-cachalot, plus readscale's extras on the same object. Prints one JSON object of
counts and facts for tests/django/test_cache.py to assert.

    python -m tests.django.cacheapp.run REDIS_URL CLUSTER_NODE MEMCACHED_ADDRESS DEAD_ADDRESS
"""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import Any

CALLS: dict[str, int] = {"page": 0, "fragment": 0, "loader": 0}


def page(request: Any) -> Any:
    from django.http import HttpResponse

    CALLS["page"] += 1
    return HttpResponse(f"page {CALLS['page']}")


def fragment_calls() -> int:
    CALLS["fragment"] += 1
    return CALLS["fragment"]


def session_write(request: Any) -> Any:
    from django.http import HttpResponse

    request.session["cart"] = [1, 2, 3]
    return HttpResponse("ok")


def session_read(request: Any) -> Any:
    from django.http import HttpResponse

    return HttpResponse(json.dumps(request.session.get("cart")))


def main(redis_url: str, cluster_node: str, memcached: str, dead: str) -> None:
    # The URLconf imports this module by name: one module, one CALLS.
    sys.modules.setdefault("tests.django.cacheapp.run", sys.modules[__name__])
    import django
    from django.conf import settings

    pickle = {"SERIALIZER": "pickle"}
    settings.configure(
        SECRET_KEY="readscale-django-cache-app-secret-key",
        INSTALLED_APPS=[
            "django.contrib.contenttypes",
            "django.contrib.auth",
            "django.contrib.sessions",
            "cachalot",
            "tests.django.cacheapp",
        ],
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
        CACHES={
            "default": {"BACKEND": "readscale.django.cache.RedisCache", "LOCATION": redis_url, "OPTIONS": pickle},
            "l1": {
                "BACKEND": "readscale.django.cache.RedisCache",
                "LOCATION": redis_url,
                "KEY_PREFIX": "l1",
                "OPTIONS": {**pickle, "L1_MAX_ENTRIES": 1000},
            },
            "json": {
                "BACKEND": "readscale.django.cache.RedisCache",
                "LOCATION": redis_url,
                "KEY_PREFIX": "json",
                "OPTIONS": {"SERIALIZER": "json"},
            },
            "other_key": {
                "BACKEND": "readscale.django.cache.RedisCache",
                "LOCATION": redis_url,
                "OPTIONS": {**pickle, "SIGNING_KEY": "another-signing-key-of-this-site"},
            },
            "cluster": {
                "BACKEND": "readscale.django.cache.RedisClusterCache",
                "LOCATION": cluster_node,
                "OPTIONS": pickle,
            },
            "memcached": {"BACKEND": "readscale.django.cache.MemcachedCache", "LOCATION": memcached, "OPTIONS": pickle},
            "dead": {
                "BACKEND": "readscale.django.cache.RedisCache",
                "LOCATION": dead,
                "OPTIONS": {**pickle, "CLIENT": {"socket_timeout_ms": 100, "connect_timeout_ms": 100}},
            },
        },
        CACHALOT_CACHE="default",
        SESSION_ENGINE="django.contrib.sessions.backends.cache",
        ROOT_URLCONF="tests.django.cacheapp.urls",
        MIDDLEWARE=["django.contrib.sessions.middleware.SessionMiddleware"],
        TEMPLATES=[{"BACKEND": "django.template.backends.django.DjangoTemplates", "OPTIONS": {"debug": False}}],
        DEFAULT_AUTO_FIELD="django.db.models.AutoField",
        ALLOWED_HOSTS=["testserver"],
    )
    django.setup()
    from django.core.cache import caches
    from django.core.management import call_command

    call_command("migrate", run_syncdb=True, verbosity=0)
    for alias in ("default", "l1", "json", "cluster", "memcached"):
        caches[alias].clear()
    out: dict[str, Any] = {}
    out.update(cache_page_and_fragment())
    out.update(sessions())
    out.update(cachalot())
    out.update(extras(caches))
    out.update(serializers(caches, redis_url))
    out.update(variants(caches))
    out.update(async_api())
    print(json.dumps(out, sort_keys=True))


def cache_page_and_fragment() -> dict[str, Any]:
    from django.core.cache import cache
    from django.template import Context, Template
    from django.test import Client

    client = Client()
    bodies = [client.get("/page").content.decode() for _ in range(3)]
    template = Template("{% load cache %}{% cache 60 box %}[{{ calls }}]{% endcache %}")
    rendered = [template.render(Context({"calls": fragment_calls})) for _ in range(3)]
    keys = cache.readscale.backend.client.keys("rs:dj:*")
    return {
        "page_calls": CALLS["page"],
        "page_bodies": bodies,
        "fragment_calls": CALLS["fragment"],
        "fragments": rendered,
        "page_keys_in_redis": sum(b"views.decorators.cache.cache_page" in k for k in keys),
        "fragment_keys_in_redis": sum(b"template.cache.box" in k for k in keys),
    }


def sessions() -> dict[str, Any]:
    from django.core.cache import cache
    from django.test import Client

    client = Client()
    client.get("/session/write")
    read = client.get("/session/read").content.decode()
    keys = cache.readscale.backend.client.keys("rs:dj:*django.contrib.sessions.cache*")
    return {"session_read": json.loads(read), "session_keys_in_redis": len(keys)}


def cachalot() -> dict[str, Any]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from tests.django.cacheapp.models import Item

    Item.objects.create(name="a")
    with CaptureQueriesContext(connection) as first:
        names = [list(Item.objects.values_list("name", flat=True)) for _ in range(3)]
    Item.objects.create(name="b")  # cachalot invalidates the table's queries
    with CaptureQueriesContext(connection):
        again = list(Item.objects.order_by("name").values_list("name", flat=True))
    return {"cachalot_queries": len(first), "cachalot_names": names, "cachalot_after_write": again}


def extras(caches: Any) -> dict[str, Any]:
    from django.core.cache import cache

    def slow_loader() -> str:
        CALLS["loader"] += 1
        time.sleep(0.3)
        return "loaded"

    results: list[str] = []
    threads = [
        threading.Thread(target=lambda: results.append(cache.get_or_load("stampede", slow_loader, timeout=60)))
        for _ in range(20)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    cache.set("tagged", "v", tags=["catalog"])
    before = cache.get("tagged")
    cache.invalidate_tags("catalog")
    after = cache.get("tagged", "gone")
    dead = caches["dead"]
    dead_loads = []
    dead.set("k", 1)  # fails open: logged and counted, not raised
    dead_get = dead.get("k", "default")
    dead_loads.append(dead.get_or_load("k", lambda: "from loader"))
    l1 = caches["l1"]
    l1.set("hot", {"n": 1})
    hits_before = l1.readscale.stats.l1.hits
    l1_values = [l1.get("hot") for _ in range(5)]
    return {
        "stampede_loader_calls": CALLS["loader"],
        "stampede_results": sorted(set(results)),
        "stampede_callers": len(results),
        "tag_before": before,
        "tag_after": after,
        "dead_get": dead_get,
        "dead_loads": dead_loads,
        "dead_l2_available": dead.readscale.l2_available,
        "l1_hits": l1.readscale.stats.l1.hits - hits_before,
        "l1_values": l1_values,
    }


def serializers(caches: Any, redis_url: str) -> dict[str, Any]:
    import pickle  # noqa: TID251 - the test writes the forged entry an attacker would

    from django.core.cache import cache
    from django.core.exceptions import ImproperlyConfigured

    from readscale._core.cache.entry import EntryMeta, encode_envelope
    from readscale.errors import UnserializableValueError

    out: dict[str, Any] = {}
    try:
        from readscale.django.cache import RedisCache

        RedisCache(redis_url, {"OPTIONS": {}})
        out["missing_serializer"] = "accepted"
    except ImproperlyConfigured as exc:
        out["missing_serializer"] = str(exc)
    json_cache = caches["json"]
    try:
        json_cache.set("obj", object())
        out["json_refuses"] = False
    except UnserializableValueError:
        out["json_refuses"] = True
    json_cache.set("plain", {"a": [1, 2]})
    out["json_plain"] = json_cache.get("plain")
    raw_keys = json_cache.readscale.backend.client.keys("rs:dj:json*plain")
    out["json_stores_no_pickle"] = all(b"\x80\x04" not in json_cache.readscale.backend.client.get(k) for k in raw_keys)
    # An attacker who can write to Redis stores a pickle (unsigned) under a key of the site.
    pkey = cache.readscale.key(cache.make_key("victim"))
    meta = EntryMeta(time.time(), 60.0, 0.0, 0.0, 0.0, 0, None, ())

    class Boom:
        def __reduce__(self) -> Any:
            return (CALLS.__setitem__, ("pwned", 1))

    forged = encode_envelope(meta, 3, b"\x00" * 32 + pickle.dumps(Boom()))
    cache.readscale.backend.client.set(pkey, forged)
    out["forged_get"] = cache.get("victim", "miss")
    out["forged_ran"] = CALLS.get("pwned", 0)
    cache.set("signed", {"ok": True})
    out["signed_get"] = cache.get("signed")
    out["other_key_get"] = caches["other_key"].get("signed", "miss")  # same keys, another secret
    return out


def variants(caches: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for alias in ("default", "cluster", "memcached"):
        c = caches[alias]
        c.set("a", 1)
        c.set_many({"b": 2, "c": 3})
        added = [c.add("a", 9), c.add("d", 4)]
        c.incr("a", 10)
        c.decr("b")
        touched = c.touch("c", 100)
        many = c.get_many(["a", "b", "c", "d", "z"])
        c.delete_many(["d"])
        c.set("counter", 0)

        def bump(cache: Any = c) -> None:
            for _ in range(50):
                cache.incr("counter")

        threads = [threading.Thread(target=bump) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        counter = c.get("counter")
        # An item the server still keeps past its entry's own expiry (memcached keeps
        # items up to a second longer): a miss for get, so add must take its place.
        from readscale._core.cache.entry import EntryMeta, encode_envelope

        pkey = c.readscale.key(c.make_key("expired"))
        meta = EntryMeta(time.time() - 10, 1.0, 0.0, 0.0, 0.0, 0, None, ())
        c.readscale.backend.set(pkey, encode_envelope(meta, c._codec.id, c._codec.encode("old")), 60)
        expired = [c.get("expired", "miss"), c.add("expired", "new"), c.get("expired")]
        c.clear()
        out[alias] = {
            "added": added,
            "touched": touched,
            "many": many,
            "counter": counter,
            "expired": expired,
            "after_clear": c.get("a", "cleared"),
        }
    return out


def async_api() -> dict[str, Any]:
    """Django's async methods (``aget``...: the sync ones in a thread) on the backend."""
    import asyncio

    from django.core.cache import cache

    async def run() -> dict[str, Any]:
        await cache.aset("async", 1)
        added = [await cache.aadd("async", 2), await cache.aadd("async2", 2)]
        incremented = await cache.aincr("async", 5)
        many = await cache.aget_many(["async", "async2", "none"])
        touched = await cache.atouch("async", 60)
        await cache.adelete_many(["async2"])
        return {
            "added": added,
            "incremented": incremented,
            "many": many,
            "touched": touched,
            "after": await cache.aget("async2", "gone"),
        }

    return {"async": asyncio.run(run())}


if __name__ == "__main__":
    main(*sys.argv[1:5])
