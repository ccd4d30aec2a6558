"""The local stack: real PostgreSQL, Redis, Redis Cluster, Memcached and Varnish servers
on loopback, for tests, the demo and local development, with fault injection.

    from readscale.stack import Stack, StackConfig

    with Stack("/tmp/my-stack").up(StackConfig(replicas=2, cluster=True)) as stack:
        print(stack.primary.dsn, [r.dsn for r in stack.replicas], stack.redis.url)
        stack.pause_replay("r1")          # r1's lag now grows
        stack.kill("redis")               # a crash, as far as clients can tell
        stack.start("redis")

From a shell: ``readscale stack up``, ``readscale stack status``, ``readscale stack down``.
"""

from readscale.stack._config import StackConfig
from readscale.stack._node import Node
from readscale.stack._proc import PACKAGES, find_binary
from readscale.stack._stack import Stack, default_root
from readscale.stack.memcached import MemcachedNode
from readscale.stack.postgres import REPLICATION_MODES, PostgresNode, ReplicationMode
from readscale.stack.redis import RedisNode
from readscale.stack.varnish import VarnishNode, compile_vcl

__all__ = [
    "PACKAGES",
    "REPLICATION_MODES",
    "MemcachedNode",
    "Node",
    "PostgresNode",
    "RedisNode",
    "ReplicationMode",
    "Stack",
    "StackConfig",
    "VarnishNode",
    "compile_vcl",
    "default_root",
    "find_binary",
]
