"""A stack whose parts start lazily, once, and are shared by a whole test session."""

from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path

from readscale.stack import MemcachedNode, RedisNode, Stack

# Test-only credentials of the secured Redis (generated per session would hide nothing:
# the stack lives on loopback and dies with the session).
SECURE_PASSWORD = "default-user-secret"  # noqa: S105 - a throwaway test server
SECURE_USER = "readscale"
SECURE_USER_PASSWORD = "acl-user-secret"  # noqa: S105 - a throwaway test server
# The secured PostgreSQL's application role (TLS only, SCRAM password).
SECURE_PG_USER = "readscale_app"
SECURE_PG_PASSWORD = "pg-app-secret-8f3a"  # noqa: S105 - a throwaway test server


def new_stack_root(prefix: str = "readscale-test-") -> Path:
    """A fresh folder for a test stack, reachable by the unprivileged server account."""
    base = os.environ.get("READSCALE_TEST_STACK_DIR")
    if base:
        Path(base).mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix=prefix, dir=base))
    root.chmod(0o755)
    return root


class SharedStack:
    """Starts each part of one :class:`Stack` on first request."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = root or new_stack_root()
        self.stack = Stack(self.root / "stack")
        self._lock = threading.Lock()
        self._prepared = False
        self._secure_pg: Stack | None = None

    def _prepare(self) -> None:
        if not self._prepared:
            self.stack.prepare()
            self._prepared = True

    def postgres(self) -> Stack:
        with self._lock:
            self._prepare()
            self.stack.start_postgres(replicas=2)
        return self.stack

    def redis(self) -> RedisNode:
        with self._lock:
            self._prepare()
            return self.stack.start_redis()

    def durable_redis(self) -> RedisNode:
        """A Redis with AOF and ``appendfsync always``: what write-behind's default mode
        (``durable``) needs, apart from the plain one (whose writes need no fsync)."""
        with self._lock:
            self._prepare()
            return self.stack.start_redis(name="redis-aof", aof=True, appendfsync="always")

    def cluster(self) -> list[RedisNode]:
        with self._lock:
            self._prepare()
            return self.stack.start_cluster()

    def secure_redis(self) -> RedisNode:
        """A Redis that accepts only TLS, with a password and an ACL user ``readscale``;
        it persists as production would (AOF, ``appendfsync always``: write-behind's
        default mode accepts it)."""
        with self._lock:
            self._prepare()
            return self.stack.start_redis(
                name="redis-secure",
                aof=True,
                appendfsync="always",
                password=SECURE_PASSWORD,
                acl_user=(SECURE_USER, SECURE_USER_PASSWORD),
                tls=True,
            )

    def secure_postgres(self) -> Stack:
        """A second PostgreSQL (primary + replica r1, in its own stack): SSL on, and the
        role ``readscale_app`` admitted only over TLS with its SCRAM password."""
        with self._lock:
            self._prepare()
            if self._secure_pg is None:
                stack = Stack(self.root / "secure-pg")
                stack.prepare()
                self._secure_pg = stack
                stack.start_postgres(replicas=1, tls=True, app_user=(SECURE_PG_USER, SECURE_PG_PASSWORD))
            return self._secure_pg

    def memcached(self) -> MemcachedNode:
        with self._lock:
            self._prepare()
            return self.stack.start_memcached()

    def close(self) -> None:
        with self._lock:
            if self._secure_pg is not None:
                self._secure_pg.down()
            if self._prepared:
                self.stack.down()
            if self.root.exists():
                self.root.rmdir()
