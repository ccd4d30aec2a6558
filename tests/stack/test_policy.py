"""Pure rules of the stack: configuration checks, replication settings, VCL rendering."""

from __future__ import annotations

import pytest

from readscale.errors import ConfigurationError, MissingBinaryError
from readscale.http import render_vcl
from readscale.stack import StackConfig
from readscale.stack.postgres import synchronous_standby_names


@pytest.mark.parametrize(
    ("mode", "replicas", "expected"),
    [
        ("async", ["r1", "r2"], ""),
        ("sync", ["r1", "r2"], "FIRST 1 (r1)"),
        ("semi-sync", ["r1", "r2"], "ANY 1 (r1, r2)"),
        ("semi-sync", ["r1"], "ANY 1 (r1)"),
    ],
)
def test_synchronous_standby_names(mode: str, replicas: list[str], expected: str) -> None:
    assert synchronous_standby_names(mode, replicas) == expected  # type: ignore[arg-type]


def test_sync_modes_need_a_replica() -> None:
    with pytest.raises(ConfigurationError, match="at least one replica"):
        synchronous_standby_names("sync", [])
    with pytest.raises(ConfigurationError, match="at least one replica"):
        StackConfig(replicas=0, mode="sync")
    with pytest.raises(ConfigurationError, match="mode must be one of"):
        StackConfig(mode="eventual")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="replicas must be >= 0"):
        StackConfig(replicas=-1)


def test_config_lists_the_binaries_it_needs() -> None:
    assert StackConfig().binaries() == [
        "initdb",
        "postgres",
        "pg_isready",
        "psql",
        "pg_basebackup",
        "redis-server",
        "redis-cli",
    ]
    assert StackConfig(postgres=False, redis=False, varnish=True).binaries() == [
        "varnishd",
        "varnishstat",
        "varnishadm",
    ]


def test_vcl_is_aimed_at_the_backend() -> None:
    vcl = render_vcl("http://127.0.0.1:8123")
    assert '.host = "127.0.0.1";' in vcl
    assert '.port = "8123";' in vcl
    assert ".probe" not in vcl
    assert "{{" not in vcl
    assert '.url = "/healthz";' in render_vcl("http://localhost:8123", probe_path="/healthz")


@pytest.mark.parametrize(
    ("url", "probe", "message"),
    [
        ("https://127.0.0.1:8000", None, "must be an http:// URL"),
        ("http://10.0.0.1:8000", None, "only targets loopback"),
        ("http://127.0.0.1:notaport", None, "the port must be a number"),
        ("http://127.0.0.1:8000", "healthz", "must start with /"),
        ("http://127.0.0.1:8000", '/x";', "must start with /"),
    ],
)
def test_vcl_rejects_bad_backends(url: str, probe: str | None, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        render_vcl(url, probe_path=probe)
    with pytest.raises(ConfigurationError, match=message):
        StackConfig(varnish=True, varnish_backend=url, varnish_probe=probe)


def test_the_purge_acl_is_loopback_unless_named_and_never_the_world() -> None:
    default = render_vcl("http://127.0.0.1:8123")
    assert 'acl purgers {\n    "127.0.0.0"/8;\n    "::1";\n}' in default
    named = render_vcl("http://127.0.0.1:8123", purge_acl=["10.0.2.0/24", "10.0.3.7", "fd00::/8"])
    assert 'acl purgers {\n    "10.0.2.0"/24;\n    "10.0.3.7";\n    "fd00::"/8;\n}' in named
    wide_private = render_vcl("http://127.0.0.1:8123", purge_acl=["10.0.0.0/8", "203.0.113.0/24"])
    assert '"10.0.0.0"/8;' in wide_private and '"203.0.113.0"/24;' in wide_private
    assert "beresp.ttl > " not in named


@pytest.mark.parametrize(
    ("acl", "message"),
    [
        ([], "purge_acl is empty"),
        (["0.0.0.0/0"], "every address"),
        (["::/0"], "every address"),
        (["0.0.0.0/1", "128.0.0.0/1"], "wide range of public addresses"),
        (["8.0.0.0/8"], "wide range of public addresses"),
        (["2000::/3"], "wide range of public addresses"),
        (["edge.example.com"], "not an address or a network"),
        (["10.0.0.1/33"], "not an address or a network"),
        (['10.0.0.1"; } acl x {'], "not an address or a network"),
    ],
)
def test_a_bad_purge_acl_is_refused_naming_the_entry(acl: list[str], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        render_vcl("http://127.0.0.1:8123", purge_acl=acl)


def test_max_life_caps_ttl_and_grace_together() -> None:
    vcl = render_vcl("http://127.0.0.1:8123", max_life=600)
    assert "if (beresp.ttl > 600s)" in vcl and "set beresp.grace = 600s - beresp.ttl;" in vcl
    for bad in (0, -5, True, 1.5):
        with pytest.raises(ConfigurationError, match="max_life"):
            render_vcl("http://127.0.0.1:8123", max_life=bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="varnish_nodes"):
        StackConfig(varnish=True, varnish_nodes=0)


def test_missing_binary_error_names_the_package() -> None:
    err = MissingBinaryError("varnishd", "varnish")
    assert err.binary == "varnishd"
    assert err.package == "varnish"
    assert "apt-get install -y varnish" in str(err)


def test_the_secured_postgres_admits_its_role_over_tls_only_and_checks_its_settings() -> None:
    from readscale.stack.postgres import hba_lines

    lines = [line.split() for line in hba_lines("app", tls=True).splitlines() if not line.startswith("#")]
    assert ["hostssl", "all", "app", "127.0.0.1/32", "scram-sha-256"] in lines
    assert ["hostnossl", "all", "app", "0.0.0.0/0", "reject"] in lines
    assert all(line[-1] in ("scram-sha-256", "reject") for line in lines), "never trust, never md5"
    assert all(line[0] == "host" for line in (x.split() for x in hba_lines("app", tls=False).splitlines()[1:]))
    for bad in ("App", "a b", "postgres", "x;drop", ""):
        with pytest.raises(ConfigurationError, match="application role"):
            hba_lines(bad, tls=True)
    with pytest.raises(ConfigurationError, match="go together"):
        StackConfig(postgres_user="app")
    with pytest.raises(ConfigurationError, match="go together"):
        StackConfig(postgres_password="secret")
    StackConfig(postgres_tls=True, postgres_user="app", postgres_password="secret")


def test_a_port_is_handed_out_once_per_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """A port picked for a process that binds it later (the demo's flusher serves metrics
    on one) is not listening meanwhile: a later pick (a server the stack starts before
    that process) must not be given it, or the process dies on EADDRINUSE. Ten ports, two
    picks of five: they share none."""
    import random

    from readscale.stack import _proc

    monkeypatch.setattr(_proc, "PORT_RANGE", (19900, 19910))  # below the stack's range: no other pick here
    rng = random.Random(5)
    first = _proc.pick_ports(5, rng=rng)
    second = _proc.pick_ports(5, rng=rng)
    assert len(set(first) | set(second)) == 10, (first, second)
