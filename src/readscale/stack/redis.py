"""Redis for the local stack: a standalone server and a 3 + 3 node Redis Cluster.

Facts this relies on (shared notes, verified on Redis 7.0): the cluster bus port must be
given explicitly (port + 10000 may exceed 65535); ``repl-diskless-sync-delay 0`` links
replicas in about 2 s instead of 6; ``cluster-node-timeout 2000`` fails over in about 4 s
instead of 20; ``CLUSTER SLOTS`` hides replicas whose replication offset is still 0, so
one write per primary is made before the cluster is declared ready.
"""

from __future__ import annotations

import socket
import ssl
from typing import Any

from readscale.errors import StackError
from readscale.stack import _proc
from readscale.stack._node import Node, NodeSpec


def resp_ping(port: int, password: str | None = None, timeout: float = 0.5, *, cafile: str | None = None) -> bool:
    """One PING over a raw socket (TLS with ``cafile``): true once the server answers and
    has loaded its data."""
    commands = (_encode("AUTH", password) if password else b"") + _encode("PING")
    expected = 2 if password else 1
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as raw:
            if cafile:
                context = ssl.create_default_context(cafile=cafile)
                with context.wrap_socket(raw, server_hostname="127.0.0.1") as secure:
                    secure.sendall(commands)
                    reply = _read_lines(secure, expected)
            else:
                raw.sendall(commands)
                reply = _read_lines(raw, expected)
    except OSError:
        return False
    return reply[-1:] == [b"+PONG"]


def _encode(*args: str) -> bytes:
    out = [f"*{len(args)}\r\n".encode()]
    for arg in args:
        data = arg.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def _read_lines(sock: socket.socket, count: int) -> list[bytes]:
    buf = b""
    while buf.count(b"\r\n") < count:
        chunk = sock.recv(4096)
        if not chunk:
            break
        buf += chunk
    return buf.split(b"\r\n")[:count]


#: The fsync policies the stack runs an AOF Redis with: ``always`` keeps write-behind's
#: ``durable`` promise, ``everysec`` its ``fast`` one.
APPENDFSYNC = ("always", "everysec")


class RedisNode(Node):
    """A redis-server. ``extra``: ``cluster_port`` (cluster mode), ``aof`` with
    ``appendfsync`` (default ``always``), ``password``, ``acl_user``/``acl_password`` (an
    ACL user besides the default one), ``tls`` (a dict with ``ca``, ``cert``, ``key``:
    the port then speaks TLS only), ``environment`` (variables for the server process,
    set through ``env``, which then becomes the server: its pid is the server's),
    ``io_threads`` (threads for socket reads and writes; commands still run on one)."""

    kind = "redis"

    def argv(self) -> list[str]:
        extra = self.spec.extra
        environment = extra.get("environment") or {}
        prefix = ["/usr/bin/env", *(f"{k}={v}" for k, v in sorted(environment.items()))] if environment else []
        args = [
            *prefix,
            _proc.find_binary("redis-server"),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.dir),
            "--daemonize", "no",
            "--logfile", "",
            "--save", "",
            "--protected-mode", "yes",
        ]  # fmt: skip
        if extra.get("aof"):
            args += [
                "--appendonly",
                "yes",
                "--appendfsync",
                str(extra.get("appendfsync", "always")),
            ]
        else:
            args += ["--appendonly", "no"]
        if extra.get("io_threads", 1) > 1:
            args += ["--io-threads", str(extra["io_threads"]), "--io-threads-do-reads", "yes"]
        if extra.get("password"):
            args += ["--requirepass", str(extra["password"])]
        if extra.get("acl_user"):
            args += ["--user", str(extra["acl_user"]), "on", f">{extra['acl_password']}", "~*", "&*", "+@all"]
        tls = extra.get("tls")
        if tls:
            args[args.index("--port") + 1] = "0"
            args += [
                "--tls-port", str(self.port),
                "--tls-cert-file", str(tls["cert"]),
                "--tls-key-file", str(tls["key"]),
                "--tls-ca-cert-file", str(tls["ca"]),
                "--tls-auth-clients", "no",
            ]  # fmt: skip
        if extra.get("replicaof"):
            # A Sentinel group's replica (the sentinels move it to another master later).
            args += ["--replicaof", "127.0.0.1", str(extra["replicaof"]), "--repl-diskless-sync-delay", "0"]
        if extra.get("cluster_port"):
            args += [
                "--cluster-enabled", "yes",
                "--cluster-port", str(extra["cluster_port"]),
                "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", str(extra.get("node_timeout_ms", 2000)),
                "--repl-diskless-sync-delay", "0",
            ]  # fmt: skip
        return args

    def reserved_ports(self) -> set[int]:
        cport = self.spec.extra.get("cluster_port")
        return {int(cport)} if cport else set()

    def ports_changed(self) -> None:
        if self.spec.extra.get("cluster_port"):
            (cport,) = _proc.pick_ports(1, exclude={self.port})
            self.spec.extra["cluster_port"] = cport

    def probe(self) -> bool:
        tls = self.spec.extra.get("tls")
        return resp_ping(self.port, self.spec.extra.get("password"), cafile=str(tls["ca"]) if tls else None)

    @property
    def url(self) -> str:
        password = self.spec.extra.get("password")
        auth = f":{password}@" if password else ""
        scheme = "rediss" if self.spec.extra.get("tls") else "redis"
        return f"{scheme}://{auth}127.0.0.1:{self.port}/0"

    @property
    def ca_file(self) -> str | None:
        tls = self.spec.extra.get("tls")
        return str(tls["ca"]) if tls else None

    def endpoint(self) -> dict[str, Any]:
        return {"name": self.name, "port": self.port, "url": self.url}

    def cli(self, *args: str, timeout: float = 10.0) -> str:
        """Run a redis-cli command against this node and return its raw output."""
        argv = [_proc.find_binary("redis-cli"), "-h", "127.0.0.1", "-p", str(self.port)]
        password = self.spec.extra.get("password")
        if password:
            argv += ["--no-auth-warning", "-a", str(password)]
        if self.ca_file:
            argv += ["--tls", "--cacert", self.ca_file]
        return _proc.run([*argv, *args], timeout=timeout).stdout


