"""A small Django site on readscale's cache backend (run.py), for tests/django/test_cache.py."""
