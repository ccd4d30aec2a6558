"""Django's own cache test suite run against readscale's Django cache backends (and
django-redis, for comparison): ``run.py`` runs it in a process of its own,
``allowlist.py`` says which tests may fail and why, tests/django/test_cache_suite.py
gates on both."""
