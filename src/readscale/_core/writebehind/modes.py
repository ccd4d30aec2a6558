"""Write-behind durability modes: what each promises, and whether a Redis can keep it.

A write-behind write is acknowledged once Redis has it. What survives a crash then
depends on the server's persistence settings, which readscale does not own; so each mode
names a promise, and the drivers read the server's real settings (``CONFIG GET``,
``INFO persistence``) and refuse to start when they cannot keep it. No I/O here: the
drivers fetch :class:`ServerFacts`; :func:`check_mode` decides.

Facts this relies on (Redis 7.0, verified on this project's machines, see the docs):

- ``appendfsync always``: Redis fsyncs its AOF before it sends the replies of an event
  loop iteration, so an acknowledged write survives a crash of the process and of the
  host; every write in one iteration shares that fsync.
- ``appendfsync everysec``: Redis writes the AOF before it replies, except while a
  background fsync is still running: then it postpones the write (up to 2 seconds, by
  its one-second clock: under 3 seconds) and replies anyway. A process killed then loses
  what it acknowledged meanwhile; ``INFO``'s ``aof_delayed_fsync`` counts the times the
  postponement ran out. A host crash also loses what was written but not yet fsynced.
- ``no-appendfsync-on-rewrite yes`` skips fsyncs while a rewrite or a save runs (tens of
  seconds), so neither promise holds with it.
- ``maxmemory`` with an ``allkeys-*`` policy may evict the queue itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum

from readscale.errors import ConfigurationError, DurabilityError


class WriteBehindMode(Enum):
    """How much an acknowledged write-behind write survives; chosen by name."""

    #: No acknowledged write is lost when Redis or its host crashes.
    DURABLE = "durable"
    #: A crash loses at most the writes acknowledged in its last few seconds.
    FAST = "fast"
    #: No promise: a cache that accepts losing writes when Redis restarts.
    VOLATILE = "volatile"


#: Seconds of acknowledged writes ``fast`` may lose when the Redis process dies: Redis
#: postpones its AOF write while an fsync runs for up to 2 s of its one-second clock.
FAST_LOSS_WINDOW = 3.0

#: One sentence per mode, as the docs and the refusals say it.
PROMISES = {
    WriteBehindMode.DURABLE: "no acknowledged write is lost when Redis or its host crashes "
    "(appendfsync always: Redis fsyncs before it replies; concurrent writes share one fsync)",
    WriteBehindMode.FAST: f"a crash loses at most the writes acknowledged in the {FAST_LOSS_WINDOW:.0f} seconds "
    "before it, plus on a host crash those the disk had not yet synced (appendfsync everysec)",
    WriteBehindMode.VOLATILE: "no durability promise: acknowledged writes not yet flushed are lost whenever Redis "
    "loses its data",
}

#: What ``CONFIG GET`` is asked for.
CONFIG_SETTINGS = ("appendonly", "appendfsync", "no-appendfsync-on-rewrite", "maxmemory", "maxmemory-policy")

_NEEDS_FSYNC = {WriteBehindMode.DURABLE: ("always",), WriteBehindMode.FAST: ("everysec", "always")}


def coerce_mode(value: WriteBehindMode | str) -> WriteBehindMode:
    """``"durable"`` -> :attr:`WriteBehindMode.DURABLE`; anything else is a clear error."""
    if isinstance(value, WriteBehindMode):
        return value
    try:
        return WriteBehindMode(str(value).strip().lower())
    except ValueError:
        names = ", ".join(m.value for m in WriteBehindMode)
        raise ConfigurationError(f"write-behind mode must be one of {names}, got {value!r}") from None


def parse_assumed(items: Mapping[str, str] | None) -> dict[str, str]:
    """Settings an operator declares for a Redis whose ``CONFIG`` is disabled (managed
    Redis); only those ``CONFIG GET`` would have read are accepted."""
    out: dict[str, str] = {}
    for name, value in (items or {}).items():
        key = str(name).strip().lower()
        if key not in CONFIG_SETTINGS:
            raise ConfigurationError(f"assume_config names {name!r}; it may declare {', '.join(CONFIG_SETTINGS)}")
        out[key] = str(value).strip().lower()
    return out


def parse_info(text: str) -> dict[str, str]:
    """``INFO`` text -> ``{field: value}`` (sections and comments dropped)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        if not line or line.startswith("#") or ":" not in line:
            continue
        name, _, value = line.partition(":")
        out[name.strip()] = value.strip()
    return out


