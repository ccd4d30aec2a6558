"""The application cache's rules: keys, entries, freshness, policies, the breaker, fills.

Driven by :mod:`readscale._async.cache.cache` (and its generated sync twin); the public face
is :mod:`readscale` and :mod:`readscale.cache`.
"""
