"""Cache keys: validation, templates and the physical key schema.

A user key is any printable string (no control characters) of at most
``MAX_KEY_BYTES`` UTF-8 bytes; backends add their own limits (memcached: no spaces, 250
bytes). The physical key a backend stores is ``<prefix><namespace>:<key>`` (or
``<prefix><key>`` without a namespace).

Companion keys (the fill lease) must live in the same Redis Cluster slot as their entry,
so :func:`companion_key` reuses the entry's hash tag when it has one and wraps the whole
key in braces otherwise. A key with a ``}`` but no valid hash tag cannot be co-located
and is refused.
"""

from __future__ import annotations

import string
from collections.abc import Mapping, Sequence
from typing import Any

from readscale.errors import ConfigurationError, InvalidKeyError

MAX_KEY_BYTES = 1024
DEFAULT_PREFIX = "rs:"

_FORMATTER = string.Formatter()


def validate_key(key: object) -> str:
    """Return ``key`` if it is a valid user key, else raise :class:`InvalidKeyError`."""
    if not isinstance(key, str):
        raise InvalidKeyError(repr(key), f"keys are str, not {type(key).__name__}")
    if not key:
        raise InvalidKeyError(key, "empty key")
    if not key.isprintable():
        raise InvalidKeyError(key, "contains control or non-printable characters")
    if len(key) > MAX_KEY_BYTES // 4 and len(key.encode()) > MAX_KEY_BYTES:
        raise InvalidKeyError(key[:64] + "...", f"longer than {MAX_KEY_BYTES} bytes")
    if "}" in key and hash_tag(key) is None:
        raise InvalidKeyError(key, "'}' is only allowed inside a Redis hash tag such as {user:1}")
    return key


def hash_tag(key: str) -> str | None:
    """The Redis Cluster hash tag of ``key`` (the text in its first ``{...}``), if any."""
    start = key.find("{")
    if start < 0:
        return None
    end = key.find("}", start + 1)
    if end <= start + 1:
        return None
    return key[start + 1 : end]


def physical_key(prefix: str, namespace: str, key: str) -> str:
    return f"{prefix}{namespace}:{key}" if namespace else f"{prefix}{key}"


def physical_keys(prefix: str, namespace: str, keys: Sequence[str]) -> list[str]:
    """The stored keys of many user keys, each validated as by :func:`validate_key`.

    Batch reads spend more time naming keys than decoding them, so the common case (short,
    printable keys without braces) is checked once over the joined text, in C; anything
    else goes key by key, which also names the offending key.
    """
    if not keys:
        return []
    head = f"{prefix}{namespace}:" if namespace else prefix
    try:
        joined = "".join(keys)
    except TypeError:
        joined = None
    if (
        joined is not None
        and joined.isprintable()
        and "}" not in joined
        and all(keys)
        and max(map(len, keys)) <= MAX_KEY_BYTES // 4
    ):
        return [head + key for key in keys]
    return [head + validate_key(key) for key in keys]


def companion_key(key: str, suffix: str) -> str:
    """A key in the same cluster slot as ``key`` (for its lease or tombstone)."""
    if hash_tag(key) is not None:
        return f"{key}:{suffix}"
    return f"{{{key}}}:{suffix}"


def template_fields(template: str) -> tuple[str, ...]:
    """The field names a key template uses, e.g. ``("user_id",)`` for ``"user:{user_id}"``."""
    try:
        parsed = list(_FORMATTER.parse(template))
    except ValueError as exc:
        raise ConfigurationError(f"bad key template {template!r}: {exc}") from None
    names = []
    for _, field, spec, conversion in parsed:
        if field is None:
            continue
        if not field.isidentifier():
            raise ConfigurationError(f"key template {template!r}: field {{{field}}} must be a plain argument name")
        if spec or conversion:
            raise ConfigurationError(f"key template {template!r}: no format specs or conversions in {{{field}}}")
        names.append(field)
    if not names and "{" in template:
        raise ConfigurationError(f"bad key template {template!r}")
    return tuple(names)


def format_key(template: str, values: Mapping[str, Any]) -> str:
    """Fill a key template; values must be str, int, bool, float or None."""
    for name, value in values.items():
        if not isinstance(value, str | int | float | bool | type(None)):
            raise InvalidKeyError(
                template, f"argument {name}={value!r} of type {type(value).__name__} cannot be part of a key"
            )
    return validate_key(template.format_map(values))
