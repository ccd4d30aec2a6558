"""``--metrics-port``: a long-running command (the CDC worker, the flusher) serves its
collectors at ``http://127.0.0.1:<port>/metrics`` for Prometheus."""

from __future__ import annotations

from typing import Annotated, Any

import typer

MetricsPortOption = Annotated[
    int | None,
    typer.Option(min=1, max=65535, help="Serve Prometheus metrics at http://127.0.0.1:PORT/metrics."),
]


def serve_metrics(port: int | None, *collectors: Any) -> None:
    """Start prometheus-client's HTTP server (a daemon thread) over ``collectors``."""
    if port is None:
        return
    try:
        from prometheus_client import CollectorRegistry, start_http_server
    except ImportError as exc:  # pragma: no cover - the cli extra is installed with the demo
        raise ImportError("--metrics-port needs prometheus-client: pip install 'readscale[prometheus]'") from exc
    registry = CollectorRegistry()
    for collector in collectors:
        registry.register(collector)
    start_http_server(port, addr="127.0.0.1", registry=registry)
