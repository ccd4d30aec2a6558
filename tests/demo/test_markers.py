"""The demo counts each layer's reads from pg_stat_statements by fragments of the
statements' text; that text has its constants replaced by $n, so a fragment holding a
constant never matches (a profile read once went uncounted that way)."""

from __future__ import annotations

import re

from readscale.demo import schema
from readscale.demo.runner import IN_WRITE_MARKER, READ_MARKERS, WRITE_MARKERS


def normalized(sql: str) -> str:
    """Roughly what pg_stat_statements stores: literals and parameters become $n."""
    sql = sql.replace("%s", "$1").replace("%(key)s", "$1").replace("%(id)s", "$2")
    return re.sub(r"'[^']*'|(?<![\w$])\d+(?![\w])", "$9", sql)


STATEMENTS = {
    "product": schema.PRODUCT_PAGE,
    "category": schema.CATEGORY_PAGE,
    "profile": schema.PROFILE,
    "balance": schema.BALANCE,
    "trending": schema.TRENDING,
}


def test_each_read_marker_matches_its_statement_and_no_other() -> None:
    for name, marker in READ_MARKERS.items():
        matching = {other for other, sql in STATEMENTS.items() if marker in normalized(sql)}
        assert matching == {name}, (name, marker)


def test_the_write_markers_match_the_writes() -> None:
    writes = [schema.UPDATE_PROFILE, schema.DEPOSIT, schema.UPDATE_PRICE, schema.COUNT_VIEW_DIRECT]
    for sql in writes:
        assert sum(marker in normalized(sql) for marker in WRITE_MARKERS) == 1, sql
    assert IN_WRITE_MARKER in normalized(schema.PROFILE_IN_WRITE)
    assert IN_WRITE_MARKER not in normalized(schema.PROFILE)
