"""The demo's HTML report: the funnel, latency per layer and hit ratios over time.

A single self-contained file (inline SVG, no JavaScript, nothing fetched), so it opens
anywhere and a headless browser renders it with no console output.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from readscale.demo.funnel import CLIENT_LAYER, service_shares
from readscale.report import bar_chart, escape, funnel_chart, html_page, html_table, line_chart, stacked_bar_chart

LABELS = {
    "browser": "browser cache",
    "edge": "edge (Varnish)",
    "app_cache": "app cache",
    "replicas": "read replicas",
    "primary": "primary",
}


def render_report(data: dict[str, Any]) -> str:
    counts = data["counts"]
    raw = data["layers_raw"]
    funnel = funnel_chart(
        [(LABELS[k], counts[k]) for k in LABELS], title="Requests answered by each layer", unit="requests"
    )
    rows = []
    for name, label in LABELS.items():
        latency = data["latency"].get(CLIENT_LAYER[name], {})
        share = f"{data[f'share_{name}']:.2%}"
        rows.append([label, f"{counts[name]:,}", share, latency.get("p50", "-"), latency.get("p99", "-")])
    table = html_table(["layer", "requests answered", "share", "p50 ms", "p99 ms"], rows)
    latencies = {
        LABELS[name]: data["latency"][CLIENT_LAYER[name]]["p50"]
        for name in LABELS
        if CLIENT_LAYER[name] in data["latency"]
    }
    latency_chart = bar_chart(latencies, title="Median latency seen by the clients, per layer", unit="ms")
    timeline = data.get("timeline") or []
    over_time = (
        line_chart(
            {
                LABELS[name]: [(row["t"], row.get(CLIENT_LAYER[name], 0.0)) for row in timeline]
                for name in LABELS
                if timeline
            },
            title="Share of responses each layer answered, over time",
            x_label="seconds",
            y_label="share of responses",
        )
        if timeline
        else "<p>No timeline.</p>"
    )
    behind = service_shares(timeline)
    window = data.get("chaos_window_s") or []
    chaos_note = (
        f" ({data['config']['chaos']} killed at {window[0]:.0f} s, back at {window[1]:.0f} s)"
        if len(window) == 2
        else ""
    )
    behind_chart = (
        line_chart(
            {
                LABELS[name]: [(row["t"], row[CLIENT_LAYER[name]]) for row in behind]
                for name in LABELS
                if name in ("app_cache", "replicas", "primary")
            },
            title=f"Requests that reached the service: who answered them{chaos_note}",
            x_label="seconds",
            y_label="share of the service's answers",
        )
        if behind
        else ""
    )
    reconcile = stacked_bar_chart(
        {
            "layers' counters": [(LABELS[k], counts[k]) for k in LABELS],
            "clients' view": [
                (LABELS[k], int(data["latency"].get(CLIENT_LAYER[k], {}).get("count", 0))) for k in LABELS
            ],
        },
        title="The same requests, counted by each layer and by the clients",
        unit="requests",
    )
    checks = html_table(
        ["check", "value"],
        [
            ["requests issued by the clients", f"{data['requests']:,}"],
            ["sum of the layers' own counts", f"{counts['accounted']:,} ({counts['discrepancy']:+.2%})"],
            ["requests Varnish received (its MAIN.client_req)", f"{raw['edge_requests']:,}"],
            ["requests the service handled (its own counter)", f"{raw['app_requests']:,}"],
            ["database reads on replicas (pg_stat_statements)", f"{raw['replica_reads']:,}"],
            ["of which background refreshes", f"{raw['background_replica']:,}"],
            ["reads on the primary / writes on the primary", f"{raw['primary_reads']:,} / {raw['primary_writes']:,}"],
            ["primary's share of reads", f"{data['primary_read_share']:.2%}"],
            ["failed requests", f"{data['failed_requests']:,}"],
            [
                "stale reads beyond their bound (reads checked)",
                f"{data['stale_reads_beyond_bound']:,} ({data['stale_checks']:,})",
            ],
            ["requests per second", f"{data['config']['rps']:,.0f}"],
            ["chaos", str(data["config"]["chaos"])],
        ],
    )
    return html_page(
        "readscale demo: what each layer of the read path absorbed",
        [
            f"<p>{escape(data['summary'])}</p>",
            "<h2>The funnel</h2>",
            funnel,
            table,
            "<h2>Latency per layer</h2>",
            latency_chart,
            "<h2>Over time</h2>",
            over_time,
            behind_chart,
            "<h2>Do the counts add up?</h2>",
            reconcile,
            checks,
        ],
    )


def write_report(path: Path, data: dict[str, Any]) -> None:
    path.write_text(render_report(data), encoding="utf-8")
