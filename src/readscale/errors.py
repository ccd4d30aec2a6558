"""The one error root of readscale and its few leaves.

Every exception readscale raises on purpose derives from :class:`ReadscaleError`, so
an application can catch the whole family in one place. Leaves carry the fields an
operator needs (the key, the backend, the size and the limit, the header) instead of
burying them in a message. Errors of foreign libraries (redis-py, psycopg, httpx) are
converted at the boundary with ``raise ... from exc`` so the original stays attached.

Outcomes that are not errors are values, never exceptions: a cache miss is
``NO_VALUE``, a response that must not be cached is ``NotCacheable(reason)``.
"""

from __future__ import annotations

__all__ = [
    "BackendError",
    "CacheUnavailableError",
    "ConfigurationError",
    "CorruptValueError",
    "DurabilityError",
    "HeaderError",
    "InvalidKeyError",
    "LeaseError",
    "MissingBinaryError",
    "PrimaryUnavailableError",
    "PurgeError",
    "ReadscaleError",
    "ReplicaUnavailableError",
    "SerializationError",
    "StackError",
    "UnserializableValueError",
    "ValueTooLargeError",
    "WriteQueueFullError",
]


class ReadscaleError(Exception):
    """The root of every error readscale raises on purpose."""


# -- configuration ---------------------------------------------------------------------


class ConfigurationError(ReadscaleError, ValueError):
    """A setting, policy or argument is invalid; the message names it and why."""


class InvalidKeyError(ConfigurationError):
    """A cache key the chosen backend cannot store (too long, spaces, control characters)."""

    def __init__(self, key: str, reason: str, *, backend: str | None = None) -> None:
        self.key = key
        self.reason = reason
        self.backend = backend
        where = f" for {backend}" if backend else ""
        super().__init__(f"invalid cache key {key!r}{where}: {reason}")


# -- serialisation ---------------------------------------------------------------------


class SerializationError(ReadscaleError):
    """A value could not be encoded or decoded."""


class ValueTooLargeError(SerializationError):
    """An encoded value exceeds the configured maximum size. Nothing was stored."""

    def __init__(self, key: str | None, size: int, limit: int) -> None:
        self.key = key
        self.size = size
        self.limit = limit
        super().__init__(
            f"value for key {key!r} is {size} bytes once encoded, over the limit of {limit} "
            "bytes; nothing was stored (raise max_value_size or cache a smaller value)"
        )


class UnserializableValueError(SerializationError, TypeError):
    """The codec cannot encode this object (for example a set or a socket under JSON)."""

    def __init__(self, key: str | None, type_name: str, codec: str, detail: str = "") -> None:
        self.key = key
        self.type_name = type_name
        self.codec = codec
        self.detail = detail
        extra = f": {detail}" if detail else ""
        super().__init__(f"cannot encode value of type {type_name} for key {key!r} with the {codec} codec{extra}")


class CorruptValueError(SerializationError):
    """A stored payload failed to decode. Drivers count it as a miss; it never escapes a read."""

    def __init__(self, key: str | None, reason: str) -> None:
        self.key = key
        self.reason = reason
        super().__init__(f"stored value for key {key!r} cannot be decoded: {reason}")


# -- backends --------------------------------------------------------------------------


class BackendError(ReadscaleError):
    """A server readscale depends on failed or misbehaved."""

    def __init__(self, message: str, *, backend: str | None = None) -> None:
        self.backend = backend
        super().__init__(message)


class CacheUnavailableError(BackendError):
    """The cache server is down, slow past its timeout, or its circuit breaker is open.

    ``busy`` is true when the server was not at fault: every pooled connection was in
    use past the pool timeout (local back-pressure). It does not trip the breaker.
    """

    def __init__(self, message: str, *, backend: str | None = None, busy: bool = False) -> None:
        self.busy = busy
        super().__init__(message, backend=backend)


class ReplicaUnavailableError(BackendError):
    """No database node could serve a read within its budget; retrying later may succeed."""

    def __init__(self, message: str, *, backend: str | None = None, retry_after: float | None = None) -> None:
        self.retry_after = retry_after
        super().__init__(message, backend=backend)


class PrimaryUnavailableError(BackendError):
    """The primary cannot take a write now (down, unreachable, or its pool is exhausted).

    Reads keep flowing to replicas meanwhile; ``retry_after`` suggests when to try again.
    """

    def __init__(self, message: str, *, backend: str | None = "primary", retry_after: float | None = None) -> None:
        self.retry_after = retry_after
        super().__init__(message, backend=backend)


class PurgeError(BackendError):
    """An edge purge failed after its retries; ``nodes``: the edge nodes that missed it
    (an edge of several nodes), empty when the purger has one target."""

    def __init__(self, message: str, *, backend: str | None = None, nodes: tuple[str, ...] = ()) -> None:
        self.nodes = nodes
        super().__init__(message, backend=backend)


class LeaseError(ReadscaleError):
    """A lease could not be taken, was lost, or was released by someone who did not hold it."""

    def __init__(self, key: str, reason: str) -> None:
        self.key = key
        self.reason = reason
        super().__init__(f"lease for key {key!r}: {reason}")


# -- write-behind ----------------------------------------------------------------------


class WriteQueueFullError(ReadscaleError):
    """A write-behind write was refused because its queue is full: nothing was stored.

    The flusher is behind (or stopped, or its database is down). Retry later, slow the
    writers down, or raise ``max_queue_length``; the write was not acknowledged.
    """

    def __init__(self, queue: str, length: int, limit: int, waited: float) -> None:
        self.queue = queue
        self.length = length
        self.limit = limit
        self.waited = waited
        waited_text = f" after waiting {waited:.2f}s" if waited > 0 else ""
        super().__init__(
            f"write-behind queue {queue!r} is full ({length} records, limit {limit}){waited_text}; "
            "the write was not stored: check that a flusher runs and its database answers"
        )


class DurabilityError(ConfigurationError):
    """The Redis holding a write-behind queue cannot keep the chosen mode's promise (its
    persistence settings are weaker): the producer or flusher refuses to start, or a
    producer refuses further writes. ``setting`` names the server setting at fault."""

    def __init__(self, message: str, *, mode: str, setting: str, found: str, needed: str) -> None:
        self.mode = mode
        self.setting = setting
        self.found = found
        self.needed = needed
        super().__init__(message)


# -- HTTP ------------------------------------------------------------------------------


class HeaderError(ReadscaleError, ValueError):
    """A request header is malformed. Integrations answer it with a 400, never a 500."""

    def __init__(self, header: str, value: str, reason: str) -> None:
        self.header = header
        self.value = value
        self.reason = reason
        shown = value if len(value) <= 80 else value[:77] + "..."
        super().__init__(f"malformed {header} header {shown!r}: {reason}")


# -- the local stack -------------------------------------------------------------------


class StackError(ReadscaleError):
    """The local stack could not start, stop or inject a fault."""


class MissingBinaryError(StackError):
    """A server binary the stack needs is not installed."""

    def __init__(self, binary: str, package: str) -> None:
        self.binary = binary
        self.package = package
        super().__init__(
            f"{binary} was not found on PATH; install it with: apt-get install -y {package} (Debian package {package})"
        )
