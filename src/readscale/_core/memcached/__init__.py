"""Memcached's meta protocol, sans I/O: requests, replies, and what items and leases mean.

Driven by :mod:`readscale._async.backends.memcached`.
"""
