"""Reports: SVG charts (:mod:`readscale.report.svg`) and a plain HTML page to hold them
(:mod:`readscale.report.html`). No dependency, no JavaScript; the demo's report and
``readscale sim --chart/--html`` both use them."""

from readscale.report._axes import escape
from readscale.report.html import html_page, html_table
from readscale.report.svg import bar_chart, funnel_chart, line_chart, stacked_bar_chart

__all__ = ["bar_chart", "escape", "funnel_chart", "html_page", "html_table", "line_chart", "stacked_bar_chart"]
