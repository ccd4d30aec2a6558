"""Write-behind's settings: the queue's names and Redis keys, how the producer queues
writes (:class:`WriteBehindSettings`, :class:`WhenFull`) and how a flusher applies them
(:class:`FlusherSettings`). Validated when built: a bad value raises
:class:`~readscale.errors.ConfigurationError` naming the field.

The pipeline's invariants are stated in :mod:`readscale._core.writebehind.flush`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum

from readscale._core.writebehind.modes import WriteBehindMode, coerce_mode, parse_assumed
from readscale.errors import ConfigurationError

# -- names -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class QueueKeys:
    """The Redis keys of one write-behind queue. They share the hash tag ``{queue}``.

    ``acc`` is the hash where counter increments add up (key -> running delta) until a
    flusher moves them into the stream as one record (see :class:`CounterSums`).
    """

    stream: str
    clock: str
    dead: str
    acc: str


def validate_queue_name(name: str) -> str:
    if not name or not name.isprintable() or any(c in name for c in " {}:"):
        raise ConfigurationError(f"write-behind queue name must be printable, without spaces, ':' or braces: {name!r}")
    return name


def queue_keys(prefix: str, queue: str) -> QueueKeys:
    base = f"{prefix}wb:{{{validate_queue_name(queue)}}}"
    return QueueKeys(stream=f"{base}:q", clock=f"{base}:clock", dead=f"{base}:dead", acc=f"{base}:acc")


# -- settings --------------------------------------------------------------------------------


class WhenFull(Enum):
    """What ``write_behind`` does when the queue holds ``max_queue_length`` records."""

    #: Wait (polling with backoff) up to ``max_wait`` seconds, then raise.
    WAIT = "wait"
    #: Raise :class:`~readscale.errors.WriteQueueFullError` at once.
    RAISE = "raise"


@dataclass(frozen=True, slots=True)
class WriteBehindSettings:
    """How the producer queues writes.

    Arguments:
        queue: the queue's name (one stream, one version clock, one dead-letter stream).
        max_queue_length: records the queue may hold (unflushed + in flight); 0: no limit.
        when_full: wait or raise once the queue is full (never drop).
        max_wait: the longest a write waits for room, in seconds (``WhenFull.WAIT``).
        mode: the durability promise, by name (:class:`WriteBehindMode`): ``"durable"``
            (the default), ``"fast"`` or ``"volatile"``. The Redis's settings are checked
            before the first write and every ``recheck_every`` seconds; a Redis that
            cannot keep the promise gets :class:`~readscale.errors.DurabilityError`.
        assume_config: settings to take as given where ``CONFIG GET`` is disabled (a
            managed Redis), e.g. ``{"appendfsync": "always"}``; never over what it reads.
        recheck_every: seconds between checks of the server's settings while writing.
    """

    queue: str = "default"
    max_queue_length: int = 100_000
    when_full: WhenFull = WhenFull.WAIT
    max_wait: float = 5.0
    mode: WriteBehindMode | str = WriteBehindMode.DURABLE
    assume_config: Mapping[str, str] | tuple[tuple[str, str], ...] = ()
    recheck_every: float = 30.0

    def __post_init__(self) -> None:
        validate_queue_name(self.queue)
        object.__setattr__(self, "mode", coerce_mode(self.mode))
        object.__setattr__(self, "assume_config", tuple(sorted(parse_assumed(dict(self.assume_config)).items())))
        if not self.recheck_every > 0:
            raise ConfigurationError(f"recheck_every must be > 0 seconds, got {self.recheck_every}")
        if self.max_queue_length < 0:
            raise ConfigurationError(f"max_queue_length must be >= 0 (0: no limit), got {self.max_queue_length}")
        if not self.max_wait >= 0:
            raise ConfigurationError(f"max_wait must be >= 0 seconds, got {self.max_wait}")

    @property
    def durability(self) -> WriteBehindMode:
        """``mode`` as a :class:`WriteBehindMode` (it may be given by name)."""
        return coerce_mode(self.mode)


@dataclass(frozen=True, slots=True)
class FlusherSettings:
    """How a flusher reads, batches, writes and retries. Durations are in seconds.

    Arguments:
        queue, prefix: which queue (the producer's ``queue`` and its cache's ``prefix``).
        group: the consumer group; every flusher of one queue uses the same group.
        consumer: this flusher's name in the group (default: the host name). A flusher
            restarted under the same name resumes its own pending records at once;
            records of a flusher that never comes back are claimed after ``claim_idle``.
        batch_size: at most this many records per batch (and per transaction).
        batch_wait: a batch closes this long after its first record, full or not.
        block: the longest one idle read waits for new records (also bounds how long a
            stop request waits for an idle read).
        claim_idle: records pending this long in another consumer are claimed.
        max_attempts: a record failing alone this many times is dead-lettered.
        retry_base, retry_cap: the backoff between retries: ``retry_base * 2**n``, capped.
        forget_consumers_after: consumers idle this long with nothing pending are removed
            from the group (0: never).
        mode, assume_config: the producers' durability mode (see
            :class:`WriteBehindSettings`): checked against the server when the flusher
            starts (it refuses to start if the Redis cannot keep it) and every
            ``recheck_every`` seconds after (logged, counted). In ``fast`` mode counter
            increments are applied only once older than the mode's loss window.
        seal_every: seconds between two moves of the counters' running sums into the
            queue (a first increment after a move also asks for one at once).
    """

    queue: str = "default"
    prefix: str = "rs:"
    group: str = "readscale-flusher"
    consumer: str | None = None
    batch_size: int = 500
    batch_wait: float = 0.05
    block: float = 1.0
    claim_idle: float = 30.0
    max_attempts: int = 5
    retry_base: float = 0.05
    retry_cap: float = 5.0
    forget_consumers_after: float = 3600.0
    mode: WriteBehindMode | str = WriteBehindMode.DURABLE
    assume_config: Mapping[str, str] | tuple[tuple[str, str], ...] = ()
    recheck_every: float = 10.0
    seal_every: float = 1.0

    def __post_init__(self) -> None:
        validate_queue_name(self.queue)
        object.__setattr__(self, "mode", coerce_mode(self.mode))
        object.__setattr__(self, "assume_config", tuple(sorted(parse_assumed(dict(self.assume_config)).items())))

        def bad(message: str) -> ConfigurationError:
            return ConfigurationError(f"flusher settings: {message}")

        if not self.group or " " in self.group:
            raise bad(f"group must be a name without spaces, got {self.group!r}")
        if self.consumer is not None and (not self.consumer or " " in self.consumer):
            raise bad(f"consumer must be a name without spaces, got {self.consumer!r}")
        if self.batch_size < 1:
            raise bad(f"batch_size must be >= 1, got {self.batch_size}")
        if not self.batch_wait >= 0:
            raise bad(f"batch_wait must be >= 0 seconds, got {self.batch_wait}")
        if not self.block >= 0.001:
            raise bad(f"block must be >= 0.001 seconds, got {self.block}")
        if not self.claim_idle > 0:
            raise bad(f"claim_idle must be > 0 seconds, got {self.claim_idle}")
        if self.max_attempts < 1:
            raise bad(f"max_attempts must be >= 1, got {self.max_attempts}")
        if not 0 < self.retry_base <= self.retry_cap:
            raise bad(f"need 0 < retry_base <= retry_cap, got {self.retry_base} and {self.retry_cap}")
        if not self.forget_consumers_after >= 0:
            raise bad(f"forget_consumers_after must be >= 0 seconds, got {self.forget_consumers_after}")
        if not self.recheck_every > 0:
            raise bad(f"recheck_every must be > 0 seconds, got {self.recheck_every}")
        if not self.seal_every > 0:
            raise bad(f"seal_every must be > 0 seconds, got {self.seal_every}")

    @property
    def keys(self) -> QueueKeys:
        return queue_keys(self.prefix, self.queue)

    @property
    def durability(self) -> WriteBehindMode:
        """``mode`` as a :class:`WriteBehindMode` (it may be given by name)."""
        return coerce_mode(self.mode)


__all__ = [
    "FlusherSettings",
    "QueueKeys",
    "WhenFull",
    "WriteBehindSettings",
    "queue_keys",
    "validate_queue_name",
]
