"""The durability modes' check against a server's settings (readscale._core.writebehind.modes),
table-driven, and the parsing of counter records (readscale._core.writebehind)."""

from __future__ import annotations

import pytest

from readscale._core.writebehind.modes import (
    PROMISES,
    ServerFacts,
    WriteBehindMode,
    check_mode,
    coerce_mode,
    delayed_fsync_growth,
    parse_assumed,
    parse_info,
)
from readscale._core.writebehind.records import CounterSums, Malformed, SealRequest, check_delta, parse_record
from readscale._core.writebehind.settings import FlusherSettings, WriteBehindSettings, queue_keys
from readscale.errors import ConfigurationError, DurabilityError

DURABLE, FAST, VOLATILE = WriteBehindMode.DURABLE, WriteBehindMode.FAST, WriteBehindMode.VOLATILE

GOOD = {
    "appendonly": "yes",
    "appendfsync": "always",
    "no-appendfsync-on-rewrite": "no",
    "maxmemory": "0",
    "maxmemory-policy": "noeviction",
}
AOF_ON = {"aof_enabled": "1", "aof_delayed_fsync": "0"}


def facts(info: dict[str, str] | None = None, error: str | None = None, assumed: dict[str, str] | None = None,
          **config: str) -> ServerFacts:  # fmt: skip
    settings = {} if error else {**GOOD, **{k.replace("_", "-"): v for k, v in config.items()}}
    return ServerFacts(settings, AOF_ON if info is None else info, error, assumed or {})


@pytest.mark.parametrize(
    ("mode", "server", "setting"),
    [
        (DURABLE, facts(), None),
        (FAST, facts(), None),  # always is stronger than fast needs
        (FAST, facts(appendfsync="everysec"), None),
        (DURABLE, facts(appendfsync="everysec"), "appendfsync"),
        (DURABLE, facts(appendfsync="no"), "appendfsync"),
        (FAST, facts(appendfsync="no"), "appendfsync"),
        (DURABLE, facts({"aof_enabled": "0"}, appendonly="no"), "appendonly"),
        (FAST, facts({"aof_enabled": "0"}, appendonly="no"), "appendonly"),
        (DURABLE, facts({}, appendonly="no"), "appendonly"),  # INFO without the field: CONFIG decides
        (DURABLE, facts({}, error="ERR unknown command 'CONFIG'"), "appendonly"),  # nothing known at all
        (DURABLE, facts(no_appendfsync_on_rewrite="yes"), "no-appendfsync-on-rewrite"),
        (DURABLE, facts(maxmemory="100mb", maxmemory_policy="allkeys-lru"), "maxmemory-policy"),
        (DURABLE, facts(maxmemory="0", maxmemory_policy="allkeys-lru"), None),  # never evicts
        (DURABLE, facts(maxmemory="100mb", maxmemory_policy="volatile-lru"), None),  # the queue has no TTL
        (VOLATILE, facts({"aof_enabled": "0"}, appendonly="no"), None),  # promises nothing
        (VOLATILE, facts({}, error="NOPERM"), None),
    ],
)
def test_each_mode_is_kept_or_refused_by_the_setting_at_fault(
    mode: WriteBehindMode, server: ServerFacts, setting: str | None
) -> None:
    refusal = check_mode(mode, server)
    assert (refusal.setting if refusal else None) == setting


def test_without_config_get_the_fsync_policy_must_be_declared() -> None:
    hidden = facts(error="NoPermissionError: this user has no permissions to run the 'config|get' command")
    refusal = check_mode(DURABLE, hidden)
    assert refusal is not None
    assert refusal.setting == "appendfsync"
    line = refusal.line("redis://cache:6379/0")
    assert "\n" not in line
    assert "NoPermissionError" in line
    assert "assume_config={'appendfsync': 'always'}" in line
    assert "--assume-config appendfsync=always" in line
    assert check_mode(DURABLE, facts(error="NOPERM", assumed={"appendfsync": "always"})) is None
    declared_weaker = check_mode(DURABLE, facts(error="NOPERM", assumed={"appendfsync": "everysec"}))
    assert declared_weaker is not None
    assert "assume_config" in declared_weaker.found
    # A declaration never overrides what CONFIG GET read.
    assert check_mode(DURABLE, facts(appendfsync="everysec", assumed={"appendfsync": "always"})) is not None


