"""Starting each kind of server into a stack: PostgreSQL (a primary and its replicas),
Redis, a Redis Cluster, Memcached and Varnish.

Each function picks free ports, registers its nodes with the stack *before* starting
them (so ``state.json`` names a half-started server and ``down`` can still stop it),
starts them and waits until they answer. :class:`~readscale.stack.Stack` exposes them as
its ``start_*`` methods; calling one twice returns what is already there.
"""

from __future__ import annotations

import os
import stat
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from readscale.errors import ConfigurationError, StackError
from readscale.stack import _proc
from readscale.stack.memcached import MemcachedNode, new_memcached
from readscale.stack.postgres import (
    PostgresNode,
    ReplicationMode,
    clone_replica,
    create_app_role,
    init_primary,
    new_postgres,
    set_replication_mode,
    wait_streaming,
)
from readscale.stack.prometheus import PrometheusNode, new_prometheus
from readscale.stack.redis import RedisNode, create_cluster, new_redis
from readscale.stack.sentinel import start_sentinel_group
from readscale.stack.tls import make_tls
from readscale.stack.varnish import VarnishNode, check_xkey, new_varnish

if TYPE_CHECKING:
    from readscale.stack._config import StackConfig
    from readscale.stack._stack import Stack

CLUSTER_SIZE = 6


def start_all(stack: Stack, config: StackConfig) -> None:
    """Every server ``config`` asks for, in order: PostgreSQL, Redis, the cluster,
    Memcached, Varnish."""
    if config.postgres:
        app_user = None
        if config.postgres_user and config.postgres_password:
            app_user = (config.postgres_user, config.postgres_password)
        start_postgres(
            stack,
            replicas=config.replicas,
            mode=config.mode,
            fsync=config.fsync,
            tls=config.postgres_tls,
            app_user=app_user,
        )
    if config.redis:
        start_redis(
            stack,
            aof=config.redis_aof,
            appendfsync=config.redis_appendfsync,
            password=config.redis_password,
            acl_user=(config.redis_acl_user, config.redis_acl_password) if config.redis_acl_user else None,
            tls=config.redis_tls,
        )
    if config.cluster:
        start_cluster(stack, password=config.redis_password)
    if config.sentinel:
        start_sentinel_group(stack, aof=config.redis_aof)
    if config.memcached:
        start_memcached(stack)
    if config.varnish:
        for i in range(config.varnish_nodes):
            start_varnish(
                stack, config.varnish_backend, probe_path=config.varnish_probe, max_life=config.varnish_max_life,
                name=varnish_name(i),
            )  # fmt: skip
    if config.prometheus:
        start_prometheus(stack, list(config.prometheus_targets), interval=config.prometheus_interval)


def _ensure_reachable(stack: Stack) -> None:
    """Servers run as an unprivileged user when we are root: every folder above the
    stack must let that user through."""
    user = stack.user
    if user.is_current:
        return
    os.chmod(stack.root, 0o755)  # noqa: S103 - the server account must traverse it
    for folder in [stack.root, *stack.root.resolve().parents]:
        mode = os.stat(folder)
        if mode.st_uid == user.uid:
            continue
        if not mode.st_mode & stat.S_IXOTH:
            raise StackError(
                f"{folder} is not reachable by {user.name}, the account PostgreSQL runs as; "
                "choose a stack folder outside it with READSCALE_STACK_DIR (for example under /tmp)"
            )


def start_postgres(
    stack: Stack,
    *,
    replicas: int = 2,
    mode: ReplicationMode = "async",
    fsync: bool = True,
    tls: bool = False,
    app_user: tuple[str, str] | None = None,
) -> PostgresNode:
    if "primary" in stack.nodes:
        return stack.primary
    _ensure_reachable(stack)
    files = None
    if tls:
        files = make_tls(stack.root / "postgres-tls")
        _proc.chown_tree(stack.root / "postgres-tls", stack.user)  # the key must be the server's, 0600
    ports = _proc.pick_ports(replicas + 1)
    stack._report("PostgreSQL primary: initdb")
    primary = new_postgres("primary", stack.root, ports[0], "primary", stack.user)
    stack._register(primary)
    init_primary(primary, fsync=fsync, tls=files, app_user=app_user)
    stack._save()
    stack._report("PostgreSQL primary: starting")
    primary.start(may_move=True)
    if app_user is not None:
        create_app_role(primary, *app_user)
    names = [f"r{i + 1}" for i in range(replicas)]
    nodes = []
    for name, port in zip(names, ports[1:], strict=True):
        secured = {k: primary.spec.extra[k] for k in ("tls", "app_user") if k in primary.spec.extra}
        replica = new_postgres(name, stack.root, port, "replica", stack.user, application_name=name, **secured)
        stack._register(replica)
        stack._report(f"PostgreSQL replica {name}: pg_basebackup")
        clone_replica(primary, replica)
        nodes.append(replica)
    stack._report(f"PostgreSQL replicas: starting {', '.join(names) or 'none'}")
    with ThreadPoolExecutor(max_workers=max(1, len(nodes))) as pool:
        list(pool.map(lambda r: r.start(may_move=True), nodes))
    wait_streaming(primary, names)
    if mode != "async":
        stack._report(f"PostgreSQL: {mode} replication")
        set_replication_mode(primary, mode, names)
    return primary


