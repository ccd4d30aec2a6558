"""readscale as Django's cache: ``CACHES`` backends over readscale's own cache.

    CACHES = {
        "default": {
            "BACKEND": "readscale.django.cache.RedisCache",   # or RedisClusterCache, MemcachedCache
            "LOCATION": "redis://127.0.0.1:6379/0",
            "OPTIONS": {"SERIALIZER": "pickle"},               # named: "pickle", "json" or "msgpack"
        }
    }

``cache_page``, ``{% cache %}``, cached sessions and apps on ``django.core.cache``
(django-cachalot) then read through readscale's tiers (an optional in-process L1 kept
coherent by the invalidation bus, fail-open reads and writes behind a circuit breaker),
and the same object has readscale's extras: ``cache.get_or_load(key, loader)`` (one load
per key however many requests miss at once), ``cache.set(key, value, tags=[...])`` and
``cache.invalidate_tags(...)``.

``OPTIONS['SERIALIZER']`` has no default: readscale stores no pickle unless it is named.
Django's cache contract stores any picklable object (``cache_page`` stores the
``HttpResponse``), so a Django site names ``"pickle"``; readscale then signs every entry
(HMAC-SHA256, with a key derived from ``SECRET_KEY`` or ``OPTIONS['SIGNING_KEY']``), so
someone who can write to the cache server cannot make the site unpickle their bytes (an
unsigned or badly signed entry is a counted miss). ``"json"`` and ``"msgpack"`` store no
pickle at all and refuse, at ``set``, a value they cannot round-trip. The docs page
"Django cache" has every option and how Django's semantics map.
"""

from readscale.django.cache._backend import FOREVER, MemcachedCache, ReadscaleCache, RedisCache, RedisClusterCache

__all__ = ["FOREVER", "MemcachedCache", "ReadscaleCache", "RedisCache", "RedisClusterCache"]
