"""Edge purgers, the after-commit purge queue and prewarming, async and sync.

The async classes (``AsyncVarnishPurger``, ...) are written once in
``readscale._async.purge.base``; the sync ones (``VarnishPurger``, ...) are generated from
them. An invalidation source that knows tags calls ``purge_tags(tags)`` on any of them.
"""

try:
    import httpx  # noqa: F401 (the purgers speak HTTP through httpx)
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("readscale.http.purge needs httpx: pip install 'readscale[starlette]' (or httpx)") from exc

from readscale._async.purge.base import AsyncPurger, PurgeResult, PurgeStats, RetryPolicy
from readscale._async.purge.queue import AsyncPurgeQueue, PrewarmResult
from readscale._async.purge.queue import prewarm as async_prewarm
from readscale._async.purge.varnish import AsyncVarnishPurger
from readscale._async.purge.vendors import (
    AsyncCloudflarePurger,
    AsyncFastlyPurger,
    AsyncRecordingPurger,
)
from readscale._sync.purge.base import Purger
from readscale._sync.purge.queue import PurgeQueue, prewarm
from readscale._sync.purge.varnish import VarnishPurger
from readscale._sync.purge.vendors import CloudflarePurger, FastlyPurger, RecordingPurger

__all__ = [
    "AsyncCloudflarePurger",
    "AsyncFastlyPurger",
    "AsyncPurgeQueue",
    "AsyncPurger",
    "AsyncRecordingPurger",
    "AsyncVarnishPurger",
    "CloudflarePurger",
    "FastlyPurger",
    "PrewarmResult",
    "PurgeQueue",
    "PurgeResult",
    "PurgeStats",
    "Purger",
    "RecordingPurger",
    "RetryPolicy",
    "VarnishPurger",
    "async_prewarm",
    "prewarm",
]
