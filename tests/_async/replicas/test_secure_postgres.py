"""PostgreSQL over TLS with a password: the stack's secured cluster (``secure_pg_stack``),
reached as the role ``readscale_app`` that pg_hba admits only over TLS with SCRAM."""

from __future__ import annotations

import dataclasses
import logging
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest

from readscale import NO_VALUE, PostgresSettings, RedisSettings, ReplicaSettings, causal_context
from readscale._async.backends.redis import AsyncRedisBackend
from readscale._async.cache.cache import AsyncCache
from readscale._async.cdc.worker import AsyncCdcWorker, CdcRule, CdcSettings
from readscale._async.replicas.router import AsyncReplicaRouter
from readscale._async.writebehind.flusher import AsyncFlusher
from readscale._async.writebehind.postgres import AsyncPostgresWriter
from readscale._async.writebehind.producer import AsyncWriteBehind
from readscale._core.cache.policy import CachePolicy
from readscale._core.writebehind.settings import FlusherSettings, WriteBehindSettings
from readscale.errors import PrimaryUnavailableError
from readscale.stack import Stack
from readscale.stack.tls import make_tls

pytestmark = pytest.mark.stack

SSL_ROW = "SELECT current_user::text, ssl, pg_is_in_recovery() FROM pg_stat_ssl WHERE pid = pg_backend_pid()"


def router_settings(stack: Stack, postgres: PostgresSettings, **overrides: Any) -> ReplicaSettings:
    # The nodes' DSNs name the superuser; the settings' user, password and TLS win.
    base: dict[str, Any] = {
        "primary": stack.primary.dsn,
        "replicas": {replica.name: replica.dsn for replica in stack.replicas},
        "postgres": postgres,
        "seed": 1,
    }
    return ReplicaSettings(**{**base, **overrides})


@pytest.mark.anyio
async def test_verify_full_with_the_stack_ca_reaches_every_node_over_tls(
    secure_pg_stack: Stack, secure_pg_settings: PostgresSettings
) -> None:
    for node in [secure_pg_stack.primary, *secure_pg_stack.replicas]:
        async with await psycopg.AsyncConnection.connect(secure_pg_settings.apply(node.dsn)) as conn:
            row = await (await conn.execute(SSL_ROW)).fetchone()
        assert row == ("readscale_app", True, node.role == "replica")


def _other_ca(folder: Path) -> str:
    return str(make_tls(folder).ca)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"password": "not-the-password-42"}, "password authentication failed"),
        ({"sslmode": "disable", "sslrootcert": None}, "no encryption"),
        ({"sslrootcert": "OTHER_CA"}, "certificate verify failed"),
    ],
    ids=["wrong-password", "sslmode-disable", "another-ca"],
)
@pytest.mark.anyio
async def test_wrong_password_plain_text_and_a_foreign_ca_are_refused_clearly(
    secure_pg_stack: Stack,
    secure_pg_settings: PostgresSettings,
    tmp_path: Path,
    change: dict[str, Any],
    expected: str,
) -> None:
    if change.get("sslrootcert") == "OTHER_CA":
        change = {"sslrootcert": _other_ca(tmp_path / "other-ca")}
    settings = dataclasses.replace(secure_pg_settings, **change)
    with pytest.raises(psycopg.OperationalError) as info:
        await psycopg.AsyncConnection.connect(settings.apply(secure_pg_stack.primary.dsn))
    message = str(info.value)
    assert expected in message
    assert secure_pg_settings.password is not None
    assert secure_pg_settings.password not in message
    assert "not-the-password-42" not in message


