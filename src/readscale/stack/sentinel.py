"""A Redis Sentinel group for the local stack: one master and two replicas (``sredis1``..3,
``sredis1`` the first master) watched by three sentinels (``sentinel1``..3), quorum 2.

Tuned to fail over in seconds, not the defaults' minute: ``down-after-milliseconds`` 1000,
``failover-timeout`` 5000, replicas linked with ``repl-diskless-sync-delay 0``. The
fault to inject is the master's death (:func:`kill_master`); the sentinels then promote a
replica and reconfigure the rest, and a client of ``stack.sentinel_url`` follows.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from readscale.errors import StackError
from readscale.stack import _proc
from readscale.stack._node import Node, NodeSpec
from readscale.stack.redis import RedisNode, new_redis, resp_ping

if TYPE_CHECKING:
    from readscale.stack._stack import Stack

SERVICE = "readscale"
REDIS_NAMES = ("sredis1", "sredis2", "sredis3")
SENTINEL_NAMES = ("sentinel1", "sentinel2", "sentinel3")
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 5000


class SentinelNode(Node):
    """``redis-server <conf> --sentinel``. ``extra``: ``master_port`` (the master it
    monitors first; the sentinel rewrites its own config as the master changes)."""

    kind = "sentinel"

    @property
    def conf(self) -> Path:
        return self.dir / "sentinel.conf"

    def before_start(self) -> None:
        if self.conf.exists():  # a restart keeps what the sentinel learnt
            return
        self.conf.write_text(
            f"port {self.port}\n"
            "bind 127.0.0.1\n"
            "protected-mode no\n"
            f'dir "{self.dir}"\n'
            f"sentinel monitor {SERVICE} 127.0.0.1 {self.spec.extra['master_port']} 2\n"
            f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}\n"
            f"sentinel failover-timeout {SERVICE} {FAILOVER_TIMEOUT_MS}\n"
            f"sentinel parallel-syncs {SERVICE} 1\n"
        )

    def argv(self) -> list[str]:
        return [_proc.find_binary("redis-server"), str(self.conf), "--sentinel", "--daemonize", "no", "--logfile", ""]

    def probe(self) -> bool:
        return resp_ping(self.port)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def endpoint(self) -> dict[str, Any]:
        return {"name": self.name, "port": self.port, "address": self.address}

    def master(self) -> dict[str, str]:
        """``SENTINEL MASTER`` as a dict (ip, port, num-slaves, num-other-sentinels...)."""
        import redis

        client = redis.Redis(port=self.port, socket_timeout=2, protocol=2, decode_responses=True)
        try:
            reply: Any = client.sentinel_master(SERVICE)
            return {str(k): str(v) for k, v in dict(reply).items()}
        finally:
            client.close()


def new_sentinel(name: str, root: Path, port: int, master_port: int) -> SentinelNode:
    node_dir = root / name
    node_dir.mkdir(parents=True, exist_ok=True)
    spec = NodeSpec(
        name=name, kind="sentinel", port=port, dir=str(node_dir), log=str(node_dir / "server.log"),
        extra={"master_port": master_port},
    )  # fmt: skip
    return SentinelNode(spec)


def start_sentinel_group(stack: Stack, *, aof: bool = False) -> list[Node]:
    """Three Redis (one master, two replicas) and three sentinels that agree on them."""
    if "sentinel1" in stack.nodes:
        return [stack.nodes[n] for n in (*REDIS_NAMES, *SENTINEL_NAMES)]
    ports = _proc.pick_ports(6)
    master_port = ports[0]
    redis_nodes: list[RedisNode] = []
    for i, name in enumerate(REDIS_NAMES):
        extra: dict[str, Any] = {"aof": aof, "appendfsync": "always"}
        if i:
            extra["replicaof"] = master_port
        node = new_redis(name, stack.root, ports[i], **extra)
        stack._register(node)
        redis_nodes.append(node)
    stack._report("Redis Sentinel: starting a master and two replicas")
    for node in redis_nodes:
        node.start()
    sentinels = [new_sentinel(n, stack.root, ports[3 + i], master_port) for i, n in enumerate(SENTINEL_NAMES)]
    for sentinel in sentinels:
        stack._register(sentinel)
    stack._report("Redis Sentinel: starting three sentinels")
    with ThreadPoolExecutor(max_workers=3) as pool:
        list(pool.map(lambda n: n.start(), sentinels))

    def agreed() -> bool:
        try:
            views = [s.master() for s in sentinels]
        except Exception:
            return False
        # Replicas online (synced once), not merely known: a write made now survives a failover.
        online = redis_nodes[0].cli("INFO", "replication").count("state=online")
        return online == 2 and all(int(v["num-slaves"]) == 2 and int(v["num-other-sentinels"]) == 2 for v in views)

    _proc.wait_until(agreed, timeout=60, what="the sentinels to see two replicas and each other")
    return [*redis_nodes, *sentinels]


def sentinel_url(stack: Stack) -> str:
    """``redis+sentinel://`` for :class:`readscale.settings.RedisSettings`."""
    nodes = [stack.nodes[n] for n in SENTINEL_NAMES if n in stack.nodes]
    if not nodes:
        raise StackError("this stack has no Sentinel group (StackConfig(sentinel=True))")
    return "redis+sentinel://" + ",".join(f"127.0.0.1:{n.port}" for n in nodes) + f"/{SERVICE}"


def current_master(stack: Stack) -> RedisNode:
    """The Redis the sentinels name master now: the answer of the newest configuration
    epoch (a sentinel that has not heard of a failover yet answers the old master)."""
    answers: list[tuple[int, int]] = []  # (config epoch, port)
    for name in SENTINEL_NAMES:
        node = stack.nodes.get(name)
        if isinstance(node, SentinelNode) and node.is_running():
            try:
                view = node.master()
                answers.append((int(view.get("config-epoch", 0)), int(view["port"])))
            except Exception:  # noqa: S112 - that sentinel is down too: ask the others
                continue
    for _epoch, port in sorted(answers, reverse=True):
        for redis_name in REDIS_NAMES:
            candidate = stack.nodes.get(redis_name)
            if isinstance(candidate, RedisNode) and candidate.port == port:
                return candidate
    raise StackError("no sentinel answered with a known master")


def settled(stack: Stack) -> bool:
    """The group is whole after a failover: every running sentinel names the same master,
    that Redis says it is master, and it has a replica connected (what durable
    write-behind's ``WAIT 1`` needs). Until then a client may still be handed a node a
    later election demotes."""
    import redis

    ports: set[int] = set()
    for name in SENTINEL_NAMES:
        node = stack.nodes.get(name)
        if isinstance(node, SentinelNode) and node.is_running():
            try:
                ports.add(int(node.master()["port"]))
            except Exception:
                return False
    if len(ports) != 1:
        return False
    (port,) = ports
    client = redis.Redis(port=port, socket_timeout=2)
    try:
        info: Any = client.info("replication")
    except Exception:
        return False
    finally:
        client.close()
    return bool(info.get("role") == "master" and int(info.get("connected_slaves", 0)) >= 1)


def kill_master(stack: Stack) -> str:
    """SIGKILL the current master (the fault): returns its name."""
    master = current_master(stack)
    port = master.port
    master.kill()
    # Dead when its port is closed: a client that still reaches it would write to a master
    # the fault already removed.
    _proc.wait_until(lambda: not _proc.is_listening(port), timeout=10, what=f"{master.name} to die")
    stack._save()
    return master.name