@dataclass(frozen=True, slots=True)
class ServerFacts:
    """What a driver read from the Redis holding a queue.

    ``config``: ``CONFIG GET`` of :data:`CONFIG_SETTINGS` (empty when refused, with the
    server's reason in ``config_error``); ``info``: ``INFO persistence`` and ``INFO
    stats`` fields; ``assumed``: settings the operator declared for what ``CONFIG``
    could not read (never over what it did read).
    """

    config: Mapping[str, str] = field(default_factory=dict)
    info: Mapping[str, str] = field(default_factory=dict)
    config_error: str | None = None
    assumed: Mapping[str, str] = field(default_factory=dict)

    def setting(self, name: str) -> tuple[str | None, str]:
        """``(value, where from)``: read by CONFIG, declared, or unknown (None)."""
        if name in self.config:
            return self.config[name].lower(), "CONFIG GET"
        if name in self.assumed:
            return self.assumed[name], "assume_config"
        return None, "unknown"

    @property
    def loading(self) -> bool:
        """Redis is still loading its data: INFO then says ``aof_enabled:0`` even with
        the AOF on, so nothing can be judged yet (the drivers wait, as for an outage)."""
        return self.info.get("loading") == "1" or self.info.get("async_loading") == "1"

    @property
    def delayed_fsyncs(self) -> int | None:
        raw = self.info.get("aof_delayed_fsync")
        return int(raw) if raw is not None and raw.isdigit() else None


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a Redis cannot keep a mode's promise: the setting, what it is, what it needs."""

    mode: WriteBehindMode
    setting: str
    found: str
    needed: str
    advice: str

    def line(self, where: str) -> str:
        """One line naming the setting, for a log or an exit message."""
        return (
            f"write-behind mode {self.mode.value!r} refused on {where}: {self.setting} is {self.found}, it needs "
            f"{self.needed} ({PROMISES[self.mode]}); {self.advice}"
        )

    def error(self, where: str) -> DurabilityError:
        return DurabilityError(
            self.line(where), mode=self.mode.value, setting=self.setting, found=self.found, needed=self.needed
        )


def check_mode(mode: WriteBehindMode, facts: ServerFacts) -> Refusal | None:
    """The first reason ``facts`` cannot keep ``mode``'s promise, or None: it can.

    ``volatile`` promises nothing and is never refused. The others need the AOF on
    (``INFO``'s ``aof_enabled`` is read even where ``CONFIG`` is disabled), the fsync
    policy of the mode, fsyncs kept during rewrites, and no eviction of keys without a
    TTL (the queue has none).
    """
    if mode is WriteBehindMode.VOLATILE:
        return None
    if facts.loading:
        raise ValueError("a Redis still loading its data cannot be judged (check ServerFacts.loading first)")
    other = "mode='fast' (a few seconds at risk)" if mode is WriteBehindMode.DURABLE else "mode='volatile'"
    aof = facts.info.get("aof_enabled")
    appendonly, _ = facts.setting("appendonly")
    if aof == "0" or (aof is None and appendonly == "no"):
        return Refusal(
            mode, "appendonly", "no", "yes",
            "a Redis without persistence forgets every queued write when it restarts: start it with --appendonly "
            f"yes --appendfsync {_NEEDS_FSYNC[mode][0]} (readscale stack up --redis-aof), or choose mode='volatile' "
            "if losing them is acceptable",
        )  # fmt: skip
    if aof is None and appendonly is None:
        return Refusal(mode, "appendonly", "unknown (INFO persistence has no aof_enabled)", "yes",
                       "check that this is Redis >= 7.0 and INFO is allowed")  # fmt: skip
    fsync, source = facts.setting("appendfsync")
    needed = _NEEDS_FSYNC[mode]
    if fsync is None:
        why = f"CONFIG GET failed: {facts.config_error}" if facts.config_error else "CONFIG GET did not return it"
        return Refusal(
            mode, "appendfsync", f"unknown ({why})", " or ".join(needed),
            "if your provider guarantees it, declare it: assume_config={'appendfsync': "
            f"'{needed[0]}'}} (readscale writebehind run --assume-config appendfsync={needed[0]})",
        )  # fmt: skip
    if fsync not in needed:
        return Refusal(
            mode, "appendfsync", f"{fsync} ({source})", " or ".join(needed),
            f"set it (CONFIG SET appendfsync {needed[0]}, and in redis.conf), or choose {other}",
        )  # fmt: skip
    rewrite, source = facts.setting("no-appendfsync-on-rewrite")
    if rewrite == "yes":
        return Refusal(
            mode, "no-appendfsync-on-rewrite", f"yes ({source})", "no",
            "Redis skips fsyncs while a rewrite or a save runs: set it to no (CONFIG SET no-appendfsync-on-rewrite no)",
        )  # fmt: skip
    policy, source = facts.setting("maxmemory-policy")
    maxmemory, _ = facts.setting("maxmemory")
    if policy is not None and policy.startswith("allkeys") and maxmemory not in (None, "0"):
        return Refusal(
            mode, "maxmemory-policy", f"{policy} ({source}, maxmemory {maxmemory})", "noeviction or volatile-*",
            "an allkeys policy may evict the queue itself: use a volatile-* policy (cache entries have a TTL, the "
            "queue has none) or noeviction",
        )  # fmt: skip
    return None


def delayed_fsync_growth(previous: int | None, current: int | None) -> int:
    """Fsyncs Redis postponed past its limit since the last look (0 after a restart,
    which resets the counter)."""
    if previous is None or current is None or current < previous:
        return 0
    return current - previous


__all__ = [
    "CONFIG_SETTINGS",
    "FAST_LOSS_WINDOW",
    "PROMISES",
    "Refusal",
    "ServerFacts",
    "WriteBehindMode",
    "check_mode",
    "coerce_mode",
    "delayed_fsync_growth",
    "parse_assumed",
    "parse_info",
]
