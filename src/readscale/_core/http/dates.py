"""HTTP-date (RFC 9110 §5.6.7): parse the three formats strictly, render IMF-fixdate.

Invariants:
- Times are integer seconds since the Unix epoch, UTC; HTTP-date has one-second
  resolution, so a validator compared with ``<=`` never suffers float rounding.
- Parsing accepts IMF-fixdate, the obsolete RFC 850 and asctime formats (recipients
  must), with exact spacing and case-sensitive names as the grammar says; anything
  else raises :class:`HeaderError`.
- RFC 850's two-digit year is resolved with ``now`` when given (a date more than 50
  years ahead is moved back a century, §5.6.7); without ``now``, 70..99 is 19xx.
- No clock is read here: ``now`` is an argument.
"""

from __future__ import annotations

import calendar

from readscale.errors import HeaderError

_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_LONG_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_SECONDS_PER_CENTURY_HALF = 50 * 365 * 86400


def format_http_date(epoch: float) -> str:
    """IMF-fixdate for ``epoch`` seconds (fractions are dropped)."""
    y, mo, d, h, mi, s, wd, _, _ = _gmtime(int(epoch))
    return f"{_DAYS[wd]}, {d:02d} {_MONTHS[mo - 1]} {y:04d} {h:02d}:{mi:02d}:{s:02d} GMT"


def _gmtime(t: int) -> tuple[int, int, int, int, int, int, int, int, int]:
    days, rem = divmod(t, 86400)
    h, rem = divmod(rem, 3600)
    mi, s = divmod(rem, 60)
    # civil-from-days (Howard Hinnant's algorithm), valid for the proleptic Gregorian calendar
    z = days + 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    y = yoe + era * 400
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    mo = mp + 3 if mp < 10 else mp - 9
    y += mo <= 2
    wd = (days + 3) % 7  # 1970-01-01 was a Thursday (index 3, Monday = 0)
    return y, mo, d, h, mi, s, wd, 0, 0


def _digits(header: str, value: str, text: str, width: int) -> int:
    if len(text) != width or not text.isascii() or not text.isdigit():
        raise HeaderError(header, value, "not an HTTP-date")
    return int(text)


def _time_of_day(header: str, value: str, text: str) -> tuple[int, int, int]:
    parts = text.split(":")
    if len(parts) != 3:
        raise HeaderError(header, value, "not an HTTP-date")
    h, m, s = (_digits(header, value, p, 2) for p in parts)
    if h > 23 or m > 59 or s > 60:  # 60: a leap second is allowed by the grammar
        raise HeaderError(header, value, "time of day out of range")
    return h, m, s


def _to_epoch(header: str, value: str, y: int, mon: str, d: int, hms: tuple[int, int, int]) -> int:
    if mon not in _MONTHS:
        raise HeaderError(header, value, f"unknown month {mon!r}")
    mo = _MONTHS.index(mon) + 1
    if not 1 <= y <= 9999:
        raise HeaderError(header, value, "year out of range")
    if not 1 <= d <= calendar.monthrange(y, mo)[1]:
        raise HeaderError(header, value, "day out of range for the month")
    return calendar.timegm((y, mo, d, *hms))


def parse_http_date(value: str, *, header: str = "Date", now: int | None = None) -> int:
    """Seconds since the epoch for an HTTP-date in any of the three formats."""
    parts = value.split(" ")
    if len(parts) == 6 and parts[0].endswith(",") and parts[0][:-1] in _DAYS and parts[5] == "GMT":
        # IMF-fixdate: Sun, 06 Nov 1994 08:49:37 GMT
        d = _digits(header, value, parts[1], 2)
        y = _digits(header, value, parts[3], 4)
        return _to_epoch(header, value, y, parts[2], d, _time_of_day(header, value, parts[4]))
    if len(parts) == 4 and parts[0].endswith(",") and parts[0][:-1] in _LONG_DAYS and parts[3] == "GMT":
        # rfc850-date: Sunday, 06-Nov-94 08:49:37 GMT
        dmy = parts[1].split("-")
        if len(dmy) != 3:
            raise HeaderError(header, value, "not an HTTP-date")
        d = _digits(header, value, dmy[0], 2)
        yy = _digits(header, value, dmy[2], 2)
        hms = _time_of_day(header, value, parts[2])
        if now is None:
            y = 1900 + yy if yy >= 70 else 2000 + yy
        else:
            current_year = _gmtime(now)[0]
            y = (current_year // 100) * 100 + yy
            if _to_epoch(header, value, y, dmy[1], d, hms) > now + _SECONDS_PER_CENTURY_HALF:
                y -= 100
        return _to_epoch(header, value, y, dmy[1], d, hms)
    if len(value) == 24 and value[3] == " " and value[:3] in _DAYS:
        # asctime-date: Sun Nov  6 08:49:37 1994 (day padded with a space)
        mon, day, tod, year = value[4:7], value[8:10], value[11:19], value[20:24]
        if value[7] != " " or value[10] != " " or value[19] != " ":
            raise HeaderError(header, value, "not an HTTP-date")
        day_text = day[1] if day[0] == " " else day
        d = _digits(header, value, day_text, len(day_text))
        y = _digits(header, value, year, 4)
        return _to_epoch(header, value, y, mon, d, _time_of_day(header, value, tod))
    raise HeaderError(header, value, "not an HTTP-date (expected e.g. 'Sun, 06 Nov 1994 08:49:37 GMT')")
