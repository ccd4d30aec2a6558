"""Typed connection settings: secrets stay out of reprs, logs and errors; bad values are
refused with a message naming the setting (pure: nothing connects)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from readscale import PostgresSettings, RedisSettings, ReplicaSettings
from readscale._core.cdc.rules import CdcSettings
from readscale._core.postgres.dsn import mask_dsn, scrub, secrets_of
from readscale.errors import ConfigurationError
from readscale.settings import check_dsn

SECRET = "hunter2-zebra"

# -- PostgresSettings ---------------------------------------------------------------------


def test_the_password_never_shows() -> None:
    pg = PostgresSettings(user="app", password=SECRET, sslmode="verify-full", sslrootcert="/ca.crt")
    for text in (repr(pg), str(pg), f"{pg}", pg.safe_dsn("host=db"), pg.safe_dsn("postgresql://u:other@db/x")):
        assert SECRET not in text
        assert "other" not in text.replace("other@", "")  # the DSN's own password too
    assert "password='***'" in repr(pg)
    assert "sslmode='verify-full'" in repr(pg)
    assert "password=None" in repr(PostgresSettings())


def test_apply_merges_credentials_and_tls_and_wins_over_the_dsn() -> None:
    pg = PostgresSettings(
        user="app", password="p w'd", sslmode="verify-full", sslrootcert="/etc/ca.crt", connect_timeout=3
    )
    merged = conninfo_to_dict(pg.apply("postgresql://postgres:old@db.internal:5433/shop?sslmode=disable"))
    assert merged == {
        "user": "app",
        "password": "p w'd",
        "host": "db.internal",
        "port": "5433",
        "dbname": "shop",
        "sslmode": "verify-full",
        "sslrootcert": "/etc/ca.crt",
        "connect_timeout": "3",
    }
    assert conninfo_to_dict(PostgresSettings().apply("host=db user=u")) == {"host": "db", "user": "u"}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sslmode": "verify_full"}, "sslmode must be one of"),
        ({"sslmode": "VERIFY-FULL"}, "sslmode must be one of"),
        ({"connect_timeout": 0}, "connect_timeout"),
        ({"connect_timeout": 2.5}, "connect_timeout"),
        ({"connect_timeout": True}, "connect_timeout"),
        ({"password": "nul\x00byte"}, "NUL"),
        ({"user": 42}, "must be a string"),
        ({"sslmode": "disable", "sslrootcert": "/ca.crt"}, "does not check certificates"),
        ({"sslmode": "prefer", "sslcert": "/c.crt"}, "does not check certificates"),
    ],
)
def test_bad_settings_are_refused_by_name(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message) as info:
        PostgresSettings(**kwargs)
    assert "nul\x00byte" not in str(info.value)


def test_from_env_reads_every_field_and_ignores_empty_variables() -> None:
    env = {
        "READSCALE_PG_USER": "app",
        "READSCALE_PG_PASSWORD": SECRET,
        "READSCALE_PG_SSLMODE": "verify-full",
        "READSCALE_PG_SSLROOTCERT": "/ca.crt",
        "READSCALE_PG_SSLCERT": "/client.crt",
        "READSCALE_PG_SSLKEY": "/client.key",
        "READSCALE_PG_CONNECT_TIMEOUT": "4",
        "READSCALE_PG_APPLICATION_NAME": "shop",
        "READSCALE_PG_DSN": "ignored: the DSN is given apart",
    }
    assert PostgresSettings.from_env(environ=env) == PostgresSettings(
        user="app",
        password=SECRET,
        sslmode="verify-full",
        sslrootcert="/ca.crt",
        sslcert="/client.crt",
        sslkey="/client.key",
        connect_timeout=4,
        application_name="shop",
    )
    assert PostgresSettings.from_env(environ={"READSCALE_PG_SSLMODE": ""}) == PostgresSettings()
    assert PostgresSettings.from_env(environ={}, user="override").user == "override"
    assert PostgresSettings.from_env("APP_DB_", environ={"APP_DB_USER": "x"}).user == "x"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"READSCALE_PG_CONNECT_TIMEOUT": "soon"}, "READSCALE_PG_CONNECT_TIMEOUT must be an integer"),
        ({"READSCALE_PG_SSLMODE": "on"}, "READSCALE_PG_SSLMODE must be one of"),
        ({"READSCALE_PG_CONNECT_TIMEOUT": "-1"}, "connect_timeout"),
    ],
)
def test_bad_environment_is_named(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        PostgresSettings.from_env(environ=env)


def test_redis_settings_from_env_and_their_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("READSCALE_REDIS_PASSWORD", SECRET)
    monkeypatch.setenv("READSCALE_REDIS_USERNAME", "readscale")
    monkeypatch.setenv("READSCALE_REDIS_SSL", "yes")
    monkeypatch.setenv("READSCALE_REDIS_SSL_CA_CERTS", "/ca.crt")
    redis = RedisSettings.from_env(url="redis://10.0.0.5:6380/1")
    assert (redis.username, redis.password, redis.ssl, redis.ssl_ca_certs) == ("readscale", SECRET, True, "/ca.crt")
    assert redis.client_kwargs()["ssl"] is True
    assert SECRET not in repr(redis) and SECRET not in str(redis)
    for name, value, message in [
        ("READSCALE_REDIS_SSL", "maybe", "must be a boolean"),
        ("READSCALE_REDIS_SOCKET_TIMEOUT_MS", "fast", "must be a number"),
        ("READSCALE_REDIS_MAX_CONNECTIONS", "1.5", "must be an integer"),
    ]:
        monkeypatch.setenv(name, value)
        with pytest.raises(ConfigurationError, match=f"{name} {message}"):
            RedisSettings.from_env()
        monkeypatch.delenv(name)
    with pytest.raises(ConfigurationError, match="must start with redis://") as info:
        RedisSettings(url=f"http://user:{SECRET}@host/0")
    assert SECRET not in str(info.value)


# -- DSNs in reprs and errors -------------------------------------------------------------


def test_replica_and_cdc_settings_mask_every_dsn_in_their_repr() -> None:
    settings = ReplicaSettings(
        primary=f"postgresql://app:{SECRET}@primary/db",
        replicas={"r1": f"host=r1 password={SECRET}", "r2": f"host=r2 password='{SECRET} x'"},
        postgres=PostgresSettings(password=SECRET),
    )
    cdc = CdcSettings(dsn=f"postgresql://app:{SECRET}@primary/db", postgres=PostgresSettings(password=SECRET))
    for text in (repr(settings), str(settings), repr(cdc), str(cdc)):
        assert SECRET not in text
        assert "***" in text
    assert "primary/db" in repr(settings) and "host=r1" in repr(settings)


def test_settings_refuse_what_is_not_postgres_settings() -> None:
    with pytest.raises(ConfigurationError, match="postgres must be a PostgresSettings"):
        ReplicaSettings(primary="host=p", postgres={"password": "x"})  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="dsn is empty"):
        CdcSettings(dsn="  ")


@pytest.mark.parametrize(
    "dsn",
    [
        f"host=x password={SECRET} port=abc",
        f"postgresql://u:{SECRET}@h:notaport/db",
        f"postgresql://u:{SECRET} x@[::1/db",
        f"postgresql://u:%zz{SECRET}@h/db",
        f"password={SECRET} two host=x",
        f"password='{SECRET}",
        f"host=x password={SECRET} sslmode=verify_full",
        f"host=x password={SECRET} bogus_option=1",
        f"postgresql://u:{SECRET}@h/db?passwd=x",
        f"host=x\x00 password={SECRET}",
    ],
)
def test_a_malformed_dsn_is_a_configuration_error_that_never_shows_its_password(dsn: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        check_dsn(dsn, name="--dsn")
    message = str(info.value)
    assert message.startswith("--dsn")
    assert SECRET not in message
    assert "\n" not in message
    with pytest.raises(ConfigurationError) as applied:
        PostgresSettings(password="other-secret").apply(dsn)
    assert SECRET not in str(applied.value) and "other-secret" not in str(applied.value)


def test_valid_dsns_pass_unchanged() -> None:
    for dsn in ("", "host=db", "postgresql:///shop", "postgresql://u@h1:5432,h2:5433/db?target_session_attrs=any"):
        assert check_dsn(dsn) == dsn


passwords = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), min_size=6, max_size=40
)
SKELETONS = (
    "host=db.internal port=5432 user=app dbname=app sslmode=require password=*** sslpassword=*** "
    "postgresql://app:***@db.internal:5432/app?sslmode=require&password=*** could not connect with : refused"
    + repr(PostgresSettings(user="app", password="x"))
)


@settings(max_examples=300, deadline=None)
@given(passwords)
def test_mask_dsn_hides_any_password_in_either_form(password: str) -> None:
    assume(password.strip() and password not in SKELETONS and quote(password, safe="") not in SKELETONS)
    forms = [
        make_conninfo("host=db.internal port=5432 user=app dbname=app", password=password),
        make_conninfo("host=db.internal user=app sslmode=require", sslpassword=password),
        f"postgresql://app:{quote(password, safe='')}@db.internal:5432/app?sslmode=require",
        f"postgresql://app@db.internal:5432/app?sslmode=require&password={quote(password, safe='')}",
        PostgresSettings(password=password, sslmode="require").apply("postgresql://app@db.internal:5432/app"),
    ]
    for dsn in forms:
        masked = mask_dsn(dsn)
        assert password not in masked, (dsn, masked)
        assert quote(password, safe="") not in masked
        assert "db.internal" in masked
        assert password not in scrub(f"could not connect with {dsn!r}: refused", secrets_of(dsn))
    pg = PostgresSettings(user="app", password=password)
    assert password not in repr(pg)
    assert password not in pg.safe_dsn("host=db.internal")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=120))
def test_mask_dsn_and_check_dsn_take_any_text(text: str) -> None:
    mask_dsn(text)
    scrub(text, secrets_of(text))
    message = ""
    try:
        check_dsn(text)
    except ConfigurationError as exc:
        message = str(exc)
    assert "\x00" not in message


def test_django_databases_carry_their_credentials_and_tls_options_to_the_router() -> None:
    from readscale.django import replica_settings

    def database(host: str) -> dict[str, Any]:
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": "shop",
            "USER": "app",
            "PASSWORD": SECRET,
            "HOST": host,
            "PORT": 5432,
            "OPTIONS": {
                "sslmode": "verify-full",
                "sslrootcert": "/etc/ssl/db-ca.crt",
                "connect_timeout": 3,
                "isolation_level": 2,  # Django's own: not a libpq option
                "pool": True,
            },
        }

    settings = replica_settings({"default": database("p"), "r1": database("r1")}, replicas=["r1"])
    primary = conninfo_to_dict(settings.primary)
    assert primary == {
        "dbname": "shop",
        "user": "app",
        "password": SECRET,
        "host": "p",
        "port": "5432",
        "sslmode": "verify-full",
        "sslrootcert": "/etc/ssl/db-ca.crt",
        "connect_timeout": "3",
    }
    assert conninfo_to_dict(dict(settings.replica_dsns)["r1"])["sslmode"] == "verify-full"
    assert SECRET not in repr(settings)


# -- pickle: off by default, signed when on -----------------------------------------------

EXECUTED: list[str] = []


def _record(what: str) -> None:
    EXECUTED.append(what)


class _Payload:
    """What someone who can write to Redis would plant: code run by unpickling."""

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return _record, ("unpickled an attacker's bytes",)


def test_pickle_is_off_by_default_and_never_runs_unsigned_or_foreign_bytes() -> None:
    import hashlib
    import hmac
    import pickle  # noqa: TID251 - building the attacker's payload

    from readscale import AsyncCache, MemoryStore
    from readscale._async.writebehind.writers import default_codecs
    from readscale.codecs import JsonCodec, SignedPickleCodec
    from readscale.errors import CorruptValueError

    assert isinstance(AsyncCache(None, l1=MemoryStore(1)).codec, JsonCodec), "JSON unless pickle is named"
    assert "pickle" not in {codec.name for codec in default_codecs()}, "the flusher never unpickles unasked"
    planted = pickle.dumps(_Payload())
    codec = SignedPickleCodec(b"the application's own secret")
    signed_elsewhere = hmac.new(b"another secret, not ours", planted, hashlib.sha256).digest() + planted
    for forged in (planted, b"\x00" * 32 + planted, signed_elsewhere, b"", b"short"):
        with pytest.raises(CorruptValueError):
            codec.decode(forged)
    assert EXECUTED == []
    with pytest.raises(ConfigurationError, match="16 bytes"):
        SignedPickleCodec(b"too short")


def test_a_sentinel_url_names_the_sentinels_the_master_and_the_database() -> None:
    settings = RedisSettings(url="redis+sentinel://:s3cret@10.0.0.1:26379,10.0.0.2,[::1]:26380/shop/2")
    assert settings.sentinel
    assert settings.sentinels == (("10.0.0.1", 26379), ("10.0.0.2", 26379), ("::1", 26380))
    assert settings.service_name == "shop" and settings.db == 2
    kwargs = settings.client_kwargs()
    assert kwargs["db"] == 2 and kwargs["password"] == "s3cret"
    assert "s3cret" not in repr(settings)
    assert not RedisSettings(url="redis://127.0.0.1:6379/0").sentinel


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis+sentinel://10.0.0.1:26379", "master's name"),
        ("redis+sentinel://10.0.0.1:port/shop", "host:port"),
        ("redis+sentinel://10.0.0.1:26379/shop/x", "database must be a number"),
        ("sentinel://10.0.0.1:26379/shop", "redis\\+sentinel://"),
    ],
)
def test_a_bad_sentinel_url_is_one_clear_error(url: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        RedisSettings(url=url)


# -- every URL and DSN the settings accept: one line naming the wrong part (issue 15) ------

URL_SECRET = "pw-hunter2"


def _redis(url: str) -> object:
    return RedisSettings(url=url)


def _cluster(url: str) -> object:
    from readscale.backends import RedisClusterBackend

    return RedisClusterBackend(RedisSettings(url=url))


def _memcached(address: str) -> object:
    from readscale.backends import MemcachedBackend

    return MemcachedBackend(address)


def _postgres(dsn: str) -> object:
    from readscale import AsyncReplicaRouter

    # The router checks its DSNs when it is built, before any connection.
    return AsyncReplicaRouter(ReplicaSettings(primary=dsn, replicas={"r1": "postgresql://127.0.0.1:1/db"}))


def _edge(url: str) -> object:
    from readscale.http.purge import AsyncVarnishPurger

    return AsyncVarnishPurger(url)


def _vcl(url: str) -> object:
    from readscale.http import render_vcl

    return render_vcl(url)


MALFORMED = [
    (_redis, f"redis://app:{URL_SECRET}@localhost:abc/0", "the port must be a number from 1 to 65535, got 'abc'"),
    (_redis, f"redis://app:{URL_SECRET}@localhost:99999/0", "got '99999'"),
    (_redis, "redis://localhost:0/0", "got '0'"),
    (_redis, "redis://localhost:-1/0", "got '-1'"),
    (_redis, "redis://[::1/0", "IPv6 host goes in [brackets]"),
    (_redis, "redis://:6379/0", "has no host"),
    (_redis, "redis://local host:6379/0", "whitespace"),
    (_redis, "redis://localhost:6379/x", "the database (the path) must be a number, got 'x'"),
    (_redis, "redis://localhost:6379/0?socket_timeout=soon", "'socket_timeout'"),
    (_redis, "http://localhost:6379/0", "must start with redis://, rediss://, unix://, redis+sentinel://"),
    (_redis, "localhost:6379", "must start with redis://"),
    (_cluster, "redis://127.0.0.1:abc/0", "the port must be a number"),
    (_cluster, "redis://127.0.0.1:7000/3", "a cluster has database 0 only, got '3'"),
    (_memcached, "cache:abc", "the port must be a number from 1 to 65535, got 'abc'"),
    (_memcached, "cache:99999", "got '99999'"),
    (_memcached, "cache", "the port is missing"),
    (_memcached, ":11211", "the host is missing"),
    (_memcached, "::1:11211", "an IPv6 host goes in brackets"),
    (_memcached, "[::1:11211", "an IPv6 host goes in brackets"),
    (_memcached, "cache:11211:1", "an IPv6 host goes in brackets"),
    (_postgres, f"postgresql://app:{URL_SECRET}@db:abc/shop", "port must be an integer, got 'abc'"),
    (_postgres, f"postgresql://app:{URL_SECRET}@db:99999/shop", "port must be a number from 1 to 65535"),
    (_postgres, f"host=db port=70000 password={URL_SECRET}", "port must be a number from 1 to 65535"),
    (_postgres, "postgresql://[::1/shop", "not a valid PostgreSQL DSN"),
    (_postgres, "postgresql://db/shop?sslmode=bogus", "sslmode must be one of"),
    (_postgres, "postgresql://db/shop?connect_timeout=soon", "connect_timeout must be an integer"),
    (_edge, "http://127.0.0.1:notaport", "the port must be a number from 1 to 65535, got 'notaport'"),
    (_edge, "varnish:6081", "must start with http:// or https://"),
    (_edge, "http://[::1:6081", "IPv6 host goes in [brackets]"),
    (_edge, "http://:6081/", "has no host"),
    (_vcl, "http://127.0.0.1:notaport", "the port must be a number"),
    (_vcl, "http://[::1:8000", "IPv6 host goes in [brackets]"),
]


@pytest.mark.parametrize(("build", "url", "names"), MALFORMED)
def test_every_malformed_url_or_dsn_is_one_line_naming_the_wrong_part(build: Any, url: str, names: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        build(url)
    message = str(info.value)
    assert names in message, message
    assert "\n" not in message
    assert URL_SECRET not in message and URL_SECRET not in repr(info.value)


@pytest.mark.parametrize(
    ("build", "url"),
    [
        (_redis, "redis://localhost:6379/0"),
        (_redis, "rediss://user:pw@cache.example:6380/2?socket_timeout=0.5"),
        (_redis, "redis://[::1]:6379"),
        (_redis, "unix:///run/redis.sock?db=1"),
        (_memcached, "[::1]:11211"),
        (_edge, "http://127.0.0.1:6081"),
        (_postgres, "postgresql://app@db:5432,db2:5433/shop"),
    ],
)
def test_well_formed_urls_still_pass(build: Any, url: str) -> None:
    build(url)
