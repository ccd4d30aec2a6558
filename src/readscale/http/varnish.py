"""The VCL readscale ships for Varnish (``readscale.vcl`` in this package; its header says
what it does and why): a product for your edge, not a tool, so it lives with the HTTP
face. ``render_vcl`` aims it at a backend; the local stack (``readscale.stack``) runs it.
"""

from __future__ import annotations

from importlib import resources
from urllib.parse import urlsplit

from readscale.errors import ConfigurationError


def package_vcl() -> str:
    """The VCL template shipped in the package (placeholders in double braces)."""
    return resources.files("readscale.http").joinpath("readscale.vcl").read_text()


def render_vcl(backend_url: str, *, probe_path: str | None = None) -> str:
    """The package VCL aimed at ``backend_url``; ``probe_path`` enables the health probe
    that stale-if-error relies on (without it, the backend always counts as healthy)."""
    parts = urlsplit(backend_url)
    try:
        port = parts.port or 80
    except ValueError:
        raise ConfigurationError(f"varnish backend URL has an invalid port: {backend_url!r}") from None
    if parts.scheme != "http" or not parts.hostname:
        raise ConfigurationError(f"varnish backend must be an http:// URL with a host, got {backend_url!r}")
    if parts.hostname not in ("127.0.0.1", "localhost", "::1"):
        raise ConfigurationError(f"the local stack only targets loopback, got backend host {parts.hostname!r}")
    probe = ""
    if probe_path:
        if not probe_path.startswith("/") or '"' in probe_path:
            raise ConfigurationError(f"probe path must start with / and hold no quotes, got {probe_path!r}")
        probe = (
            "    .probe = {\n"
            f'        .url = "{probe_path}";\n'
            "        .interval = 500ms;\n"
            "        .timeout = 300ms;\n"
            "        .window = 3;\n"
            "        .threshold = 2;\n"
            "        .initial = 2;\n"
            "    }"
        )
    host = "127.0.0.1" if parts.hostname == "localhost" else parts.hostname
    return (
        package_vcl()
        .replace("{{BACKEND_HOST}}", host)
        .replace("{{BACKEND_PORT}}", str(port))
        .replace("{{PROBE}}", probe)
    )
