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
from collections.abc import Collection, Iterable, Mapping, Sequence

from readscale.errors import ConfigurationError
from readscale.report._axes import axis_ticks, coord, escape, fit, human, text_width, value_label

__all__ = ["PALETTE", "bar_chart", "funnel_chart", "line_chart", "stacked_bar_chart"]

# Okabe & Ito's palette: distinguishable with the common colour-vision deficiencies.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#D55E00", "#56B4E9", "#F0E442", "#000000")
FONT = "system-ui, -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif"
INK = "#222222"
MUTED = "#666666"
GRID = "#dddddd"

Series = Mapping[str, float] | Sequence[tuple[str, float]]


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


def _svg(width: float, height: float, title: str, body: Iterable[str]) -> str:
    label = escape(title or "chart")
    head = (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{coord(width)}" height="{coord(height)}" '
        f'viewBox="0 0 {coord(width)} {coord(height)}" role="img" aria-label="{label}" '
        f'font-family="{escape(FONT)}" font-size="12">'
    )
    parts = [head, f"<title>{label}</title>", f'<rect width="{coord(width)}" height="{coord(height)}" fill="#ffffff"/>']
    if title:
        parts.append(f'<text x="12" y="22" font-size="15" font-weight="600" fill="{INK}">{escape(title)}</text>')
    parts.extend(body)
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


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
        label_w = min(max(text_width(lbl, 12) for lbl, _ in items) + 16, width * 0.4)
        value_w = max(text_width(value_label(v, unit, value_format), 12) for _, v in items) + 12
        span = max(width - label_w - value_w - 12, 40)
        height = top + row * len(items) + 12
        for i, (lbl, v) in enumerate(items):
            y = top + i * row
            w = span * v / peak
            color = colors[i % len(colors)]
            body.append(
                f'<text x="{coord(label_w - 8)}" y="{coord(y + 17)}" text-anchor="end" fill="{INK}">'
                f"{escape(fit(lbl, label_w - 16, 12))}</text>"
            )
            body.append(
                f'<rect x="{coord(label_w)}" y="{coord(y + 4)}" width="{coord(w)}" height="{row - 8}" fill="{color}">'
                f"<title>{escape(lbl)}: {escape(value_label(v, unit, value_format))}</title></rect>"
            )
            body.append(
                f'<text x="{coord(label_w + w + 6)}" y="{coord(y + 17)}" fill="{INK}">'
                f"{escape(value_label(v, unit, value_format))}</text>"
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
            f'<rect x="{coord(x)}" y="{coord(base - h)}" width="{coord(bar_w)}" height="{coord(h)}" fill="{color}">'
            f"<title>{escape(lbl)}: {escape(value_label(v, unit, value_format))}</title></rect>"
        )
        body.append(
            f'<text x="{coord(cx)}" y="{coord(base - h - 5)}" text-anchor="middle" fill="{INK}">'
            f"{escape(value_label(v, unit, value_format))}</text>"
        )
        body.append(
            f'<text x="{coord(cx)}" y="{coord(base + 16)}" text-anchor="middle" fill="{INK}">{escape(lbl)}</text>'
        )
    body.append(f'<line x1="12" y1="{coord(base)}" x2="{coord(width - 12)}" y2="{coord(base)}" stroke="{MUTED}"/>')
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
        body.append(f'<rect x="{coord(x0)}" y="{top}" width="{coord(span)}" height="{bar_h}" fill="{GRID}"/>')
        body.append(f'<text x="{coord(x0 + 8)}" y="{top + 27}" fill="{MUTED}">no data</text>')
        return _svg(width, top + bar_h + 16, title, body)
    x = x0
    for i, (name, v) in enumerate(items):
        w = span * v / total
        share = v / total
        color = colors[i % len(colors)]
        body.append(
            f'<rect x="{coord(x)}" y="{top}" width="{coord(w)}" height="{bar_h}" fill="{color}">'
            f"<title>{escape(name)}: {escape(value_label(v, unit, None))} ({share:.1%})</title></rect>"
        )
        pct = f"{share:.0%}" if share >= 0.01 else f"{share:.1%}"
        if w >= text_width(pct, 12) + 6:
            body.append(
                f'<text x="{coord(x + w / 2)}" y="{top + 27}" text-anchor="middle" fill="#ffffff" '
                f'font-weight="600">{pct}</text>'
            )
        x += w
    legend_y = top + bar_h + 22
    col_w = (width - 24) / 2
    for i, (name, v) in enumerate(items):
        lx = 12 + (i % 2) * col_w
        ly = legend_y + (i // 2) * 20
        color = colors[i % len(colors)]
        text = f"{name}: {value_label(v, unit, None)} ({v / total:.1%})"
        body.append(f'<rect x="{coord(lx)}" y="{coord(ly - 10)}" width="12" height="12" fill="{color}"/>')
        body.append(f'<text x="{coord(lx + 18)}" y="{coord(ly)}" fill="{INK}">{escape(text)}</text>')
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
    label_w = min(max((text_width(lbl, 12) for lbl, _ in parsed), default=0.0) + 16, width * 0.3)
    span = width - label_w - 12
    body: list[str] = []
    for r, (label, parts) in enumerate(parsed):
        y = top + r * row_h
        total = math.fsum(v for _, v in parts)
        body.append(
            f'<text x="{coord(label_w - 8)}" y="{coord(y + 19)}" text-anchor="end" fill="{INK}">'
            f"{escape(fit(label, label_w - 16, 12))}</text>"
        )
        if total <= 0:
            body.append(
                f'<rect x="{coord(label_w)}" y="{coord(y)}" width="{coord(span)}" height="{bar_h}" fill="{GRID}"/>'
            )
            continue
        x = label_w
        for name, v in parts:
            w = span * v / total
            body.append(
                f'<rect x="{coord(x)}" y="{coord(y)}" width="{coord(w)}" height="{bar_h}" fill="{color_of[name]}">'
                f"<title>{escape(label)}, {escape(name)}: {escape(value_label(v, unit, None))} "
                f"({v / total:.1%})</title></rect>"
            )
            pct = f"{v / total:.0%}" if v / total >= 0.01 else f"{v / total:.1%}"
            if w >= text_width(pct, 11) + 6:
                body.append(
                    f'<text x="{coord(x + w / 2)}" y="{coord(y + 18)}" text-anchor="middle" fill="#ffffff" '
                    f'font-size="11" font-weight="600">{pct}</text>'
                )
            x += w
    legend_y = top + len(parsed) * row_h + 14
    col_w = (width - 24) / 3
    for i, name in enumerate(names):
        lx = 12 + (i % 3) * col_w
        ly = legend_y + (i // 3) * 20
        body.append(f'<rect x="{coord(lx)}" y="{coord(ly - 10)}" width="12" height="12" fill="{color_of[name]}"/>')
        body.append(f'<text x="{coord(lx + 18)}" y="{coord(ly)}" fill="{INK}">{escape(name)}</text>')
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
    x_ticks, y_ticks = axis_ticks(min(xs), max(xs)), axis_ticks(y_lo, max(ys))
    x_lo, x_hi = min(x_ticks[0], *xs), max(x_ticks[-1], *xs)
    y_lo, y_hi = y_ticks[0], y_ticks[-1]

    def px(x: float) -> float:
        return left + plot_w * (x - x_lo) / ((x_hi - x_lo) or 1.0)

    def py(y: float) -> float:
        return plot_top + plot_h - plot_h * (y - y_lo) / ((y_hi - y_lo) or 1.0)

    body: list[str] = []
    for t in y_ticks:
        body.append(
            f'<line x1="{coord(left)}" y1="{coord(py(t))}" x2="{coord(left + plot_w)}" y2="{coord(py(t))}" '
            f'stroke="{GRID}"/>'
        )
        body.append(
            f'<text x="{coord(left - 6)}" y="{coord(py(t) + 4)}" text-anchor="end" fill="{MUTED}">{human(t)}</text>'
        )
    for t in x_ticks:
        if x_lo <= t <= x_hi:
            body.append(
                f'<text x="{coord(px(t))}" y="{coord(plot_top + plot_h + 16)}" text-anchor="middle" '
                f'fill="{MUTED}">{human(t)}</text>'
            )
    body.append(
        f'<path d="M{coord(left)} {coord(plot_top)}V{coord(plot_top + plot_h)}H{coord(left + plot_w)}" '
        f'fill="none" stroke="{MUTED}"/>'
    )
    if x_label:
        body.append(
            f'<text x="{coord(left + plot_w / 2)}" y="{coord(height - 10)}" text-anchor="middle" '
            f'fill="{INK}">{escape(x_label)}</text>'
        )
    if y_label:
        cy = plot_top + plot_h / 2
        body.append(
            f'<text x="14" y="{coord(cy)}" text-anchor="middle" transform="rotate(-90 14 {coord(cy)})" '
            f'fill="{INK}">{escape(y_label)}</text>'
        )
    for i, (name, pts) in enumerate(named):
        color = colors[i % len(colors)]
        is_dashed = name in dashed
        if pts:
            d = " ".join(f"{'M' if j == 0 else 'L'}{coord(px(x))} {coord(py(y))}" for j, (x, y) in enumerate(pts))
            dash = ' stroke-dasharray="6 4"' if is_dashed else ""
            body.append(
                f'<path d="{d}" fill="none" stroke="{color}" stroke-width="2"{dash}>'
                f"<title>{escape(name)}</title></path>"
            )
            if not is_dashed and len(pts) <= 40:
                body.extend(
                    f'<circle cx="{coord(px(x))}" cy="{coord(py(y))}" r="2.5" fill="{color}">'
                    f"<title>{escape(name)}: {escape(human(x))}, {escape(human(y))}</title></circle>"
                    for x, y in pts
                )
        lx = left + (i % 3) * (plot_w / 3)
        ly = top + 8 + (i // 3) * 18
        dash = ' stroke-dasharray="6 4"' if is_dashed else ""
        body.append(
            f'<line x1="{coord(lx)}" y1="{coord(ly)}" x2="{coord(lx + 18)}" y2="{coord(ly)}" '
            f'stroke="{color}" stroke-width="2"{dash}/>'
        )
        body.append(f'<text x="{coord(lx + 24)}" y="{coord(ly + 4)}" fill="{INK}">{escape(name)}</text>')
    return _svg(width, height, title, body)


def _points(name: str, points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    out = []
    for x, y in points:
        fx, fy = float(x), float(y)
        if not (math.isfinite(fx) and math.isfinite(fy)):
            raise ConfigurationError(f"line_chart: series {name!r} has a point that is not finite: ({x!r}, {y!r})")
        out.append((fx, fy))
    return out