@pytest.mark.anyio
async def test_the_replica_router_writes_and_reads_over_tls_with_credentials(
    secure_pg_stack: Stack, secure_pg_settings: PostgresSettings
) -> None:
    table = f"tls_{uuid.uuid4().hex[:8]}"
    value = uuid.uuid4().hex
    settings = router_settings(secure_pg_stack, secure_pg_settings, wait_budget=5.0)
    async with AsyncReplicaRouter(settings) as router:
        with causal_context() as context:
            async with router.write() as conn:
                await conn.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, v text)")
                await conn.execute(f"INSERT INTO {table} VALUES (1, %s)", (value,))
                written_over = await (await conn.execute(SSL_ROW)).fetchone()
            assert context.token is not None
            # The replica has to replay the write before it may serve this read (wait_budget).
            read = await router.fetch_one(
                "SELECT v, current_user::text, (SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()), "
                f"pg_is_in_recovery() FROM {table} WHERE id = 1"
            )
        assert written_over == ("readscale_app", True, False)
        assert read is not None
        assert read[0] == value, "read-your-writes over TLS"
        assert read[1:] == ("readscale_app", True, True), "served by the replica, as the app role, encrypted"
        assert router.stats().replica_reads >= 1
        async with router.write() as conn:
            await conn.execute(f"DROP TABLE {table}")


@pytest.mark.anyio
async def test_a_router_with_a_wrong_password_says_why_and_never_shows_a_password(
    secure_pg_stack: Stack, secure_pg_settings: PostgresSettings, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = dataclasses.replace(secure_pg_settings, password="wrong-secret-9c1")
    settings = router_settings(secure_pg_stack, wrong, acquire_timeout=0.5)
    caplog.set_level(logging.WARNING)
    async with AsyncReplicaRouter(settings) as router:
        with pytest.raises(PrimaryUnavailableError) as info:
            async with router.write() as conn:
                await conn.execute("SELECT 1")
    shown = "\n".join([caplog.text, str(info.value), repr(settings), repr(wrong), str(wrong)])
    assert "password authentication failed" in caplog.text, "the operator is told why"
    assert "wrong-secret-9c1" not in shown
    assert str(secure_pg_settings.password) not in shown


@pytest.mark.anyio
async def test_write_behind_and_cdc_run_over_tls_with_credentials_end_to_end(
    secure_pg_stack: Stack, secure_pg_settings: PostgresSettings, secure_redis_settings: RedisSettings
) -> None:
    """The queue on the TLS Redis (ACL user), the flusher's writer and the CDC worker on
    the TLS PostgreSQL (the app role): an acknowledged write lands in the table, and
    its change comes back through the WAL as an invalidation."""
    tag = uuid.uuid4().hex[:8]
    table, queue, prefix, slot = f"wb_tls_{tag}", f"q{tag}", f"tls{tag}:", f"s_tls_{tag}"
    app_dsn = secure_pg_settings.apply(secure_pg_stack.primary.dsn)
    async with await psycopg.AsyncConnection.connect(app_dsn, autocommit=True) as conn:
        await conn.execute(
            f"CREATE TABLE {table} (key text PRIMARY KEY, version bigint NOT NULL, value jsonb NOT NULL)"
        )
    cache = AsyncCache(
        AsyncRedisBackend(secure_redis_settings), policy=CachePolicy(name="tls", ttl=600.0), prefix=prefix
    )
    writer = AsyncPostgresWriter(secure_pg_stack.primary.dsn, table=table, postgres=secure_pg_settings)
    flusher = AsyncFlusher(
        writer, secure_redis_settings, settings=FlusherSettings(queue=queue, prefix=prefix, block=0.05, batch_wait=0.01)
    )
    worker = AsyncCdcWorker(
        cache,
        [CdcRule(table, keys=("{key}",))],
        CdcSettings(dsn=secure_pg_stack.primary.dsn, slot=slot, tombstones=False, postgres=secure_pg_settings),
    )
    try:
        assert await worker.ensure_slot() is True
        version = await AsyncWriteBehind(cache, WriteBehindSettings(queue=queue)).write_behind("item:1", {"qty": 3})
        assert await cache.get("item:1") == {"qty": 3}
        assert await flusher.drain()
        async with await psycopg.AsyncConnection.connect(app_dsn) as conn:
            rows = await (await conn.execute(f"SELECT key, version, value FROM {table}")).fetchall()
        assert rows == [("item:1", version, {"qty": 3})]
        assert await worker.run_once() >= 1, "the flusher's upsert came back through the slot"
        assert await cache.get("item:1") is NO_VALUE
    finally:
        await worker.close()
        await flusher.aclose()
        await writer.aclose()
        await cache.aclose()
        async with await psycopg.AsyncConnection.connect(app_dsn, autocommit=True) as conn:
            await conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
            await conn.execute(f"DROP TABLE {table}")
