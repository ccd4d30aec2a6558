"""Change-data-capture rules: from PostgreSQL logical decoding to cache keys and tags.

Input: rows of ``pg_logical_slot_peek_changes(slot, ...)`` with the wal2json plugin in
``format-version 2`` (one JSON document per change, plus ``B``egin and ``C``ommit rows).
Output: per committed transaction, the keys and tags to invalidate and the commit's LSN,
which becomes the tombstone LSN (a fill must read at or past it) and the position the
slot may be advanced to once the invalidations are applied.

Invariants:
- Only complete transactions are returned; a trailing, uncommitted part is left for the
  next read (the slot is never advanced past what was applied).
- An UPDATE that changed the key yields both the old key (from ``identity``) and the
  new one; a DELETE yields the key from ``identity``. Tags built from non-key columns
  need ``REPLICA IDENTITY FULL`` to also cover the old values.
- Applying the same transaction twice is harmless (invalidation is idempotent), so the
  worker is at-least-once.

References: wal2json README (format 2 actions B, C, I, U, D, T, M); PostgreSQL 15
"Logical Decoding SQL Interface"; shared/notes/verified-postgres.md section 7.
"""

from __future__ import annotations

import string
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any

import msgspec

from readscale._core.postgres.dsn import DsnOptions, mask_dsn
from readscale._core.postgres.lsn import format_lsn, parse_lsn
from readscale.errors import ConfigurationError

_FORMATTER = string.Formatter()


@dataclass(frozen=True)
class CdcRule:
    """Which cache keys and tags a change to ``table`` invalidates.

    ``keys`` and ``tags`` are templates over the row's columns, e.g.
    ``keys=("product:{id}",)``, ``tags=("category:{category_id}",)``.
    ``namespace``: the cache namespace the keys live in (flushed if the slot is lost).
    """

    table: str
    keys: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    namespace: str = ""

    def __post_init__(self) -> None:
        if not self.table:
            raise ConfigurationError("a CDC rule needs a table")
        if not self.keys and not self.tags:
            raise ConfigurationError(f"CDC rule for {self.table}: give keys and/or tags to invalidate")
        for template in (*self.keys, *self.tags):
            fields = [f for _, f, _, _ in _FORMATTER.parse(template) if f is not None]
            if not fields or not all(f.isidentifier() for f in fields):
                raise ConfigurationError(
                    f"CDC rule for {self.table}: template {template!r} must use column names, e.g. 'product:{{id}}'"
                )

    @property
    def qualified_table(self) -> str:
        return self.table if "." in self.table else f"public.{self.table}"

    def fields(self) -> set[str]:
        names: set[str] = set()
        for template in (*self.keys, *self.tags):
            names |= {f for _, f, _, _ in _FORMATTER.parse(template) if f}
        return names


@dataclass(frozen=True, repr=False)
class CdcSettings:
    """How the worker reads PostgreSQL.

    ``dsn``: the primary (logical slots live on the primary in PostgreSQL 15); shown
    with its password masked in ``repr``.
    ``postgres``: credentials and TLS applied to ``dsn``
    (:class:`readscale.settings.PostgresSettings`).
    ``batch_changes``: roughly how many changes one peek returns (whole transactions).
    ``tombstones``: invalidate with the commit LSN (needs LSN-aware fills: the replica
    router); off, keys are only deleted.
    ``epoch_tag``: a tag every CDC-managed entry carries; bumped when the slot is lost.
    ``soft_purge``: how the edge purger drops changed pages. Off (the default), a hard
    purge: the next request fetches the new page. On, a soft purge keeps the old page
    inside its stale-while-revalidate window, so the first request after the change still
    gets it (while one background fetch refreshes): gentler on the origin, but a stale
    read for as long as nobody asks.
    """

    dsn: str
    slot: str = "readscale_cdc"
    batch_changes: int = 2000
    poll_interval: float = 0.1
    tombstones: bool = True
    epoch_tag: str | None = None
    soft_purge: bool = False
    postgres: DsnOptions | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.dsn, str) or not self.dsn.strip():
            raise ConfigurationError("CdcSettings.dsn is empty")
        if not self.slot.replace("_", "").isalnum() or not self.slot.islower():
            raise ConfigurationError(f"slot names are lower-case letters, digits and _, got {self.slot!r}")
        if self.batch_changes < 1:
            raise ConfigurationError("batch_changes must be >= 1")
        if self.postgres is not None and not isinstance(self.postgres, DsnOptions):
            raise ConfigurationError(f"postgres must be a PostgresSettings, got {type(self.postgres).__name__}")

    def __repr__(self) -> str:
        shown = [f"{f.name}={mask_dsn(self.dsn) if f.name == 'dsn' else getattr(self, f.name)!r}" for f in fields(self)]
        return f"CdcSettings({', '.join(shown)})"


