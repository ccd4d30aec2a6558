"""What a response's ``Set-Cookie`` does to the client's session: pure rules, no clock.

A sign-out is a response that removes a cookie carrying identity: browsers keep the
signed-out user's private pages in their back/forward cache (whole pages, in memory) and
restore them on Back without asking, whatever ``Cache-Control: private`` says, until the
site's cache is cleared. Such a response therefore carries ``Clear-Site-Data: "cache"``
(W3C Clear Site Data), which empties the HTTP cache and the back/forward cache for the
origin. Browsers honour it only in a secure context (https, or http on localhost).
"""

from __future__ import annotations

from collections.abc import Set as AbstractSet

from readscale._core.http.dates import parse_http_date
from readscale.errors import HeaderError

CLEAR_SITE_CACHE = '"cache"'


def removes_cookie(set_cookie: str, ignored: AbstractSet[str], now: int) -> bool:
    """Whether ``set_cookie`` (one Set-Cookie value) removes a cookie not in ``ignored``.

    Removal is RFC 6265's: a ``Max-Age`` of zero or less (it takes precedence over
    Expires, §5.3 step 3), else an ``Expires`` date before ``now`` (epoch seconds). An
    attribute that does not parse is ignored, as a user agent ignores it (§5.2.1-2).
    """
    pair, _, attributes = set_cookie.partition(";")
    name, eq, _ = pair.partition("=")
    name = name.strip()
    if not eq or not name or name in ignored:
        return False
    expires: str | None = None
    for attribute in attributes.split(";"):
        key, _, value = attribute.partition("=")
        key, value = key.strip().lower(), value.strip()
        if key == "max-age":
            digits = value[1:] if value.startswith("-") else value
            if digits.isascii() and digits.isdigit():
                return value.startswith("-") or int(digits) == 0
        elif key == "expires":
            expires = value
    if expires is None:
        return False
    try:
        return parse_http_date(expires, header="Set-Cookie Expires", now=now) < now
    except HeaderError:
        return False
