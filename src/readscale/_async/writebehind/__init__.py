"""The write-behind driver: the producer, the queue, the flusher and the PostgreSQL writer."""

from readscale._shared.lazy import require

# The queue is a Redis Stream: without redis-py, one line naming the extra, not a traceback.
require("readscale.writebehind", "redis")
