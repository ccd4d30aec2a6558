"""SVG charts and the HTML page: well-formed, escaped, deterministic, with the expected parts."""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from readscale.errors import ConfigurationError
from readscale.report import bar_chart, escape, funnel_chart, html_page, html_table, line_chart, stacked_bar_chart

NS = "{http://www.w3.org/2000/svg}"
FUNNEL = [("browser", 59_200.0), ("edge", 22_000.0), ("app cache", 9_600.0), ("replicas", 8_400.0), ("primary", 800.0)]


def parse(svg: str) -> ET.Element:
    root = ET.fromstring(svg)
    assert root.tag == f"{NS}svg"
    return root


def texts(root: ET.Element) -> list[str]:
    return ["".join(t.itertext()) for t in root.iter(f"{NS}text")]


def rects_with_tooltip(root: ET.Element) -> list[ET.Element]:
    return [r for r in root.iter(f"{NS}rect") if r.find(f"{NS}title") is not None]


def test_funnel_has_one_segment_per_layer_in_proportion() -> None:
    root = parse(funnel_chart(FUNNEL, title="Who serves 100,000 requests", unit="req/s"))
    assert root.find(f"{NS}title") is not None and root.get("aria-label") == "Who serves 100,000 requests"
    segments = rects_with_tooltip(root)
    assert len(segments) == 5
    widths = [float(r.get("width", "0")) for r in segments]
    assert widths[0] / sum(widths) == pytest.approx(0.592, abs=1e-3)
    xs = [float(r.get("x", "0")) for r in segments]
    assert xs == sorted(xs)  # stacked left to right, in order
    labels = texts(root)
    assert "59%" in labels and "22%" in labels
    assert "browser: 59,200 req/s (59.2%)" in labels
    assert "primary: 800 req/s (0.8%)" in labels


@pytest.mark.parametrize("horizontal", [True, False])
def test_bar_chart_bars_scale_to_the_largest(horizontal: bool) -> None:
    root = parse(bar_chart({"browser": 0.0, "edge": 0.07, "app cache": 0.28}, unit="ms", horizontal=horizontal))
    bars = rects_with_tooltip(root)
    assert len(bars) == 3
    size = "width" if horizontal else "height"
    lengths = [float(b.get(size, "0")) for b in bars]
    assert lengths[0] == 0
    assert lengths[1] / lengths[2] == pytest.approx(0.25, abs=0.01)
    assert {"0 ms", "0.07 ms", "0.28 ms"} <= set(texts(root))


def test_line_chart_draws_each_series_with_axes_and_legend() -> None:
    root = parse(
        line_chart(
            {"hit ratio": [(0, 0.2), (10, 0.6), (20, 0.8)], "target": [(0, 0.5), (20, 0.5)]},
            title="Hit ratio over time",
            x_label="seconds",
            y_label="ratio",
            dashed=["target"],
        )
    )
    paths = [p for p in root.iter(f"{NS}path") if p.find(f"{NS}title") is not None]
    assert [p.find(f"{NS}title").text for p in paths] == ["hit ratio", "target"]  # type: ignore[union-attr]
    assert paths[1].get("stroke-dasharray") and not paths[0].get("stroke-dasharray")
    assert len(list(root.iter(f"{NS}circle"))) == 3  # markers on the solid series only
    labels = texts(root)
    assert {"seconds", "ratio", "hit ratio", "target", "0", "10", "20"} <= set(labels)
    assert "0.8" in labels  # the top y tick covers the data


def test_line_chart_points_are_sorted_by_x() -> None:
    root = parse(line_chart({"s": [(2, 1.0), (0, 0.0), (1, 3.0)]}))
    path = next(p for p in root.iter(f"{NS}path") if p.find(f"{NS}title") is not None)
    xs = [float(x) for x in re.findall(r"[ML]([\d.]+) ", path.get("d", ""))]
    assert xs == sorted(xs)


