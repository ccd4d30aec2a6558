"""What every chart of :mod:`readscale.report.svg` draws with: escaping, coordinates and
numbers written compactly, text measured and cut to fit, round axis ticks.

Kept apart from the charts so each chart reads as its layout, and so the HTML page
(:mod:`readscale.report.html`) escapes exactly as the charts do.
"""

from __future__ import annotations

import math
import re
import sys

__all__ = ["axis_ticks", "coord", "escape", "fit", "human", "text_width", "value_label"]

_FORBIDDEN = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def escape(text: object) -> str:
    """``text`` made safe inside an XML/HTML element or a quoted attribute.

    Escapes ``& < > " '`` and drops the characters XML 1.0 forbids (most C0 controls).
    """
    s = _FORBIDDEN.sub("", str(text))
    return (
        s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;").replace("'", "&#39;")
    )


def coord(x: float) -> str:
    """A coordinate, rounded to 0.01 and written without trailing zeros."""
    s = f"{x:.2f}".rstrip("0").rstrip(".")
    return "0" if s in ("-0", "") else s


def human(v: float) -> str:
    """A compact number for axes and tooltips: 120 / 1.23k / 4.5M / 0.07."""
    a = abs(v)
    if a >= 1e9:
        return f"{v / 1e9:.3g}G"
    if a >= 1e6:
        return f"{v / 1e6:.3g}M"
    if a >= 1e3:
        return f"{v / 1e3:.3g}k"
    if a >= 100 or v == int(v):
        return f"{v:,.0f}"
    return f"{v:.3g}"


def text_width(text: str, size: float) -> float:
    return 0.58 * size * len(text)


def fit(text: str, room: float, size: float) -> str:
    """``text`` cut with an ellipsis to about ``room`` pixels (the full text stays in ``<title>``)."""
    fits = max(int(room / (0.58 * size)), 2)
    return text if len(text) <= fits else text[: fits - 1] + "\u2026"


def axis_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values (1, 2, 5 times a power of ten) covering [lo, hi]."""
    if not (hi - lo) / count >= sys.float_info.min:  # flat, or a span floats cannot divide
        hi = lo + 1.0
    raw = (hi - lo) / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.floor(lo / step) * step
    ticks, t = [], first
    while t < hi + step * 0.5:
        ticks.append(round(t, 12))
        t += step
    return ticks


def value_label(value: float, unit: str, fmt: str | None) -> str:
    """A value label: ``fmt`` if given, else exact thousands (59,200) or 3 significant digits."""
    if fmt:
        text = fmt.format(value)
    elif abs(value) >= 100 or value == int(value):
        text = f"{value:,.0f}"
    else:
        text = f"{value:.3g}"
    return f"{text} {unit}".rstrip()
