"""pytest fixtures for readscale and for applications built on it.

Installed with readscale as a pytest plugin (entry point ``readscale``). Nothing starts
until a test asks for a fixture: the first test that wants PostgreSQL starts a primary
with two streaming replicas, the first that wants Redis starts a Redis, and so on; each
part is started once per test session and stopped at its end. Tests that break servers
on purpose get a stack of their own from ``readscale_stack_factory``.

Fixtures (session scope unless noted):

- ``readscale_stack``: the shared :class:`SharedStack` (parts start on first use).
- ``pg_stack``: the shared stack with PostgreSQL up (primary + replicas r1, r2).
- ``pg_primary_dsn``, ``pg_replica_dsns``.
- ``redis_url``; ``redis_client`` and ``async_redis_client`` (function scope, flushed).
- ``durable_redis_url``: a Redis with AOF and ``appendfsync always``, for write-behind
  in its default mode (``durable``), which refuses a Redis without them.
- ``secure_redis_settings``: ``RedisSettings`` for a Redis that speaks TLS only and
  needs the ACL user ``readscale`` and its password.
- ``secure_pg_stack``: a second PostgreSQL (primary + r1) with SSL on; its role
  ``readscale_app`` logs in over TLS only, with a SCRAM password.
  ``secure_pg_settings``: the matching ``PostgresSettings`` (``sslmode=verify-full``
  and the stack's CA), to apply to its nodes' DSNs.
- ``redis_cluster_nodes`` (``host:port`` strings); ``redis_cluster_client`` (function).
- ``memcached_address``.
- ``readscale_stack_factory`` (function scope): ``factory(StackConfig(...))`` returns a
  started private :class:`~readscale.stack.Stack`, stopped after the test.

``READSCALE_TEST_STACK_DIR`` chooses where test stacks live (default: a new folder
under the system temp dir).
"""

from readscale.testing.shared import SharedStack, new_stack_root

__all__ = ["SharedStack", "new_stack_root"]
