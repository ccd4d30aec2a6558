"""Small, dependency-free SVG charts for readscale's reports: no JavaScript, no CSS.

Four functions, each returning one ``<svg>`` element as text, ready to write to a
``.svg`` file or to paste inside an HTML page::

    from readscale.report.svg import bar_chart, funnel_chart, line_chart

    funnel_chart([("browser", 59_200), ("edge", 22_000), ("app cache", 9_600),
                  ("replicas", 8_400), ("primary", 800)], title="Who serves 100,000 requests", unit="req/s")
    bar_chart({"browser": 0.0, "edge": 0.07, "app cache": 0.28}, title="Latency per layer", unit="ms")
    line_chart({"hit ratio": [(0, 0.2), (10, 0.6), (20, 0.8)]}, title="Hit ratio", x_label="s", y_label="ratio")
    stacked_bar_chart({"measured": {"edge": 0.4, "primary": 0.6}, "predicted": {"edge": 0.5, "primary": 0.5}})

Guarantees:

- Well-formed XML: every label and title is escaped (``& < > " '``) and characters XML
  1.0 forbids are dropped, so no label can inject markup.
- Deterministic: the same input gives byte-identical output (coordinates are rounded
  to 0.01, colours come from a fixed palette in input order).
- No ``id`` attributes, so many charts can share one HTML page; the accessible name is
  the ``<title>`` child and the ``aria-label``.

Values must be finite; bars and funnel segments must also be >= 0. A bad value raises
:class:`~readscale.errors.ConfigurationError` naming its label.
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Collection, Iterable, Mapping, Sequence

from readscale.errors import ConfigurationError

__all__ = ["PALETTE", "bar_chart", "escape", "funnel_chart", "line_chart", "stacked_bar_chart"]

# Okabe & Ito's palette: distinguishable with the common colour-vision deficiencies.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#D55E00", "#56B4E9", "#F0E442", "#000000")
FONT = "system-ui, -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif"
INK = "#222222"
MUTED = "#666666"
GRID = "#dddddd"
_FORBIDDEN = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")

Series = Mapping[str, float] | Sequence[tuple[str, float]]


def escape(text: object) -> str:
    """``text`` made safe inside an XML/HTML element or a quoted attribute.

    Escapes ``& < > " '`` and drops the characters XML 1.0 forbids (most C0 controls).
    """
    s = _FORBIDDEN.sub("", str(text))
    return (
        s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;").replace("'", "&#39;")
    )


_esc = escape


def _n(x: float) -> str:
    """A coordinate, rounded to 0.01 and written without trailing zeros."""
    s = f"{x:.2f}".rstrip("0").rstrip(".")
    return "0" if s in ("-0", "") else s


def _human(v: float) -> str:
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


def _text_width(text: str, size: float) -> float:
    return 0.58 * size * len(text)


def _fit(text: str, room: float, size: float) -> str:
    """``text`` cut with an ellipsis to about ``room`` pixels (the full text stays in ``<title>``)."""
    fits = max(int(room / (0.58 * size)), 2)
    return text if len(text) <= fits else text[: fits - 1] + "\u2026"


def _items(series: Series, what: str, *, non_negative: bool = True) -> list[tuple[str, float]]:
    pairs = list(series.items()) if isinstance(series, Mapping) else list(series)
    out = []
    for label, value in pairs:
        v = float(value)
        if not math.isfinite(v) or (non_negative and v < 0):
            rule = "a finite number >= 0" if non_negative else "a finite number"
            raise ConfigurationError(f"{what}: the value of {label!r} must be {rule}, got {value!r}")
        out.append((str(label), v))
    return out


def _ticks(lo: float, hi: float, count: int = 5) -> list[float]:
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


def _svg(width: float, height: float, title: str, body: Iterable[str]) -> str:
    label = _esc(title or "chart")
    head = (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_n(width)}" height="{_n(height)}" '
        f'viewBox="0 0 {_n(width)} {_n(height)}" role="img" aria-label="{label}" '
        f'font-family="{_esc(FONT)}" font-size="12">'
    )
    parts = [head, f"<title>{label}</title>", f'<rect width="{_n(width)}" height="{_n(height)}" fill="#ffffff"/>']
    if title:
        parts.append(f'<text x="12" y="22" font-size="15" font-weight="600" fill="{INK}">{_esc(title)}</text>')
    parts.extend(body)
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def _label(value: float, unit: str, fmt: str | None) -> str:
    """A value label: ``fmt`` if given, else exact thousands (59,200) or 3 significant digits."""
    if fmt:
        text = fmt.format(value)
    elif abs(value) >= 100 or value == int(value):
        text = f"{value:,.0f}"
    else:
        text = f"{value:.3g}"
    return f"{text} {unit}".rstrip()


def bar_chart(
    series: Series,
    *,
    title: str = "",
    unit: str = "",
    horizontal: bool = True,
    width: int = 640,
    value_format: str | None = None,
    colors: Sequence[str] = PALETTE,
) -> str:
    """Bars, one per ``(label, value)`` in order, each labelled with its value and ``unit``.

    ``series``: a mapping or a sequence of pairs; values finite and >= 0.
    ``horizontal``: bars grow rightwards (labels on the left), else upwards.
    ``value_format``: a ``str.format`` pattern for value labels (default: compact).
    """
    items = _items(series, "bar_chart")
    top = 36 if title else 12
    if not items:
        return _svg(width, top + 40, title, [f'<text x="12" y="{top + 20}" fill="{MUTED}">no data</text>'])
    peak = max(v for _, v in items) or 1.0
    body: list[str] = []
    if horizontal:
        row = 26
        label_w = min(max(_text_width(lbl, 12) for lbl, _ in items) + 16, width * 0.4)
        value_w = max(_text_width(_label(v, unit, value_format), 12) for _, v in items) + 12
        span = max(width - label_w - value_w - 12, 40)
        height = top + row * len(items) + 12
        for i, (lbl, v) in enumerate(items):
            y = top + i * row
            w = span * v / peak
            color = colors[i % len(colors)]
            body.append(
                f'<text x="{_n(label_w - 8)}" y="{_n(y + 17)}" text-anchor="end" fill="{INK}">'
                f"{_esc(_fit(lbl, label_w - 16, 12))}</text>"
            )
            body.append(
                f'<rect x="{_n(label_w)}" y="{_n(y + 4)}" width="{_n(w)}" height="{row - 8}" fill="{color}">'
                f"<title>{_esc(lbl)}: {_esc(_label(v, unit, value_format))}</title></rect>"
            )
            body.append(
                f'<text x="{_n(label_w + w + 6)}" y="{_n(y + 17)}" fill="{INK}">'
                f"{_esc(_label(v, unit, value_format))}</text>"
            )
        return _svg(width, height, title, body)
    plot_h = 220
    slot = (width - 24) / len(items)
    bar_w = max(min(slot * 0.6, 80), 4)
    base = top + 20 + plot_h
    for i, (lbl, v) in enumerate(items):
        x = 12 + slot * i + (slot - bar_w) / 2
        h = plot_h * v / peak
        cx = x + bar_w / 2
        color = colors[i % len(colors)]
        body.append(
            f'<rect x="{_n(x)}" y="{_n(base - h)}" width="{_n(bar_w)}" height="{_n(h)}" fill="{color}">'
            f"<title>{_esc(lbl)}: {_esc(_label(v, unit, value_format))}</title></rect>"
        )
        body.append(
            f'<text x="{_n(cx)}" y="{_n(base - h - 5)}" text-anchor="middle" fill="{INK}">'
            f"{_esc(_label(v, unit, value_format))}</text>"
        )
        body.append(f'<text x="{_n(cx)}" y="{_n(base + 16)}" text-anchor="middle" fill="{INK}">{_esc(lbl)}</text>')
    body.append(f'<line x1="12" y1="{_n(base)}" x2="{_n(width - 12)}" y2="{_n(base)}" stroke="{MUTED}"/>')
    return _svg(width, base + 28, title, body)


def funnel_chart(
    layers: Series,
    *,
    title: str = "",
    unit: str = "",
    width: int = 640,
    colors: Sequence[str] = PALETTE,
) -> str:
    """One stacked bar: each layer's part of the whole, in order, with a legend.

    ``layers``: ``(name, amount)`` pairs (amounts >= 0), e.g. the requests each layer
    absorbed. Segments wide enough carry their share in percent; the legend gives the
    amount, ``unit`` and share of every layer.
    """
    items = _items(layers, "funnel_chart")
    total = math.fsum(v for _, v in items)
    top = 36 if title else 12
    bar_h = 44
    x0, span = 12.0, width - 24.0
    body: list[str] = []
    if total <= 0:
        body.append(f'<rect x="{_n(x0)}" y="{top}" width="{_n(span)}" height="{bar_h}" fill="{GRID}"/>')
        body.append(f'<text x="{_n(x0 + 8)}" y="{top + 27}" fill="{MUTED}">no data</text>')
        return _svg(width, top + bar_h + 16, title, body)
    x = x0
    for i, (name, v) in enumerate(items):
        w = span * v / total
        share = v / total
        color = colors[i % len(colors)]
        body.append(
            f'<rect x="{_n(x)}" y="{top}" width="{_n(w)}" height="{bar_h}" fill="{color}">'
            f"<title>{_esc(name)}: {_esc(_label(v, unit, None))} ({share:.1%})</title></rect>"
        )
        pct = f"{share:.0%}" if share >= 0.01 else f"{share:.1%}"
        if w >= _text_width(pct, 12) + 6:
            body.append(
                f'<text x="{_n(x + w / 2)}" y="{top + 27}" text-anchor="middle" fill="#ffffff" '
                f'font-weight="600">{pct}</text>'
            )
        x += w
    legend_y = top + bar_h + 22
    col_w = (width - 24) / 2
    for i, (name, v) in enumerate(items):
        lx = 12 + (i % 2) * col_w
        ly = legend_y + (i // 2) * 20
        color = colors[i % len(colors)]
        text = f"{name}: {_label(v, unit, None)} ({v / total:.1%})"
        body.append(f'<rect x="{_n(lx)}" y="{_n(ly - 10)}" width="12" height="12" fill="{color}"/>')
        body.append(f'<text x="{_n(lx + 18)}" y="{_n(ly)}" fill="{INK}">{_esc(text)}</text>')
    height = legend_y + ((len(items) + 1) // 2) * 20
    return _svg(width, height, title, body)


def stacked_bar_chart(
    rows: Mapping[str, Series],
    *,
    title: str = "",
    unit: str = "",
    width: int = 640,
    colors: Sequence[str] = PALETTE,
) -> str:
    """Several funnels side by side: one stacked bar per row (e.g. measured, predicted).

    ``rows``: row label -> ``(part, amount)`` pairs (amounts >= 0). Every row is scaled
    to 100 %; parts keep one colour across rows (by first appearance) and the legend
    names them. Segment tooltips give the amount, ``unit`` and share.
    """
    parsed = [(label, _items(parts, f"stacked_bar_chart row {label!r}")) for label, parts in rows.items()]
    names: list[str] = []
    for _, parts in parsed:
        names.extend(n for n, _ in parts if n not in names)
    color_of = {n: colors[i % len(colors)] for i, n in enumerate(names)}
    top = 36 if title else 12
    row_h, bar_h = 40, 28
    label_w = min(max((_text_width(lbl, 12) for lbl, _ in parsed), default=0.0) + 16, width * 0.3)
    span = width - label_w - 12
    body: list[str] = []
    for r, (label, parts) in enumerate(parsed):
        y = top + r * row_h
        total = math.fsum(v for _, v in parts)
        body.append(
            f'<text x="{_n(label_w - 8)}" y="{_n(y + 19)}" text-anchor="end" fill="{INK}">'
            f"{_esc(_fit(label, label_w - 16, 12))}</text>"
        )
        if total <= 0:
            body.append(f'<rect x="{_n(label_w)}" y="{_n(y)}" width="{_n(span)}" height="{bar_h}" fill="{GRID}"/>')
            continue
        x = label_w
        for name, v in parts:
            w = span * v / total
            body.append(
                f'<rect x="{_n(x)}" y="{_n(y)}" width="{_n(w)}" height="{bar_h}" fill="{color_of[name]}">'
                f"<title>{_esc(label)}, {_esc(name)}: {_esc(_label(v, unit, None))} ({v / total:.1%})</title></rect>"
            )
            pct = f"{v / total:.0%}" if v / total >= 0.01 else f"{v / total:.1%}"
            if w >= _text_width(pct, 11) + 6:
                body.append(
                    f'<text x="{_n(x + w / 2)}" y="{_n(y + 18)}" text-anchor="middle" fill="#ffffff" '
                    f'font-size="11" font-weight="600">{pct}</text>'
                )
            x += w
    legend_y = top + len(parsed) * row_h + 14
    col_w = (width - 24) / 3
    for i, name in enumerate(names):
        lx = 12 + (i % 3) * col_w
        ly = legend_y + (i // 3) * 20
        body.append(f'<rect x="{_n(lx)}" y="{_n(ly - 10)}" width="12" height="12" fill="{color_of[name]}"/>')
        body.append(f'<text x="{_n(lx + 18)}" y="{_n(ly)}" fill="{INK}">{_esc(name)}</text>')
    return _svg(width, legend_y + ((len(names) + 2) // 3) * 20, title, body)


def line_chart(
    series_by_name: Mapping[str, Sequence[tuple[float, float]]],
    *,
    title: str = "",
    x_label: str = "",
    y_label: str = "",
    width: int = 640,
    height: int = 360,
    y_min: float | None = 0.0,
    dashed: Collection[str] = (),
    colors: Sequence[str] = PALETTE,
) -> str:
    """Lines over a shared x axis (time, a setting), with axes, ticks, labels and a legend.

    ``series_by_name``: name -> ``(x, y)`` points (sorted by x when drawn). ``y_min``:
    the bottom of the y axis (None: the data's minimum). Series named in ``dashed`` are
    drawn dashed and without markers (targets, limits).
    """
    named = [(name, sorted(_points(name, pts))) for name, pts in series_by_name.items()]
    top = 36 if title else 12
    left, right, bottom = 64.0, 16.0, 48.0
    legend_rows = (len(named) + 2) // 3
    plot_top = top + 8 + legend_rows * 18
    plot_w, plot_h = width - left - right, height - plot_top - bottom
    all_points = [p for _, pts in named for p in pts]
    if not all_points or plot_h < 40:
        return _svg(width, height, title, [f'<text x="12" y="{top + 20}" fill="{MUTED}">no data</text>'])
    xs = [p[0] for p in all_points]
    ys = [p[1] for p in all_points]
    y_lo = min(ys) if y_min is None else min(y_min, *ys)
    x_ticks, y_ticks = _ticks(min(xs), max(xs)), _ticks(y_lo, max(ys))
    x_lo, x_hi = min(x_ticks[0], *xs), max(x_ticks[-1], *xs)
    y_lo, y_hi = y_ticks[0], y_ticks[-1]

    def px(x: float) -> float:
        return left + plot_w * (x - x_lo) / ((x_hi - x_lo) or 1.0)

    def py(y: float) -> float:
        return plot_top + plot_h - plot_h * (y - y_lo) / ((y_hi - y_lo) or 1.0)

    body: list[str] = []
    for t in y_ticks:
        body.append(
            f'<line x1="{_n(left)}" y1="{_n(py(t))}" x2="{_n(left + plot_w)}" y2="{_n(py(t))}" stroke="{GRID}"/>'
        )
        body.append(f'<text x="{_n(left - 6)}" y="{_n(py(t) + 4)}" text-anchor="end" fill="{MUTED}">{_human(t)}</text>')
    for t in x_ticks:
        if x_lo <= t <= x_hi:
            body.append(
                f'<text x="{_n(px(t))}" y="{_n(plot_top + plot_h + 16)}" text-anchor="middle" '
                f'fill="{MUTED}">{_human(t)}</text>'
            )
    body.append(
        f'<path d="M{_n(left)} {_n(plot_top)}V{_n(plot_top + plot_h)}H{_n(left + plot_w)}" '
        f'fill="none" stroke="{MUTED}"/>'
    )
    if x_label:
        body.append(
            f'<text x="{_n(left + plot_w / 2)}" y="{_n(height - 10)}" text-anchor="middle" '
            f'fill="{INK}">{_esc(x_label)}</text>'
        )
    if y_label:
        cy = plot_top + plot_h / 2
        body.append(
            f'<text x="14" y="{_n(cy)}" text-anchor="middle" transform="rotate(-90 14 {_n(cy)})" '
            f'fill="{INK}">{_esc(y_label)}</text>'
        )
    for i, (name, pts) in enumerate(named):
        color = colors[i % len(colors)]
        is_dashed = name in dashed
        if pts:
            d = " ".join(f"{'M' if j == 0 else 'L'}{_n(px(x))} {_n(py(y))}" for j, (x, y) in enumerate(pts))
            dash = ' stroke-dasharray="6 4"' if is_dashed else ""
            body.append(
                f'<path d="{d}" fill="none" stroke="{color}" stroke-width="2"{dash}><title>{_esc(name)}</title></path>'
            )
            if not is_dashed and len(pts) <= 40:
                body.extend(
                    f'<circle cx="{_n(px(x))}" cy="{_n(py(y))}" r="2.5" fill="{color}">'
                    f"<title>{_esc(name)}: {_esc(_human(x))}, {_esc(_human(y))}</title></circle>"
                    for x, y in pts
                )
        lx = left + (i % 3) * (plot_w / 3)
        ly = top + 8 + (i // 3) * 18
        dash = ' stroke-dasharray="6 4"' if is_dashed else ""
        body.append(
            f'<line x1="{_n(lx)}" y1="{_n(ly)}" x2="{_n(lx + 18)}" y2="{_n(ly)}" '
            f'stroke="{color}" stroke-width="2"{dash}/>'
        )
        body.append(f'<text x="{_n(lx + 24)}" y="{_n(ly + 4)}" fill="{INK}">{_esc(name)}</text>')
    return _svg(width, height, title, body)


def _points(name: str, points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    out = []
    for x, y in points:
        fx, fy = float(x), float(y)
        if not (math.isfinite(fx) and math.isfinite(fy)):
            raise ConfigurationError(f"line_chart: series {name!r} has a point that is not finite: ({x!r}, {y!r})")
        out.append((fx, fy))
    return out
