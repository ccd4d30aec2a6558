"""Memcached for the local stack (1.6, with the meta protocol readscale's client speaks)."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

from readscale.stack import _proc
from readscale.stack._node import Node, NodeSpec


def version_ping(port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(b"version\r\n")
            return sock.recv(64).startswith(b"VERSION")
    except OSError:
        return False


class MemcachedNode(Node):
    """A memcached server. ``extra``: ``memory_mb``, ``max_item_size`` (for example ``1m``),
    ``threads`` (worker threads, default 2)."""

    kind = "memcached"

    def argv(self) -> list[str]:
        extra = self.spec.extra
        args = [
            _proc.find_binary("memcached"),
            "-l", "127.0.0.1",
            "-p", str(self.port),
            "-U", "0",
            "-m", str(extra.get("memory_mb", 64)),
            "-t", str(extra.get("threads", 2)),
            "-c", "4096",
            "-I", str(extra.get("max_item_size", "1m")),
        ]  # fmt: skip
        if os.geteuid() == 0:
            args += ["-u", "nobody"]  # memcached refuses to run as root
        return args

    def probe(self) -> bool:
        return version_ping(self.port)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def endpoint(self) -> dict[str, Any]:
        return {"name": self.name, "port": self.port, "address": self.address}


def new_memcached(name: str, root: Path, port: int, **extra: Any) -> MemcachedNode:
    node_dir = root / name
    node_dir.mkdir(parents=True, exist_ok=True)
    spec = NodeSpec(
        name=name,
        kind="memcached",
        port=port,
        dir=str(node_dir),
        log=str(node_dir / "server.log"),
        extra=extra,
    )
    return MemcachedNode(spec)
