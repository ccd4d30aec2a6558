"""A self-contained HTML page for charts and tables: inline SVG, a little CSS, no script.

::

    from readscale.report import funnel_chart, html_page, html_table

    page = html_page("readscale sim", [
        "<h2>Funnel</h2>", funnel_chart(loads, unit="req/s"),
        html_table(["layer", "share"], [["browser", "59.2 %"], ["edge", "22.0 %"]]),
    ])

Blocks are trusted markup (charts from :mod:`readscale.report.svg`, headings you
wrote); table cells and the title are text and are escaped.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from readscale.report._axes import escape as _esc

__all__ = ["html_page", "html_table"]

_CSS = (
    "body{font-family:system-ui,-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;margin:2rem auto;"
    "max-width:960px;color:#222;padding:0 1rem}"
    "table{border-collapse:collapse;margin:1rem 0}"
    "th,td{padding:.3rem .7rem;border-bottom:1px solid #ddd;text-align:right}"
    "th:first-child,td:first-child{text-align:left}"
    "svg{max-width:100%;height:auto;display:block;margin:1rem 0}"
    "p.note{color:#555}"
)


def html_table(headers: Sequence[object], rows: Iterable[Sequence[object]]) -> str:
    """An HTML table; every cell is escaped text."""
    head = "".join(f"<th>{_esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_esc(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def html_page(title: str, blocks: Iterable[str]) -> str:
    """A complete HTML5 document titled ``title`` (escaped) holding ``blocks`` (markup) in order."""
    content = "\n".join(blocks)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_esc(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        f"<h1>{_esc(title)}</h1>\n{content}\n</body>\n</html>\n"
    )
