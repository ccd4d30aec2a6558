"""Plain hits read straight from the bytes: the hot path of ``get`` and ``get_many``.

A reply to readscale's ``mg <key> v f c`` (in a pipeline ``... q O<i>``) of the form
``VA <n> f<flags> c<cas>`` (``O<i>``): no lease flag (``W``, ``Z``), not stale (``X``)
and client flags other than a fence's, is a hit whatever else the key holds
(``items.item_state`` reads it as ``Found``). Its value is taken from the buffer with a
few ``find``/``split`` calls and one slice, without building a reply, its flags or an
item state: most of a hit's cost in Python was that. Every other reply (a miss, a lease,
a fence, an error, a reply whose flags come in another order) goes through
``replies.parse_reply`` and the caller reads it as before, so this module changes speed,
never meaning; ``tests/_core/memcached/test_hits.py`` checks both give the same answers
for any split of any stream.

In a pipeline, the hits after the first are read as a run: one match per hit, of the CRLF
closing the value before it and the next header with readscale's own client flags, and
small numbers looked up rather than parsed. In pure Python a reply's cost is its calls,
so a hit costs five (the match, its groups, its end, two lookups) plus its slice.
"""

from __future__ import annotations

import re

from readscale._core.memcached.items import FENCE_FLAGS, VALUE_FLAGS
from readscale._core.memcached.replies import MAX_VALUE, AnyReply, MetaProtocolError, parse_reply

__all__ = ["read_one", "read_pipeline"]


def _beyond(extra: int) -> MetaProtocolError:
    return MetaProtocolError(f"{extra} bytes beyond the expected replies")


_PLAIN_ONE = re.compile(rb"VA (\d{1,10}) f(\d{1,10}) c\d{1,20}\r\n")


def read_one(data: bytes) -> bytes | AnyReply | None:
    """``data`` holds the reply to one ``mg ... v f c``: the value of a plain hit, else
    the reply; None while more bytes are needed. Raises MetaProtocolError on garbage or
    on bytes past the reply (the stream is out of step)."""
    plain = _PLAIN_ONE.match(data)
    if plain is not None:
        size, f = plain.groups()
        start = plain.end()
        end = start + int(size)
        if len(data) == end + 2 and data[end:] == b"\r\n" and int(f) != FENCE_FLAGS:
            return data[start:end]
    got = parse_reply(data, 0)
    if got is None:
        return None
    reply, end = got
    if end != len(data):
        raise _beyond(len(data) - end)
    return reply


# A fence's client flags (any number of leading zeros) never match: it is not a hit.
_PLAIN_HIT = re.compile(rb"VA (\d{1,10}) f(?!0*%d )\d{1,10} c\d{1,20} O(\d{1,32})\r\n" % FENCE_FLAGS)
# The next reply of a run of hits, matched from the end of the value before it: the CRLF
# that closes that value, then the header of a hit with readscale's own client flags (any
# other hit, or a hit whose header this misses, leaves the run for the general path).
_NEXT_HIT = re.compile(rb"\r\nVA (\d{1,10}) f%d c\d{1,20} O(\d{1,32})\r\n" % VALUE_FLAGS)
# Small decimal numbers (opaque tokens, short values' sizes) by dict rather than int():
# a lookup costs half of int()'s call.
_SMALL = {b"%d" % n: n for n in range(4096)}


def read_pipeline(data: bytes, pos: int, values: list[bytes | None], others: list[AnyReply]) -> tuple[int, bool]:
    """Read the replies to quiet ``mg ... v f c q O<i>`` requests closed by ``mn`` from
    ``data[pos:]``: a plain hit's value goes to ``values[i]``, every other reply
    (including a hit whose ``i`` is out of range) to ``others``, in order. Returns where
    the unread bytes start and whether ``MN`` was read (it is consumed). Raises
    MetaProtocolError on garbage."""
    count = len(values)
    length = len(data)
    match = _PLAIN_HIT.match
    run = _NEXT_HIT.match
    small = _SMALL.get
    startswith = data.startswith
    while True:
        plain = match(data, pos)
        if plain is not None:
            size, o = plain.groups()
            start = plain.end()
            end = start + int(size)
            if length < end + 2:
                if end - start <= MAX_VALUE:
                    return pos, False
            else:
                i = int(o)
                if i < count and startswith(b"\r\n", end):
                    values[i] = data[start:end]
                    pos = end + 2
                    # The hits that follow, each matched with the CRLF before it: one
                    # regex match per hit, and the loop's only other steps are the
                    # numbers, the bounds and the slice.
                    while (plain := run(data, end)) is not None:
                        size, o = plain.groups()
                        start = plain.end()
                        n = small(size)
                        stop = start + (int(size) if n is None else n)
                        i = small(o, count)
                        pos = end + 2  # the value before is closed: this reply starts here
                        if stop + 2 > length or i >= count:
                            break  # unfinished, or out of range: the general path decides
                        values[i] = data[start:stop]
                        end = stop
                    else:
                        if startswith(b"\r\n", end):
                            pos = end + 2
                        # else pos is the header of the hit whose value is not closed: read
                        # again below, it is refused as garbage.
                    continue
        elif startswith(b"MN\r\n", pos):
            return pos + 4, True
        got = parse_reply(data, pos)
        if got is None:
            return pos, False
        reply, pos = got
        others.append(reply)
