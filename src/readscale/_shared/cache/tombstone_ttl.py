"""The tombstone's life: how long an invalidation's mark outlives the value it removed.

One setting the application's caches and the CDC worker share, read from the
environment (so not in ``_core``), checked against ``_core.cache.fill``'s minimum."""

from __future__ import annotations

import os

from readscale._core.cache.fill import MIN_TOMBSTONE_TTL
from readscale.errors import ConfigurationError

#: The tombstone life when nothing says otherwise: longer than the replica router's
#: default ``max_lag`` (30 s), so replicas in rotation can serve fills.
DEFAULT_TOMBSTONE_TTL = 35.0


#: The one setting the application's caches and the CDC worker share.
TOMBSTONE_TTL_ENV = "READSCALE_TOMBSTONE_TTL"


def check_tombstone_ttl(seconds: float, name: str) -> float:
    if not seconds >= MIN_TOMBSTONE_TTL:
        raise ConfigurationError(
            f"{name} must be at least {MIN_TOMBSTONE_TTL:g} seconds, got {seconds}: fills read no staler "
            "than a bound just below the tombstone's life (docs/consistency.md)"
        )
    return seconds


def default_tombstone_ttl() -> float:
    """``READSCALE_TOMBSTONE_TTL`` (seconds) if set, else :data:`DEFAULT_TOMBSTONE_TTL`."""
    raw = os.environ.get(TOMBSTONE_TTL_ENV, "").strip()
    if not raw:
        return DEFAULT_TOMBSTONE_TTL
    try:
        value = float(raw)
    except ValueError:
        raise ConfigurationError(f"{TOMBSTONE_TTL_ENV} must be a number of seconds, got {raw!r}") from None
    return check_tombstone_ttl(value, TOMBSTONE_TTL_ENV)
