"""CDC rules: wal2json changes grouped into transactions and mapped to keys and tags."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from readscale._core.cdc.rules import CdcRule, format_lsn, group_transactions, invalidations_for, parse_lsn
from readscale.errors import ConfigurationError


def row(lsn: str, **data: object) -> tuple[str, str, str]:
    return (lsn, "1", json.dumps(data))


def col(name: str, value: object) -> dict[str, object]:
    return {"name": name, "type": "integer" if isinstance(value, int) else "text", "value": value}


RULES = [
    CdcRule("items", keys=("item:{id}",), tags=("category:{category_id}",), namespace="catalog"),
    CdcRule("public.users", keys=("user:{id}:profile",)),
]


def test_lsn_round_trip() -> None:
    assert parse_lsn("0/58E7DC8") == 0x58E7DC8
    assert parse_lsn("16/B374D848") == (0x16 << 32) | 0xB374D848
    assert format_lsn(parse_lsn("16/B374D848")) == "16/B374D848"
    with pytest.raises(ValueError, match="not a PostgreSQL LSN"):
        parse_lsn("nonsense")


@given(st.integers(0, 2**64 - 1))
def test_lsn_text_round_trips(lsn: int) -> None:
    assert parse_lsn(format_lsn(lsn)) == lsn


def test_transactions_and_their_invalidations() -> None:
    rows = [
        row("0/100", action="B"),
        row("0/100", action="U", schema="public", table="items",
            columns=[col("id", 2), col("category_id", 7), col("name", "pear")], identity=[col("id", 2)]),
        row("0/120", action="U", schema="public", table="items",
            columns=[col("id", 10), col("category_id", 7), col("name", "apple")], identity=[col("id", 1)]),
        row("0/140", action="C"),
        row("0/140", action="B"),
        row("0/140", action="D", schema="public", table="items", identity=[col("id", 3)]),
        row("0/160", action="I", schema="public", table="orders", columns=[col("id", 1)]),
        row("0/180", action="C"),
        row("0/180", action="B"),  # an open transaction: not returned, not advanced past
        row("0/180", action="I", schema="public", table="users", columns=[col("id", 5)]),
    ]  # fmt: skip
    transactions, advance_to = group_transactions(rows)
    assert [t.commit_lsn for t in transactions] == [0x140, 0x180]
    assert advance_to == 0x180
    first = invalidations_for(transactions[0], RULES)
    assert first.keys == {("catalog", "item:2"), ("catalog", "item:10"), ("catalog", "item:1")}
    assert first.tags == {"category:7"}
    second = invalidations_for(transactions[1], RULES)
    assert second.keys == {("catalog", "item:3")}
    assert second.tags == set()  # the category of a deleted row is not in its identity
    assert second.unmapped_tables == {"public.orders"}


def test_truncate_flushes_the_namespace() -> None:
    transactions, _ = group_transactions(
        [row("0/1", action="B"), row("0/1", action="T", schema="public", table="items"), row("0/2", action="C")]
    )
    inv = invalidations_for(transactions[0], RULES)
    assert inv.truncated_namespaces == {"catalog"}


def test_no_commit_means_no_advance() -> None:
    assert group_transactions([]) == ([], None)
    assert group_transactions([row("0/1", action="B")]) == ([], None)


def test_unreadable_changes_are_an_error() -> None:
    with pytest.raises(ValueError, match="unreadable wal2json change"):
        group_transactions([("0/1", "1", "{not json")])


@pytest.mark.parametrize(
    "kwargs",
    [{"table": ""}, {"table": "t"}, {"table": "t", "keys": ("no-fields",)}, {"table": "t", "tags": ("x:{0}",)}],
)
def test_bad_rules(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        CdcRule(**kwargs)  # type: ignore[arg-type]
