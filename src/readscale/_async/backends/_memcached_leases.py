"""The lease and tombstone vocabulary of the Memcached backend: the keys beside an entry
(tombstone, floor, refresh lock), LSNs as fixed-width hex, and the tokens the backend
issues for a lease, a ticket or a refresh lease (:func:`parse_right` refuses any other).
"""

from __future__ import annotations

import time
from typing import NamedTuple

from readscale._core.cache.lease import TICKET_PREFIX
from readscale._core.memcached.items import parse_token
from readscale._core.memcached.replies import (
    AnyReply,
    MetaProtocolError,
    Reply,
    Status,
)
from readscale._core.memcached.requests import MetaGet

REFRESH_PREFIX = "r:"
TOMB_GET = MetaGet("", ttl=False)


def refresh_key_of(key: str) -> str:
    return f"{key}:rl"


def tomb_key_of(key: str) -> str:
    """A key's tombstone (its LSN), kept on the key's server."""
    return f"{key}:tomb"


def floor_key_of(counter: str) -> str:
    return f"{counter}:floor"


def clock_ms() -> int:
    return int(time.time() * 1000)


def lsn_hex(lsn: int | None) -> str:
    return "-" if lsn is None else f"{lsn:016x}"


def parse_lsn_hex(raw: bytes | str | None) -> int | None:
    if not raw or raw in ("-", b"-"):
        return None
    try:
        return int(raw, 16)
    except ValueError:
        return None


def tomb_lsn(reply: AnyReply) -> int | None:
    if isinstance(reply, Reply) and reply.status is Status.VA:
        return parse_lsn_hex(reply.value)
    if isinstance(reply, Reply) and reply.status is Status.EN:
        return None
    raise unexpected_reply(reply, "mg (tombstone)")


def lease_token(cas: int, floor: int | None) -> str:
    return f"{cas}.{lsn_hex(floor)}"


class Right(NamedTuple):
    cas: int | None  # None: the key was absent (a ticket's store only adds)
    floor: int | None
    deadline_ms: int | None = None  # tickets only
    refresh: str | None = None  # refresh leases only


def parse_right(token: str) -> Right | None:
    """A token this backend issued, or None for anything else (a forged or foreign one)."""
    try:
        if token.startswith(TICKET_PREFIX):
            cas_text, floor, deadline = token[len(TICKET_PREFIX) :].split(".")
            cas = None if cas_text == "add" else parse_token(cas_text)
            if cas is None and cas_text != "add":
                return None
            return Right(cas, parse_lsn_hex(floor), int(deadline))
        if token.startswith(REFRESH_PREFIX):
            ident, cas_text, floor = token[len(REFRESH_PREFIX) :].split(".")
            cas = parse_token(cas_text)
            return None if cas is None else Right(cas, parse_lsn_hex(floor), refresh=ident)
        cas_text, floor = token.split(".")
        cas = parse_token(cas_text)
        return None if cas is None else Right(cas, parse_lsn_hex(floor))
    except ValueError:
        return None


def unexpected_reply(reply: AnyReply, request: str) -> MetaProtocolError:
    return MetaProtocolError(f"unexpected reply to {request}: {reply!r}"[:200])