@dataclass(frozen=True)
class Change:
    action: str  # I, U, D, T
    table: str  # schema.table
    new: Mapping[str, Any]
    old: Mapping[str, Any]


@dataclass(frozen=True)
class Transaction:
    commit_lsn: int
    changes: tuple[Change, ...]


@dataclass(frozen=True)
class Invalidation:
    """What one committed transaction asks of the cache."""

    commit_lsn: int
    keys: frozenset[tuple[str, str]]  # (namespace, key)
    tags: frozenset[str]
    truncated_namespaces: frozenset[str]
    unmapped_tables: frozenset[str]


class _W2J(msgspec.Struct):
    action: str
    schema: str = ""
    table: str = ""
    columns: list[dict[str, Any]] = []
    identity: list[dict[str, Any]] = []


_decoder = msgspec.json.Decoder(_W2J)


def _columns(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {c["name"]: c.get("value") for c in items if "name" in c}


def group_transactions(rows: Iterable[tuple[str, Any, str]]) -> tuple[list[Transaction], int | None]:
    """Group peeked ``(lsn, xid, data)`` rows into committed transactions.

    Returns the transactions and the LSN to advance the slot to after applying them (the
    last COMMIT's), or None when no transaction completed.
    """
    transactions: list[Transaction] = []
    current: list[Change] | None = None
    last_commit: int | None = None
    for lsn_text, _, data in rows:
        try:
            message = _decoder.decode(data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise ValueError(f"unreadable wal2json change at {lsn_text}: {exc}") from None
        action = message.action
        if action == "B":
            current = []
        elif action == "C":
            commit = parse_lsn(lsn_text)
            transactions.append(Transaction(commit, tuple(current or ())))
            current = None
            last_commit = commit
        elif action in ("I", "U", "D", "T"):
            table = f"{message.schema}.{message.table}"
            change = Change(action, table, _columns(message.columns), _columns(message.identity))
            if current is None:  # format-version 2 without include-transaction: one change per "transaction"
                transactions.append(Transaction(parse_lsn(lsn_text), (change,)))
                last_commit = parse_lsn(lsn_text)
            else:
                current.append(change)
        # M (logical messages) and anything newer: nothing to invalidate.
    return transactions, last_commit


def _render(template: str, row: Mapping[str, Any]) -> str | None:
    try:
        return template.format_map({k: "" if v is None else v for k, v in row.items()})
    except (KeyError, ValueError, IndexError):
        return None


def invalidations_for(transaction: Transaction, rules: Iterable[CdcRule]) -> Invalidation:
    by_table: dict[str, list[CdcRule]] = {}
    for rule in rules:
        by_table.setdefault(rule.qualified_table, []).append(rule)
    keys: set[tuple[str, str]] = set()
    tags: set[str] = set()
    truncated: set[str] = set()
    unmapped: set[str] = set()
    for change in transaction.changes:
        table_rules = by_table.get(change.table)
        if not table_rules:
            unmapped.add(change.table)
            continue
        for rule in table_rules:
            if change.action == "T":
                truncated.add(rule.namespace)
                tags.update(t for t in rule.tags if "{" not in t)
                continue
            rows = [r for r in (change.new, change.old) if r]
            for row in rows:
                # A DELETE or an UPDATE under default replica identity carries only the
                # key columns in `old`: merge with `new` so templates find what they need.
                merged = {**change.new, **row} if row is change.old else row
                for template in rule.keys:
                    key = _render(template, merged)
                    if key is not None:
                        keys.add((rule.namespace, key))
                for template in rule.tags:
                    tag = _render(template, merged)
                    if tag is not None:
                        tags.add(tag)
    return Invalidation(
        transaction.commit_lsn, frozenset(keys), frozenset(tags), frozenset(truncated), frozenset(unmapped)
    )


__all__ = [
    "CdcRule",
    "CdcSettings",
    "Change",
    "Invalidation",
    "Transaction",
    "format_lsn",
    "group_transactions",
    "invalidations_for",
    "parse_lsn",
]
