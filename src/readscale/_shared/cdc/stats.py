"""What the CDC worker did, counted in-process (shared by the async and sync worker)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class CdcStats:
    batches: int = 0
    transactions: int = 0
    changes: int = 0
    keys_invalidated: int = 0
    tags_invalidated: int = 0
    slot_resets: int = 0
    errors: int = 0
    unmapped_tables: set[str] = field(default_factory=set)
    last_commit_lsn: int = 0
    lag_bytes: int = 0  # WAL the slot has not confirmed
    lag_seconds: float = 0.0  # bound on the age of the oldest unapplied change (readscale._core.cdc.lag)
