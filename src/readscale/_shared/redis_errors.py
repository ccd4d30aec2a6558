"""Which errors of redis-py mean "the connection was lost" rather than a bug."""

from __future__ import annotations

#: Where redis-py (and asyncio under it) write to a connection's transport.
_TRANSPORT_FILES = ("/redis/asyncio/connection.py", "/redis/connection.py", "/asyncio/streams.py",
                    "/asyncio/selector_events.py")  # fmt: skip


def closed_transport_race(exc: BaseException) -> bool:
    """True for the AttributeError/TypeError redis-py's asyncio client raises when a
    connection is closed while a command writes to it (the writer is None, or the
    transport's callbacks are gone): redis/redis-py#3546 and #4287, seen here when a
    Redis Cluster primary dies. It is a lost connection, not a bug in the caller; any
    other AttributeError or TypeError is a bug and must not pass for an outage.
    """
    if not isinstance(exc, AttributeError | TypeError) or "NoneType" not in str(exc):
        return False
    tb = exc.__traceback__
    last = None
    while tb is not None:
        last = tb.tb_frame.f_code.co_filename
        tb = tb.tb_next
    return last is not None and last.replace("\\", "/").endswith(_TRANSPORT_FILES)
