"""Malformed command lines and configuration: exit code 2, one clear line naming the
argument or setting, no traceback, no secret echoed, and nothing started or contacted.

Every Redis URL here is a closed port on loopback and every DSN unreachable: a command
that wrongly went ahead would fail differently (exit 1), not touch a real server.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import cli

SECRET = "hunter2-zebra"
DEAD_REDIS = "redis://127.0.0.1:1/0"
DEAD_PG = "host=127.0.0.1 port=1 connect_timeout=1"


@pytest.fixture
def rules(tmp_path: Path) -> Path:
    path = tmp_path / "rules.toml"
    path.write_text('[[rule]]\ntable = "items"\nkeys = ["item:{id}"]\n')
    return path


def _usage_error(args: list[str], *, names: str, env: dict[str, str] | None = None, one_line: bool = True) -> str:
    proc = cli(*args, env=env, check=False, timeout=60)
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    assert SECRET not in proc.stderr and SECRET not in proc.stdout
    assert names in proc.stderr, proc.stderr
    if one_line:
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert len(lines) == 1, proc.stderr
        assert lines[0].startswith("error: ")
    return proc.stderr


@pytest.mark.parametrize(
    "dsn",
    [
        f"host=x port=abc password={SECRET}",
        f"postgresql://app:{SECRET}@db:notaport/shop",
        f"password={SECRET} nonsense",
        f"postgresql://app:{SECRET}@db/shop?passwd=x",
        f"host=db password={SECRET} sslmode=verify_full",
    ],
)
def test_a_bad_dsn_is_named_and_its_password_never_shown(dsn: str, rules: Path) -> None:
    _usage_error(["cdc", "run", "--dsn", dsn, "--rules", str(rules), "--redis-url", DEAD_REDIS], names="--dsn")
    _usage_error(["writebehind", "run", "--redis-url", DEAD_REDIS, "--dsn", dsn, "--table", "items"], names="--dsn")


def test_a_bad_rules_file_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("not = [valid")
    out = _usage_error(
        ["cdc", "run", "--dsn", DEAD_PG, "--rules", str(bad), "--redis-url", DEAD_REDIS], names="bad.toml"
    )
    assert "not valid TOML" in out
    bad.write_text("[[rule]]\ntable = 't'\nkeyz = ['x:{id}']\n")
    _usage_error(
        ["cdc", "run", "--dsn", DEAD_PG, "--rules", str(bad), "--redis-url", DEAD_REDIS], names="unknown fields"
    )
    missing = str(tmp_path / "missing.toml")
    _usage_error(
        ["cdc", "run", "--dsn", DEAD_PG, "--rules", missing, "--redis-url", DEAD_REDIS],
        names="'--rules'",
        one_line=False,  # click's own usage error: a short box naming the option
    )


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"READSCALE_PG_SSLMODE": "bogus"}, "READSCALE_PG_SSLMODE"),
        ({"READSCALE_PG_CONNECT_TIMEOUT": "soon"}, "READSCALE_PG_CONNECT_TIMEOUT"),
        ({"READSCALE_PG_SSLMODE": "disable", "READSCALE_PG_SSLROOTCERT": "/ca.crt"}, "sslmode=disable"),
        ({"READSCALE_REDIS_SOCKET_TIMEOUT_MS": "fast"}, "READSCALE_REDIS_SOCKET_TIMEOUT_MS"),
        ({"READSCALE_REDIS_SSL": "maybe"}, "READSCALE_REDIS_SSL"),
        ({"READSCALE_REDIS_URL": f"http://u:{SECRET}@cache/0"}, "redis://"),
    ],
)
def test_bad_settings_in_the_environment_are_named(env: dict[str, str], names: str, rules: Path) -> None:
    redis = [] if "READSCALE_REDIS_URL" in env else ["--redis-url", DEAD_REDIS]
    _usage_error(["cdc", "run", "--dsn", DEAD_PG, "--rules", str(rules), *redis], names=names, env=env)


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (["writebehind", "run", "--redis-url", DEAD_REDIS, "--batch-size", "abc"], "'--batch-size'"),
        (["writebehind", "run", "--redis-url", DEAD_REDIS, "--claim-idle", "0"], "'--claim-idle'"),
        (["writebehind", "status", "--redis-url", DEAD_REDIS, "--dead", "-1"], "'--dead'"),
        (["consistency", "check", "--truth", "m:f", "--keys", "/dev/null", "--samples", "0"], "'--samples'"),
        (["stack", "up", "--replicas", "-1"], "'--replicas'"),
        (["stack", "up", "--mode", "eventually"], "--mode"),
        (["sim", "--rps", "lots"], "'--rps'"),
    ],
)
def test_bad_numbers_and_choices_are_usage_errors(args: list[str], names: str) -> None:
    _usage_error(args, names=names, one_line=False)


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (["writebehind", "run", "--redis-url", DEAD_REDIS], "needs --dsn and --table"),
        (["writebehind", "run", "--redis-url", DEAD_REDIS, "--writer", "nocolon"], "--writer"),
        (["writebehind", "requeue", "--redis-url", DEAD_REDIS], "--all"),
        (["consistency", "check", "--truth", "nocolon", "--keys", "/etc/hostname"], "--truth"),
        (["stack", "up", "--pg-user", "Bad Name", "--pg-password", "x", "--dir", "/nonexistent/x"], "role"),
        (["stack", "up", "--pg-user", "app", "--dir", "/nonexistent/x"], "postgres_password"),
        (["sim", "--rps", "1000", "--ryw", "sometimes"], "--ryw"),
    ],
)
def test_bad_arguments_are_one_line_and_exit_2(args: list[str], names: str) -> None:
    _usage_error(args, names=names)


@pytest.mark.parametrize(
    ("url", "names"),
    [
        (f"redis://app:{SECRET}@127.0.0.1:abc/0", "the port must be a number from 1 to 65535, got 'abc'"),
        (f"redis://app:{SECRET}@127.0.0.1:99999/0", "got '99999'"),
        ("redis://[::1/0", "IPv6 host goes in [brackets]"),
        ("redis://127.0.0.1:1/x", "the database (the path) must be a number"),
        ("redis://127.0.0.1:1/0?socket_timeout=soon", "socket_timeout"),
    ],
)
def test_a_malformed_redis_url_is_one_line_naming_the_wrong_part(url: str, names: str, rules: Path) -> None:
    # Issue 15: a bad port gave a 65-line traceback from urllib inside redis-py.
    _usage_error(["writebehind", "status", "--redis-url", url], names=names)
    if "abc" in url:  # the other commands and the environment read it the same way
        _usage_error(["cdc", "run", "--dsn", DEAD_PG, "--rules", str(rules), "--redis-url", url], names=names)
        _usage_error(["writebehind", "status"], names=names, env={"READSCALE_REDIS_URL": url})


def test_a_dsn_port_out_of_range_is_named(rules: Path) -> None:
    dsn = f"postgresql://app:{SECRET}@db:99999/shop"
    _usage_error(["cdc", "run", "--dsn", dsn, "--rules", str(rules), "--redis-url", DEAD_REDIS], names="1 to 65535")


def test_a_malformed_varnish_url_to_purge_is_one_line(rules: Path) -> None:
    args = ["cdc", "run", "--dsn", DEAD_PG, "--rules", str(rules), "--redis-url", DEAD_REDIS]
    _usage_error([*args, "--purge-varnish", "http://127.0.0.1:notaport"], names="the port must be a number")