def new_redis(name: str, root: Any, port: int, **extra: Any) -> RedisNode:
    node_dir = root / name
    node_dir.mkdir(parents=True, exist_ok=True)
    spec = NodeSpec(
        name=name,
        kind="redis",
        port=port,
        dir=str(node_dir),
        log=str(node_dir / "server.log"),
        extra=extra,
    )
    return RedisNode(spec)


def info_field(text: str, key: str) -> str | None:
    for line in text.splitlines():
        if line.startswith(key + ":"):
            return line.split(":", 1)[1].strip()
    return None


def create_cluster(nodes: list[RedisNode], *, timeout: float = 60.0) -> None:
    """Join six started nodes into 3 primaries + 3 replicas and wait until it is fully ready."""
    first = nodes[0]
    addresses = [f"127.0.0.1:{node.port}" for node in nodes]
    first.cli(
        "--cluster",
        "create",
        *addresses,
        "--cluster-replicas",
        "1",
        "--cluster-yes",
        timeout=timeout,
    )

    def all_ok() -> bool:
        for node in nodes:
            info = node.cli("cluster", "info")
            if info_field(info, "cluster_state") != "ok" or info_field(info, "cluster_known_nodes") != str(len(nodes)):
                return False
            if info_field(info, "cluster_slots_assigned") != "16384":
                return False
        return True

    _proc.wait_until(all_ok, timeout=timeout, what="cluster_state:ok on every node", interval=0.05)

    def replicas_linked() -> bool:
        for node in nodes:
            repl = node.cli("info", "replication")
            if info_field(repl, "role") == "slave" and info_field(repl, "master_link_status") != "up":
                return False
        return True

    _proc.wait_until(replicas_linked, timeout=timeout, what="every replica's master link", interval=0.05)
    # One write per primary makes the replicas visible in CLUSTER SLOTS (see module docstring).
    script = "".join(f"SET readscale:stack:warmup:{i} 1\n" for i in range(32))
    argv = [_proc.find_binary("redis-cli"), "-c", "-h", "127.0.0.1", "-p", str(first.port)]
    password = first.spec.extra.get("password")
    if password:
        argv += ["--no-auth-warning", "-a", str(password)]
    _proc.run(argv, input_text=script, timeout=timeout)

    def slots_list_replicas() -> bool:
        out = first.cli("cluster", "slots")
        return out.split().count("127.0.0.1") >= len(nodes)

    _proc.wait_until(
        slots_list_replicas,
        timeout=timeout,
        what="CLUSTER SLOTS to list every replica",
        interval=0.1,
    )


def cluster_roles(nodes: list[RedisNode]) -> dict[str, str]:
    """Map each running node's name to ``master`` or ``slave`` as the node itself reports."""
    roles = {}
    for node in nodes:
        if not node.is_running():
            continue
        try:
            roles[node.name] = info_field(node.cli("info", "replication"), "role") or "?"
        except StackError:
            roles[node.name] = "?"
    return roles
