"""Varnish for the local stack, running the package's VCL (``readscale.http.varnish``)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from readscale.errors import MissingBinaryError, StackError
from readscale.http.varnish import render_vcl
from readscale.stack import _proc
from readscale.stack._node import Node, NodeSpec

XKEY_VMOD_PATHS = (
    "/usr/lib/x86_64-linux-gnu/varnish/vmods/libvmod_xkey.so",
    "/usr/lib/aarch64-linux-gnu/varnish/vmods/libvmod_xkey.so",
    "/usr/lib/varnish/vmods/libvmod_xkey.so",
)


def check_xkey() -> None:
    if not any(Path(p).exists() for p in XKEY_VMOD_PATHS):
        raise MissingBinaryError("libvmod_xkey.so (Varnish's xkey module)", "varnish-modules")


class VarnishNode(Node):
    """varnishd in the foreground. ``extra``: ``admin_port``, ``backend``, ``probe_path``,
    ``max_life``, ``storage_mb``."""

    kind = "varnish"

    @property
    def workdir(self) -> Path:
        return self.dir / "work"

    @property
    def vcl_path(self) -> Path:
        return self.dir / "readscale.vcl"

    def before_start(self) -> None:
        extra = self.spec.extra
        self.vcl_path.write_text(
            render_vcl(extra["backend"], probe_path=extra.get("probe_path"), max_life=extra.get("max_life"))
        )

    def argv(self) -> list[str]:
        extra = self.spec.extra
        return [
            _proc.find_binary("varnishd"),
            "-F",
            "-a", f"127.0.0.1:{self.port}",
            "-T", f"127.0.0.1:{extra['admin_port']}",
            "-f", str(self.vcl_path),
            "-n", str(self.workdir),
            "-s", f"malloc,{extra.get('storage_mb', 128)}m",
            "-p", "default_grace=0",
            "-p", "thread_pool_min=20",
        ]  # fmt: skip

    def reserved_ports(self) -> set[int]:
        return {int(self.spec.extra["admin_port"])}

    def ports_changed(self) -> None:
        (admin,) = _proc.pick_ports(1, exclude={self.port})
        self.spec.extra["admin_port"] = admin

    def probe(self) -> bool:
        return _proc.is_listening(int(self.spec.extra["admin_port"]))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def endpoint(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "port": self.port,
            "url": self.url,
            "admin": f"127.0.0.1:{self.spec.extra['admin_port']}",
            "backend": self.spec.extra["backend"],
            "workdir": str(self.workdir),
        }

    def counters(self) -> dict[str, int]:
        """Varnish's own counters (``varnishstat -j``), for example ``MAIN.cache_hit``."""
        out = _proc.run([_proc.find_binary("varnishstat"), "-n", str(self.workdir), "-1", "-j"]).stdout
        data = json.loads(out)
        counters = data.get("counters", data)
        return {name: int(c["value"]) for name, c in counters.items() if isinstance(c, dict) and "value" in c}

    def admin(self, *args: str) -> str:
        return _proc.run([_proc.find_binary("varnishadm"), "-n", str(self.workdir), *args]).stdout


def compile_vcl(vcl_text: str) -> str:
    """Compile a VCL with ``varnishd -C``; returns the generated C or raises StackError.

    The file lives in a world-readable temporary folder: as root, varnishd reads it after
    dropping to its unprivileged jail user.
    """
    with tempfile.TemporaryDirectory(prefix="readscale-vcl-") as tmp:
        folder = Path(tmp)
        folder.chmod(0o755)
        path = folder / "check.vcl"
        path.write_text(vcl_text)
        path.chmod(0o644)
        try:
            return _proc.run([_proc.find_binary("varnishd"), "-C", "-f", str(path), "-n", str(folder / "n")]).stderr
        except StackError as exc:
            raise StackError(f"VCL does not compile: {exc}") from exc


def new_varnish(name: str, root: Path, port: int, admin_port: int, **extra: Any) -> VarnishNode:
    node_dir = root / name
    node_dir.mkdir(parents=True, exist_ok=True)
    spec = NodeSpec(
        name=name, kind="varnish", port=port, dir=str(node_dir), log=str(node_dir / "server.log"),
        extra={"admin_port": admin_port, **extra},
    )  # fmt: skip
    return VarnishNode(spec)
