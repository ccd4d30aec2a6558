"""The VCL readscale ships for Varnish (``readscale.vcl`` in this package; its header says
what it does and why): a product for your edge, not a tool, so it lives with the HTTP
face. ``render_vcl`` aims it at a backend; the local stack (``readscale.stack``) runs it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from importlib import resources

from readscale.errors import ConfigurationError
from readscale.settings import check_url


def package_vcl() -> str:
    """The VCL template shipped in the package (placeholders in double braces)."""
    return resources.files("readscale.http").joinpath("readscale.vcl").read_text()


LOOPBACK = ("127.0.0.0/8", "::1")


def render_vcl(
    backend_url: str,
    *,
    probe_path: str | None = None,
    purge_acl: Sequence[str] = LOOPBACK,
    max_life: int | None = None,
) -> str:
    """The package VCL aimed at ``backend_url``.

    ``probe_path`` enables the health probe that stale-if-error relies on (without it,
    the backend always counts as healthy). ``purge_acl``: the addresses and networks
    (``"10.0.0.5"``, ``"10.0.0.0/24"``, ``"fd00::/8"``) allowed to purge; loopback only
    by default, never the whole Internet. ``max_life`` (seconds) caps how long this node
    serves an object after storing it, its stale windows included: the bound on what a
    node that missed purges can serve (docs/edge.md).
    """
    if not backend_url.startswith("http://"):
        raise ConfigurationError(f"varnish backend must be an http:// URL with a host, got {backend_url!r}")
    parts = check_url(backend_url, name="the varnish backend URL", schemes=("http",))
    port = parts.port or 80
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
        .replace("{{PURGE_ACL}}", render_acl(purge_acl))
        .replace("{{MAX_LIFE}}", render_max_life(max_life))
    )


#: The widest public network a purge ACL may name, per IP version (private networks of any
#: size are allowed: 10.0.0.0/8 is one operator's).
_WIDEST_PUBLIC = {4: 16, 6: 32}


def render_acl(entries: Sequence[str]) -> str:
    """The purge ACL's lines: each entry an address or a network, checked here (a typo
    must not compile into an ACL that lets someone else purge)."""
    if isinstance(entries, str):
        entries = [entries]
    if not entries:
        raise ConfigurationError("purge_acl is empty: name the addresses or networks allowed to purge")
    lines = []
    for entry in entries:
        try:
            network = ipaddress.ip_network(str(entry).strip(), strict=False)
        except ValueError:
            raise ConfigurationError(
                f"purge_acl entry {entry!r} is not an address or a network (e.g. 10.0.0.5 or 10.0.0.0/24)"
            ) from None
        if network.prefixlen == 0:
            raise ConfigurationError(f"purge_acl entry {entry!r} opens purging to every address; name your networks")
        # Wide public networks: two /1s cover every address as surely as one /0 does.
        if network.prefixlen < _WIDEST_PUBLIC[network.version] and not network.is_private:
            raise ConfigurationError(
                f"purge_acl entry {entry!r} opens purging to a wide range of public addresses "
                f"(wider than /{_WIDEST_PUBLIC[network.version]}); name your own hosts or private networks"
            )
        full = network.prefixlen == network.max_prefixlen
        lines.append(
            f'    "{network.network_address}";' if full else f'    "{network.network_address}"/{network.prefixlen};'
        )
    return "\n".join(lines)


def render_max_life(max_life: int | None) -> str:
    if max_life is None:
        return ""
    if isinstance(max_life, bool) or not isinstance(max_life, int) or max_life < 1:
        raise ConfigurationError(f"max_life must be a whole number of seconds >= 1, got {max_life!r}")
    return (
        "    # max_life: nothing is served more than this long after it was stored here.\n"
        f"    if (beresp.ttl > {max_life}s) {{\n"
        f"        set beresp.ttl = {max_life}s;\n"
        "    }\n"
        f"    if (beresp.ttl + beresp.grace > {max_life}s) {{\n"
        f"        set beresp.grace = {max_life}s - beresp.ttl;\n"
        "    }"
    )
