"""Which SQL text may run on a replica, for integrations that only see strings.

Unknown means the primary (the safe default): only statements that start with a
read-only keyword and take no row locks count as reads. ``WITH`` may hide an INSERT,
``SELECT ... FOR UPDATE`` locks rows, ``nextval()`` writes: all go to the primary. Of
the transaction-control statements, none is a write by itself.
"""

from __future__ import annotations

import re

__all__ = ["is_read_sql", "is_transaction_control"]

_COMMENTS = re.compile(r"(--[^\n]*\n?|/\*.*?\*/)", re.DOTALL)
_FIRST_WORD = re.compile(r"\s*\(*\s*([A-Za-z]+)")
_READ_KEYWORDS = frozenset({"SELECT", "SHOW", "VALUES", "TABLE"})  # not EXPLAIN: ANALYZE runs it
_CONTROL_KEYWORDS = frozenset({"BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE", "START", "END", "SET"})
_WRITES_INSIDE = re.compile(
    r"\bFOR\s+(NO\s+KEY\s+UPDATE|UPDATE|KEY\s+SHARE|SHARE)\b|\b(nextval|setval|pg_advisory\w*)\s*\(|\bINTO\b",
    re.IGNORECASE,
)


def _first_word(sql: str) -> str:
    match = _FIRST_WORD.match(_COMMENTS.sub(" ", sql))
    return match.group(1).upper() if match else ""


def is_read_sql(sql: str) -> bool:
    """True only for statements that read without writing or locking (SELECT, SHOW...)."""
    if _first_word(sql) not in _READ_KEYWORDS:
        return False
    return _WRITES_INSIDE.search(_COMMENTS.sub(" ", sql)) is None


def is_transaction_control(sql: str) -> bool:
    """BEGIN, COMMIT, SAVEPOINT and friends (and SET): statements that change no data."""
    return _first_word(sql) in _CONTROL_KEYWORDS
