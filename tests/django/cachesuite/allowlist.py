"""The tests of Django's cache suite that readscale's backends may fail, one reason each.

An entry that passes is an error too (tests/django/test_cache_suite.py): the list only
shrinks. django-redis runs the same suite for comparison and is not gated.
"""

_MEMCACHED_KEYS = (
    "memcached cannot hold this key (whitespace, or over 250 bytes): like Django's own memcached "
    "backends (whose BaseMemcachedTests override this test to expect it), MemcachedCache raises "
    "InvalidCacheKey instead of warning and storing a key the server would refuse"
)

ALLOWED: dict[str, dict[str, str]] = {
    "readscale-redis": {},
    "readscale-memcached": {
        "test_invalid_key_characters": _MEMCACHED_KEYS,
        "test_invalid_key_length": _MEMCACHED_KEYS,
        "test_invalid_with_version_key_length": _MEMCACHED_KEYS,
    },
}
