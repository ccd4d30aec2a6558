"""The servers of the Memcached backend: addresses, one connection pool per server, and one
round trip on a connection (write a request, read its replies).
"""

from __future__ import annotations

from readscale._core.memcached.replies import (
    AnyReply,
    ErrorKind,
    ErrorReply,
    MetaParser,
    MetaProtocolError,
    Reply,
    Status,
)
from readscale._core.memcached.requests import (
    MetaGet,
    MetaNoop,
)
from readscale._shared.transport import AsyncStreamPool, AsyncTcpStream, Endpoint
from readscale.errors import CacheUnavailableError, ConfigurationError

NAME = "memcached"
NOOP = MetaNoop().encode()
QUIET_GET = MetaGet("", client_flags=True, cas=True, quiet=True)


def parse_address(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")  # "[::1]:11211"
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigurationError(f"a memcached address is host:port, got {address!r}")
    return host, int(port)


class Server:
    __slots__ = ("endpoint", "item_size_max", "pool")

    def __init__(self, endpoint: Endpoint, item_size_max: int | None) -> None:
        self.endpoint = endpoint
        self.item_size_max = item_size_max  # learnt from `stats settings` on first connect
        self.pool: AsyncStreamPool


async def round_trip(stream: AsyncTcpStream, payload: bytes, until: Status | None) -> list[AnyReply]:
    """Write ``payload``; read one reply, or (``until``) every reply before that status."""
    await stream.write(payload)
    parser = MetaParser()
    replies: list[AnyReply] = []
    while True:
        reply = parser.next_reply()
        if reply is None:
            parser.feed(await stream.read())
            continue
        if isinstance(reply, ErrorReply) and reply.kind is not ErrorKind.SERVER_ERROR:
            # memcached may now read the rest of the request as commands: the caller
            # discards this stream.
            message = f"{NAME} {stream.endpoint.address} refused a command: {reply.kind.value} {reply.message}"
            raise CacheUnavailableError(message, backend=NAME)
        if until is None:
            replies.append(reply)
            break
        if isinstance(reply, Reply) and reply.status is until:
            break
        replies.append(reply)
    if parser.buffered:
        raise MetaProtocolError(f"{parser.buffered} bytes beyond the expected replies")
    return replies
