"""Which SQL text an integration may send to a replica (pure)."""

from __future__ import annotations

import pytest

from readscale.replicas._sql import is_read_sql, is_transaction_control


@pytest.mark.parametrize(
    ("sql", "read"),
    [
        ("SELECT 1", True),
        ("  select * from items where id = %s", True),
        ("(SELECT 1) UNION (SELECT 2)", True),
        ("/* a comment */ SELECT 1", True),
        ("-- why\nSELECT 1", True),
        ("SHOW server_version", True),
        ("VALUES (1), (2)", True),
        ("TABLE items", True),
        ("SELECT * FROM items FOR UPDATE", False),
        ("SELECT * FROM items FOR NO KEY UPDATE", False),
        ("SELECT * FROM items for share", False),
        ("SELECT * FROM items FOR KEY SHARE", False),
        ("SELECT nextval('s')", False),
        ("SELECT setval('s', 1)", False),
        ("SELECT pg_advisory_lock(1)", False),
        ("SELECT * INTO copy FROM items", False),
        ("WITH x AS (DELETE FROM items RETURNING *) SELECT * FROM x", False),
        ("EXPLAIN ANALYZE UPDATE items SET v = 1", False),
        ("INSERT INTO items VALUES (1)", False),
        ("UPDATE items SET v = 1", False),
        ("DELETE FROM items", False),
        ("CREATE TABLE t (id int)", False),
        ("", False),
        ("   ", False),
        ("/* SELECT */ UPDATE items SET v = 1", False),
    ],
)
def test_only_plain_reads_are_reads(sql: str, read: bool) -> None:
    assert is_read_sql(sql) is read


@pytest.mark.parametrize(
    ("sql", "control"),
    [("BEGIN", True), ("COMMIT", True), ('SAVEPOINT "s1"', True), ('RELEASE SAVEPOINT "s1"', True),
     ("ROLLBACK TO SAVEPOINT s1", True), ("SET TIME ZONE 'UTC'", True), ("UPDATE t SET v = 1", False),
     ("SELECT 1", False)],
)  # fmt: skip
def test_transaction_control(sql: str, control: bool) -> None:
    assert is_transaction_control(sql) is control