def start_redis(
    stack: Stack,
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
    if name in stack.nodes:
        node = stack.nodes[name]
        assert isinstance(node, RedisNode)
        return node
    (port,) = _proc.pick_ports(1)
    extra: dict[str, Any] = {"aof": aof, "appendfsync": appendfsync}
    if io_threads > 1:
        extra["io_threads"] = io_threads
    if environment:
        extra["environment"] = dict(environment)
    if password:
        extra["password"] = password
    if acl_user:
        user, secret = acl_user
        if not secret:
            raise ConfigurationError(f"the Redis ACL user {user!r} needs a password")
        extra["acl_user"], extra["acl_password"] = user, secret
    if tls:
        files = make_tls(stack.root / f"{name}-tls")
        extra["tls"] = {"ca": str(files.ca), "cert": str(files.cert), "key": str(files.key)}
    stack._report(f"Redis {name}: starting")
    node = new_redis(name, stack.root, port, **extra)
    stack._register(node)
    node.start(may_move=True)
    assert isinstance(node, RedisNode)
    return node


def start_cluster(stack: Stack, *, password: str | None = None) -> list[RedisNode]:
    if any(name.startswith("cluster") for name in stack.nodes):
        return stack.cluster_nodes
    ports = _proc.pick_ports(CLUSTER_SIZE * 2)
    nodes: list[RedisNode] = []
    for i in range(CLUSTER_SIZE):
        extra: dict[str, Any] = {"cluster_port": ports[CLUSTER_SIZE + i]}
        if password:
            extra["password"] = password
        node = new_redis(f"cluster{i + 1}", stack.root, ports[i], **extra)
        stack._register(node)
        nodes.append(node)
    stack._report("Redis Cluster: starting 6 nodes")
    with ThreadPoolExecutor(max_workers=CLUSTER_SIZE) as pool:
        list(pool.map(lambda n: n.start(may_move=True), nodes))
    stack._report("Redis Cluster: creating 3 primaries + 3 replicas")
    create_cluster(nodes)
    return nodes


def start_memcached(stack: Stack, *, name: str = "memcached", threads: int = 2, memory_mb: int = 64) -> MemcachedNode:
    if name in stack.nodes:
        node = stack.nodes[name]
        assert isinstance(node, MemcachedNode)
        return node
    (port,) = _proc.pick_ports(1)
    stack._report(f"Memcached {name}: starting")
    node = new_memcached(name, stack.root, port, threads=threads, memory_mb=memory_mb)
    stack._register(node)
    node.start(may_move=True)
    return node


def varnish_name(index: int) -> str:
    """The edge's nodes: ``varnish``, then ``varnish-2``, ``varnish-3``..."""
    return "varnish" if index == 0 else f"varnish-{index + 1}"


def start_varnish(
    stack: Stack, backend: str, *, probe_path: str | None = None, max_life: int | None = None, name: str = "varnish"
) -> VarnishNode:
    existing = stack.nodes.get(name)
    if isinstance(existing, VarnishNode):
        return existing
    check_xkey()
    port, admin = _proc.pick_ports(2)
    stack._report(f"Varnish {name}: starting")
    node = new_varnish(name, stack.root, port, admin, backend=backend, probe_path=probe_path, max_life=max_life)
    stack._register(node)
    node.start(may_move=True)
    return node


def start_prometheus(stack: Stack, targets: list[str], *, interval: float = 1.0) -> PrometheusNode:
    if "prometheus" in stack.nodes:
        return stack.prometheus
    (port,) = _proc.pick_ports(1)
    stack._report("Prometheus: starting")
    node = new_prometheus("prometheus", stack.root, port, targets=targets, interval=interval)
    stack._register(node)
    node.start(may_move=True)
    return node
