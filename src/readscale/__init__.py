"""readscale: the whole layered read path for Python services.

browser cache -> edge cache -> application cache (in-process + Redis / Redis Cluster /
Memcached) -> read replicas (read-your-writes by WAL position) -> primary.

``import readscale`` works with no extras installed; each integration imports its
framework only when used.
"""

from readscale.errors import (
    BackendError,
    CacheUnavailableError,
    ConfigurationError,
    CorruptValueError,
    HeaderError,
    InvalidKeyError,
    LeaseError,
    PurgeError,
    ReadscaleError,
    ReplicaUnavailableError,
    SerializationError,
    UnserializableValueError,
    ValueTooLargeError,
)

__version__ = "0.1.0"

__all__ = [
    "BackendError",
    "CacheUnavailableError",
    "ConfigurationError",
    "CorruptValueError",
    "HeaderError",
    "InvalidKeyError",
    "LeaseError",
    "PurgeError",
    "ReadscaleError",
    "ReplicaUnavailableError",
    "SerializationError",
    "UnserializableValueError",
    "ValueTooLargeError",
    "__version__",
]
