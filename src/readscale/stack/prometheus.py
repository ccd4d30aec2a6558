"""Prometheus for the local stack (Debian's ``prometheus`` package), scraping the
``/metrics`` of the services it is given: the demo's, or an application under test.

The configuration is written from the node's spec before every start, so a stack
reopened from ``state.json`` scrapes the same targets. Queries go through Prometheus's
HTTP API (:meth:`PrometheusNode.query`)."""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from readscale.errors import ConfigurationError, StackError
from readscale.stack import _proc
from readscale.stack._node import Node, NodeSpec


def check_target(url: str) -> tuple[str, str, str]:
    """(scheme, host:port, path) of a scrape target URL, or ConfigurationError."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.port is None:
        example = "http://127.0.0.1:8000/metrics"
        raise ConfigurationError(f"a Prometheus target is a URL with a port, like {example}; got {url!r}")
    return parts.scheme, f"{parts.hostname}:{parts.port}", parts.path or "/metrics"


def render_config(targets: list[str], interval: float) -> str:
    """prometheus.yml (JSON is YAML): one job per target, named ``readscale-<n>``."""
    jobs = []
    for n, url in enumerate(targets):
        scheme, address, path = check_target(url)
        jobs.append({
            "job_name": f"readscale-{n}", "scheme": scheme, "metrics_path": path,
            "static_configs": [{"targets": [address]}],
        })  # fmt: skip
    every = f"{max(1, round(interval * 1000))}ms"
    return json.dumps({"global": {"scrape_interval": every, "evaluation_interval": every}, "scrape_configs": jobs})


class PrometheusNode(Node):
    """prometheus in the foreground. ``extra``: ``targets`` (URLs), ``interval`` (seconds)."""

    kind = "prometheus"

    @property
    def config_path(self) -> Path:
        return self.dir / "prometheus.yml"

    def before_start(self) -> None:
        self.config_path.write_text(render_config(list(self.spec.extra["targets"]), float(self.spec.extra["interval"])))

    def argv(self) -> list[str]:
        return [
            _proc.find_binary("prometheus"),
            f"--config.file={self.config_path}",
            f"--storage.tsdb.path={self.dir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--storage.tsdb.retention.time=1d",
            "--web.enable-lifecycle",
        ]

    def probe(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1.0) as response:  # noqa: S310 (http://127.0.0.1)
                return bool(response.status == 200)
        except OSError:
            return False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def endpoint(self) -> dict[str, Any]:
        return {"name": self.name, "port": self.port, "url": self.url, "targets": list(self.spec.extra["targets"])}

    def api(self, path: str, **params: str) -> Any:
        """GET ``/api/v1/<path>``; the ``data`` of a success, or StackError."""
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=10.0) as response:  # noqa: S310 (http://127.0.0.1)
                body = json.load(response)
        except OSError as exc:
            raise StackError(f"Prometheus API {path} failed: {exc}") from exc
        if body.get("status") != "success":
            raise StackError(f"Prometheus API {path}: {body.get('error', body)}")
        return body["data"]

    def query(self, promql: str) -> list[dict[str, Any]]:
        """An instant PromQL query: the result vector (``metric`` labels, ``value``)."""
        data = self.api("query", query=promql)
        return list(data["result"])

    def targets(self) -> list[dict[str, Any]]:
        """The active scrape targets with their health (``up``/``down``) and last error."""
        return list(self.api("targets")["activeTargets"])


def new_prometheus(name: str, root: Path, port: int, *, targets: list[str], interval: float) -> PrometheusNode:
    for url in targets:
        check_target(url)
    node_dir = root / name
    node_dir.mkdir(parents=True, exist_ok=True)
    spec = NodeSpec(
        name=name, kind="prometheus", port=port, dir=str(node_dir), log=str(node_dir / "server.log"),
        extra={"targets": list(targets), "interval": interval},
    )  # fmt: skip
    return PrometheusNode(spec)
