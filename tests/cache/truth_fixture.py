"""A truth function for the `readscale consistency check` CLI test: the 'database' is a
Redis hash the test writes."""

from __future__ import annotations

import os

import redis


def truth(key: str) -> str | None:
    client = redis.Redis.from_url(os.environ["TRUTH_REDIS_URL"], protocol=2)
    value = client.hget(os.environ["TRUTH_HASH"], key)
    client.close()
    return value.decode() if value is not None else None