def test_a_refusal_is_one_line_naming_the_setting_the_value_and_the_way_out() -> None:
    refusal = check_mode(DURABLE, facts(appendfsync="everysec"))
    assert refusal is not None
    error = refusal.error("redis://127.0.0.1:6379/0")
    assert isinstance(error, DurabilityError)
    assert isinstance(error, ConfigurationError)
    assert (error.mode, error.setting, error.needed) == ("durable", "appendfsync", "always")
    text = str(error)
    assert "\n" not in text
    assert text.startswith("write-behind mode 'durable' refused on redis://127.0.0.1:6379/0: appendfsync is everysec")
    assert "CONFIG SET appendfsync always" in text
    assert "mode='fast'" in text
    no_aof = check_mode(DURABLE, facts({"aof_enabled": "0"}, appendonly="no"))
    assert no_aof is not None
    assert "readscale stack up --redis-aof" in no_aof.line("x")
    assert "mode='volatile'" in no_aof.line("x")


def test_modes_are_chosen_by_name() -> None:
    assert coerce_mode("durable") is DURABLE
    assert coerce_mode(" Fast ") is FAST
    assert coerce_mode(VOLATILE) is VOLATILE
    with pytest.raises(ConfigurationError, match="durable, fast, volatile"):
        coerce_mode("safe")
    assert WriteBehindSettings().durability is DURABLE  # the default: the promise, or a refusal
    assert FlusherSettings().durability is DURABLE
    assert WriteBehindSettings(mode="fast").mode is FAST
    assert FlusherSettings(mode="volatile").durability is VOLATILE
    with pytest.raises(ConfigurationError):
        WriteBehindSettings(mode="sometimes")
    with pytest.raises(ConfigurationError, match="may declare"):
        WriteBehindSettings(assume_config={"maxclients": "10"})
    assert parse_assumed({"AppendFsync": " Always "}) == {"appendfsync": "always"}
    assert set(PROMISES) == set(WriteBehindMode)


def test_info_text_and_the_delayed_fsync_counter() -> None:
    info = parse_info("# Persistence\r\nloading:0\r\naof_enabled:1\r\naof_delayed_fsync:7\r\n\r\n")
    assert info == {"loading": "0", "aof_enabled": "1", "aof_delayed_fsync": "7"}
    assert ServerFacts(info=info).delayed_fsyncs == 7
    assert ServerFacts().delayed_fsyncs is None
    assert delayed_fsync_growth(None, 7) == 0  # the first look only sets the baseline
    assert delayed_fsync_growth(7, 10) == 3
    assert delayed_fsync_growth(10, 2) == 0  # Redis restarted: the counter starts again


def test_counter_records_parse_and_everything_else_is_malformed() -> None:
    assert parse_record("1-0", {b"o": b"seal"}) == SealRequest("1-0")
    assert parse_record("2-0", {b"o": b"sum", b"+views:1": b"3", b"+views:2": b"-1", b"+z": b"0"}) == CounterSums(
        "2-0", {"views:1": 3, "views:2": -1}
    )
    for fields in (
        {b"o": b"merge"},
        {b"o": b"sum", b"views": b"1"},
        {b"o": b"sum", b"+k": b"x"},
        {b"o": b"sum", b"+": b"1"},
        {b"o": b"sum", b"+\xff": b"1"},
    ):
        assert isinstance(parse_record("3-0", fields), Malformed), fields
    assert queue_keys("rs:", "views").acc == "rs:wb:{views}:acc"


@pytest.mark.parametrize("delta", [0, 2**53, -(2**53), 1.5, True, "1"])
def test_a_delta_is_a_nonzero_exact_int(delta: object) -> None:
    with pytest.raises(ConfigurationError):
        check_delta(delta)  # type: ignore[arg-type]


def test_valid_deltas() -> None:
    assert check_delta(1) == 1
    assert check_delta(-(2**53) + 1) == -(2**53) + 1


def test_a_loading_redis_is_not_judged() -> None:
    """While it loads its AOF, Redis's INFO says aof_enabled:0 (seen on 7.0)."""
    loading = ServerFacts(GOOD, {"loading": "1", "aof_enabled": "0"})
    assert loading.loading
    with pytest.raises(ValueError, match="loading"):
        check_mode(DURABLE, loading)
    assert check_mode(VOLATILE, loading) is None
    assert not facts().loading


def test_settings_stay_hashable_values() -> None:
    settings = WriteBehindSettings(assume_config={"appendfsync": "always"})
    assert hash(settings) == hash(WriteBehindSettings(assume_config=(("appendfsync", "always"),)))
    assert dict(settings.assume_config) == {"appendfsync": "always"}
    assert hash(FlusherSettings(mode="fast")) == hash(FlusherSettings(mode=WriteBehindMode.FAST))
