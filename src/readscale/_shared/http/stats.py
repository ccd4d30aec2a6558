"""The response cache's counters (one object for both driver flavours)."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class ResponseCacheStats:
    """Counters of one response cache. ``misses``: handler runs that filled the cache;
    ``passes``: responses sent without being stored (``refused`` of them refused by the
    storage rules, the others not shareable by another request's)."""

    hits: int = 0
    stale: int = 0
    misses: int = 0
    passes: int = 0
    stored: int = 0
    refused: int = 0
    refreshed: int = 0

    def snapshot(self) -> dict[str, int]:
        return asdict(self)