def test_stacked_bars_keep_one_colour_per_part_across_rows() -> None:
    root = parse(
        stacked_bar_chart({"measured": {"edge": 0.4, "primary": 0.6}, "predicted": [("primary", 0.5), ("edge", 0.5)]})
    )
    fills: dict[str, set[str]] = {}
    for rect in rects_with_tooltip(root):
        part = rect.find(f"{NS}title").text.split(",")[1].split(":")[0].strip()  # type: ignore[union-attr]
        fills.setdefault(part, set()).add(rect.get("fill", ""))
    assert all(len(colours) == 1 for colours in fills.values())
    assert fills["edge"] != fills["primary"]


def test_empty_input_says_so() -> None:
    for svg in (bar_chart([]), funnel_chart([]), line_chart({}), funnel_chart([("a", 0.0)])):
        assert "no data" in texts(parse(svg))


@pytest.mark.parametrize(
    "call",
    [
        lambda: bar_chart({"edge": -1.0}),
        lambda: bar_chart({"edge": math.nan}),
        lambda: funnel_chart([("edge", math.inf)]),
        lambda: line_chart({"edge": [(0.0, math.nan)]}),
    ],
)
def test_bad_values_are_refused_naming_the_label(call: object) -> None:
    with pytest.raises(ConfigurationError, match="edge"):
        call()  # type: ignore[operator]


HOSTILE = "<script>alert('x')</script> & \"quoted\" \x00\x07 ]]> --> é 中"


def test_labels_cannot_inject_markup() -> None:
    for svg in (
        bar_chart({HOSTILE: 1.0}, title=HOSTILE, unit=HOSTILE),
        funnel_chart([(HOSTILE, 1.0)], title=HOSTILE),
        line_chart({HOSTILE: [(0, 1), (1, 2)]}, title=HOSTILE, x_label=HOSTILE, y_label=HOSTILE),
        stacked_bar_chart({HOSTILE: {HOSTILE: 1.0}}, title=HOSTILE),
    ):
        root = parse(svg)
        assert not [e for e in root.iter() if e.tag.endswith("script")]
        assert "<script>" not in svg
        assert any("<script>alert('x')</script>" in t for t in [*texts(root), root.get("aria-label", "")])


def test_output_is_deterministic() -> None:
    assert funnel_chart(FUNNEL, title="t") == funnel_chart(list(FUNNEL), title="t")
    assert line_chart({"a": [(0, 1), (1, 2)]}) == line_chart({"a": [(0, 1), (1, 2)]})


@given(
    labels=st.lists(st.text(max_size=40), min_size=1, max_size=6),
    values=st.lists(st.floats(min_value=0, max_value=1e12), min_size=6, max_size=6),
)
@settings(max_examples=150, deadline=None)
def test_any_labels_give_well_formed_svg(labels: list[str], values: list[float]) -> None:
    series = list(zip(labels, values, strict=False))
    for svg in (bar_chart(series, title=labels[0]), funnel_chart(series), bar_chart(series, horizontal=False)):
        parse(svg)
    parse(line_chart({label: [(i, v)] for i, (label, v) in enumerate(series)}, title=labels[0]))


def test_escape_covers_quotes_and_drops_forbidden_characters() -> None:
    assert escape("a&b<c>\"d'e\x01") == "a&amp;b&lt;c&gt;&quot;d&#39;e"


def test_html_page_escapes_text_and_embeds_blocks() -> None:
    page = html_page("<t>", [funnel_chart(FUNNEL), html_table(["<h>"], [["<c>", 1]])])
    assert page.startswith("<!DOCTYPE html>")
    assert "<title>&lt;t&gt;</title>" in page
    assert "<th>&lt;h&gt;</th>" in page and "<td>&lt;c&gt;</td>" in page
    assert page.count("<svg") == 1
    assert "<script" not in page


def test_a_span_too_small_for_floats_gives_ticks() -> None:
    # Found by Hypothesis: a span of one subnormal over 5 ticks underflows to 0 (log10 failed).
    for values in ([0.0, 5e-324], [0.0, 1e-323], [1.0, 1.0]):
        parse(line_chart({"a": list(enumerate(values))}))
        parse(bar_chart([(str(i), v) for i, v in enumerate(values)], horizontal=False))
