"""The local stack: real servers on loopback for tests, the demo and local development.

A stack lives in one visible folder (``.readscale/stack`` by default, or
``$READSCALE_STACK_DIR``): every server's data folder, its log, and ``state.json``, which
records what runs where. ``state.json`` is rewritten after every start and stop, so
``status`` and ``down`` work from another shell, and a crash in the middle of ``up``
still leaves enough behind for ``down`` to clean up. ``up`` itself tears down whatever
it started if it fails or is interrupted (Ctrl-C), and ``down`` leaves no process and no
folder behind.

This module holds the stack's state, its lookups, ``up``/``down`` and the faults; what
``up`` accepts is :class:`StackConfig` (``_config.py``), and how each server is started
is ``_start.py``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Any

from readscale.errors import StackError
from readscale.stack import _proc, _start
from readscale.stack._config import StackConfig
from readscale.stack._node import Node, NodeSpec
from readscale.stack._proc import ServerUser
from readscale.stack.memcached import MemcachedNode
from readscale.stack.postgres import PostgresNode, ReplicationMode
from readscale.stack.prometheus import PrometheusNode
from readscale.stack.redis import RedisNode
from readscale.stack.sentinel import SentinelNode, current_master, kill_master, sentinel_url, settled
from readscale.stack.varnish import VarnishNode, check_xkey

STATE_FILE = "state.json"
_NODE_TYPES: dict[str, type[Node]] = {
    "postgres": PostgresNode,
    "redis": RedisNode,
    "memcached": MemcachedNode,
    "varnish": VarnishNode,
    "prometheus": PrometheusNode,
    "sentinel": SentinelNode,
}


def default_root() -> Path:
    return Path(os.environ.get("READSCALE_STACK_DIR") or Path.cwd() / ".readscale" / "stack")


class Stack:
    """A set of real servers on loopback, with fault injection.

    Use it as a context manager, or call :meth:`up` and :meth:`down`. A stack started in
    one process can be reopened in another with :meth:`load`.
    """

    def __init__(self, root: Path | str | None = None, *, progress: Callable[[str], None] | None = None) -> None:
        self.root = Path(root) if root is not None else default_root()
        self._progress = progress
        self.nodes: dict[str, Node] = {}
        self.config: StackConfig | None = None
        self._user: ServerUser | None = None
        self._lock = threading.RLock()
        self._created_parent: Path | None = None

    def _report(self, message: str) -> None:
        if self._progress is not None:
            self._progress(message)

    # -- state -----------------------------------------------------------------------------

    @property
    def state_path(self) -> Path:
        return self.root / STATE_FILE

    @property
    def user(self) -> ServerUser:
        if self._user is None:
            self._user = _proc.server_user()
        return self._user

    def _save(self) -> None:
        with self._lock:
            if not self.root.exists():
                return
            state = {
                "version": 1,
                "config": None if self.config is None else self.config.__dict__,
                "user": self._user.name if self._user else None,
                "created_parent": str(self._created_parent) if self._created_parent else None,
                "nodes": [node.spec.to_dict() for node in self.nodes.values()],
            }
            tmp = self.state_path.with_suffix(".tmp")
            # The configuration may hold the stack's passwords: readable by its owner only.
            tmp.touch(mode=0o600)
            tmp.chmod(0o600)
            tmp.write_text(json.dumps(state, indent=2))
            tmp.replace(self.state_path)

    @classmethod
    def load(cls, root: Path | str | None = None) -> Stack:
        """Reopen a stack started elsewhere (another shell or process) from its folder."""
        stack = cls(root)
        try:
            state = json.loads(stack.state_path.read_text())
        except FileNotFoundError:
            raise StackError(f"no stack in {stack.root} (nothing to show or stop; run `readscale stack up`)") from None
        except json.JSONDecodeError as exc:
            raise StackError(f"the stack state file {stack.state_path} is damaged: {exc}") from exc
        if state.get("config"):
            stack.config = StackConfig(**state["config"])
        if state.get("created_parent"):
            stack._created_parent = Path(state["created_parent"])
        for raw in state.get("nodes", []):
            stack._adopt(NodeSpec.from_dict(raw))
        return stack

    def _adopt(self, spec: NodeSpec) -> Node:
        node_type = _NODE_TYPES[spec.kind]
        user = self.user if node_type.runs_as_server_user else None
        return self._register(node_type(spec, user))

    def _register(self, node: Node) -> Node:
        node.on_change.append(self._save)
        self.nodes[node.name] = node
        self._save()
        return node

    # -- accessors -----------------------------------------------------------------------

    def node(self, name: str) -> Node:
        try:
            return self.nodes[name]
        except KeyError:
            known = ", ".join(self.nodes) or "none"
            raise StackError(f"no node named {name!r} in this stack (nodes: {known})") from None

    @property
    def primary(self) -> PostgresNode:
        node = self.nodes.get("primary")
        if not isinstance(node, PostgresNode):
            raise StackError("this stack has no PostgreSQL primary")
        return node

    @property
    def replicas(self) -> list[PostgresNode]:
        return [n for n in self.nodes.values() if isinstance(n, PostgresNode) and n.role == "replica"]

    def replica(self, name: str) -> PostgresNode:
        node = self.node(name)
        if not isinstance(node, PostgresNode) or node.role != "replica":
            raise StackError(f"{name} is not a PostgreSQL replica")
        return node

    @property
    def redis(self) -> RedisNode:
        node = self.nodes.get("redis")
        if not isinstance(node, RedisNode):
            raise StackError("this stack has no standalone Redis")
        return node

    @property
    def cluster_nodes(self) -> list[RedisNode]:
        nodes = [n for n in self.nodes.values() if isinstance(n, RedisNode) and n.name.startswith("cluster")]
        if not nodes:
            raise StackError("this stack has no Redis Cluster")
        return nodes

    @property
    def memcached(self) -> MemcachedNode:
        node = self.nodes.get("memcached")
        if not isinstance(node, MemcachedNode):
            raise StackError("this stack has no Memcached")
        return node

    @property
    def varnish(self) -> VarnishNode:
        node = self.nodes.get("varnish")
        if not isinstance(node, VarnishNode):
            raise StackError("this stack has no Varnish")
        return node

    @property
    def sentinel_url(self) -> str:
        """The Sentinel group's ``redis+sentinel://`` URL (``StackConfig(sentinel=True)``)."""
        return sentinel_url(self)

    def sentinel_master(self) -> RedisNode:
        """The Redis the sentinels name master now."""
        return current_master(self)

    def sentinel_settled(self) -> bool:
        """Whether the Sentinel group is whole again (``readscale.stack.sentinel.settled``)."""
        return settled(self)

    def kill_sentinel_master(self) -> str:
        """The Sentinel group's fault: SIGKILL the current master; returns its name."""
        return kill_master(self)

    @property
    def varnish_nodes(self) -> list[VarnishNode]:
        """The edge's nodes in order (``varnish``, ``varnish-2``...), for purging them all."""
        nodes = [n for n in self.nodes.values() if isinstance(n, VarnishNode)]
        if not nodes:
            raise StackError("this stack has no Varnish")
        return sorted(nodes, key=lambda n: (len(n.name), n.name))

    @property
    def prometheus(self) -> PrometheusNode:
        node = self.nodes.get("prometheus")
        if not isinstance(node, PrometheusNode):
            raise StackError("this stack has no Prometheus")
        return node

    # -- up ------------------------------------------------------------------------------

    def __enter__(self) -> Stack:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.down()

    def up(self, config: StackConfig | None = None) -> Stack:
        """Start everything ``config`` asks for and wait until each server answers.

        On any failure, or Ctrl-C, everything this call started is stopped and the folder
        removed before the exception propagates.
        """
        config = config or StackConfig()
        for binary in config.binaries():
            _proc.find_binary(binary)  # one clear error naming the package, before anything starts
        if config.varnish:
            check_xkey()
        self.prepare()
        self.config = config
        try:
            _start.start_all(self, config)
        except BaseException:
            self.down()
            raise
        return self

    def prepare(self) -> None:
        """Create the stack folder; refuse if a stack is already running in it."""
        if self.state_path.exists():
            existing = Stack.load(self.root)
            if any(node.is_running() for node in existing.nodes.values()):
                raise StackError(
                    f"a stack is already running in {self.root}; stop it with `readscale stack down` "
                    "(or choose another folder with READSCALE_STACK_DIR)"
                )
            existing.down()
        parent = self.root.parent
        if not parent.exists():
            # Remember the topmost folder we create, so down removes it again.
            top = parent
            while not top.parent.exists():
                top = top.parent
            self._created_parent = top
        self.root.mkdir(parents=True, exist_ok=True)
        self._save()

    def start_postgres(
        self,
        *,
        replicas: int = 2,
        mode: ReplicationMode = "async",
        fsync: bool = True,
        tls: bool = False,
        app_user: tuple[str, str] | None = None,
    ) -> PostgresNode:
        """A primary and ``replicas`` streaming replicas named r1, r2, ...

        ``tls``: SSL on, with a certificate for 127.0.0.1 signed by the stack's own CA
        (``node.ca_file``). ``app_user``: ``(role, password)`` of a login role admitted
        with SCRAM only (and only over TLS when ``tls``); ``node.app_dsn`` names it.
        """
        return _start.start_postgres(self, replicas=replicas, mode=mode, fsync=fsync, tls=tls, app_user=app_user)

    def start_redis(
        self,
        *,
        aof: bool = False,
        password: str | None = None,
        acl_user: tuple[str, str | None] | None = None,
        tls: bool = False,
        name: str = "redis",
        appendfsync: str = "always",
        environment: dict[str, str] | None = None,
        io_threads: int = 1,
    ) -> RedisNode:
        """A standalone Redis; optionally with AOF (``appendfsync always`` unless told:
        write-behind's default mode needs it), a password, an ACL user and TLS only.
        ``environment``: variables for the server process (e.g. a test's LD_PRELOAD);
        ``io_threads``: Redis's I/O threads (reads too)."""
        return _start.start_redis(
            self,
            aof=aof,
            password=password,
            acl_user=acl_user,
            tls=tls,
            name=name,
            appendfsync=appendfsync,
            environment=environment,
            io_threads=io_threads,
        )

    def start_cluster(self, *, password: str | None = None) -> list[RedisNode]:
        """Three primaries and three replicas with every one of the 16384 slots covered."""
        return _start.start_cluster(self, password=password)

    def start_memcached(self, *, name: str = "memcached", threads: int = 2, memory_mb: int = 64) -> MemcachedNode:
        """A memcached (``name`` lets a stack hold several: a bench's variants)."""
        return _start.start_memcached(self, name=name, threads=threads, memory_mb=memory_mb)

    def start_varnish(
        self, backend: str, *, probe_path: str | None = None, max_life: int | None = None, name: str = "varnish"
    ) -> VarnishNode:
        """One edge node (call again with another ``name`` for an edge of several)."""
        return _start.start_varnish(self, backend, probe_path=probe_path, max_life=max_life, name=name)

    # -- down ----------------------------------------------------------------------------

    def down(self) -> None:
        """Stop every server (in parallel) and remove the stack's folder."""
        with self._lock:
            nodes = list(self.nodes.values())
        if nodes:
            self._report(f"stopping {len(nodes)} servers")
            with ThreadPoolExecutor(max_workers=len(nodes)) as pool:
                list(pool.map(lambda n: n.stop(grace=20.0), nodes))
        with self._lock:
            self.nodes.clear()
        shutil.rmtree(self.root, ignore_errors=True)
        if self._created_parent is not None:
            with contextlib.suppress(OSError):
                _remove_empty_upwards(self.root.parent, self._created_parent)
        if self.root.exists():
            raise StackError(f"could not remove the stack folder {self.root}")

    # -- status --------------------------------------------------------------------------

    def status(self) -> list[dict[str, Any]]:
        return [node.status() for node in self.nodes.values()]

    def endpoints(self) -> dict[str, Any]:
        """Every endpoint as plain data: DSNs, URLs and addresses."""
        out: dict[str, Any] = {"root": str(self.root)}
        if "primary" in self.nodes:
            out["postgres"] = {
                "primary": self.primary.endpoint(),
                "replicas": [r.endpoint() for r in self.replicas],
                "mode": self.config.mode if self.config else "async",
            }
        if "redis" in self.nodes:
            out["redis"] = self.redis.endpoint()
            if self.redis.ca_file:
                out["redis"]["ca_file"] = self.redis.ca_file
        if any(name.startswith("cluster") for name in self.nodes):
            nodes = self.cluster_nodes
            out["redis_cluster"] = {
                "nodes": [f"127.0.0.1:{n.port}" for n in nodes],
                "url": nodes[0].url,
            }
        if "sentinel1" in self.nodes:
            out["sentinel"] = {
                "url": self.sentinel_url,
                "sentinels": [self.nodes[f"sentinel{i}"].endpoint() for i in (1, 2, 3)],
            }
        if "memcached" in self.nodes:
            out["memcached"] = self.memcached.endpoint()
        if "varnish" in self.nodes:
            out["varnish"] = self.varnish.endpoint()
            edge = self.varnish_nodes
            if len(edge) > 1:
                out["varnish_nodes"] = [n.endpoint() for n in edge]
        if "prometheus" in self.nodes:
            out["prometheus"] = self.prometheus.endpoint()
        return out

    # -- faults --------------------------------------------------------------------------

    def stop(self, name: str) -> None:
        self.node(name).stop()

    def kill(self, name: str) -> None:
        self.node(name).kill()

    def start(self, name: str) -> None:
        self.node(name).start()

    def restart(self, name: str) -> None:
        self.node(name).restart()

    def freeze(self, name: str) -> None:
        """Make a server hang (SIGSTOP): clients see timeouts, not refused connections."""
        self.node(name).freeze()

    def thaw(self, name: str) -> None:
        self.node(name).thaw()

    def pause_replay(self, name: str) -> None:
        self.replica(name).pause_replay()

    def resume_replay(self, name: str) -> None:
        self.replica(name).resume_replay()

    def set_apply_delay(self, name: str, seconds: float) -> None:
        self.replica(name).set_apply_delay(seconds)

    def replay_lag_bytes(self, name: str) -> int:
        """How many bytes of WAL the primary has written that replica ``name`` has not replayed."""
        lsn = self.replica(name).replay_lsn()
        return int(float(self.primary.sql(f"SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '{lsn}')")))

    def logs(self) -> Iterator[tuple[str, Path]]:
        for node in self.nodes.values():
            yield node.name, node.log


def _remove_empty_upwards(folder: Path, stop_at: Path) -> None:
    """Remove ``folder`` and its parents while empty, up to and including ``stop_at``."""
    folder = folder.resolve()
    stop_at = stop_at.resolve()
    while True:
        if folder.exists():
            folder.rmdir()
        if folder == stop_at or stop_at not in folder.parents:
            return
        folder = folder.parent
