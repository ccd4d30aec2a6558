"""The one helper for optional imports: a face lists its names and the modules that hold
them, and a module is imported the first time one of its names is asked for.

    __getattr__, __dir__ = lazy_exports(__name__, {"AsyncRedisBackend": "readscale._async.backends.redis"})

So each extra imports exactly what it installs: ``from readscale.backends import
AsyncMemcachedBackend`` works without redis-py, and asking for a Redis backend without it
raises an ``ImportError`` naming the extra to install (from :data:`EXTRAS`, which
``tests/test_extras.py`` keeps equal to ``pyproject.toml``). Static types come from the
face's ``if TYPE_CHECKING:`` imports of the same names.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable, Mapping
from typing import Any

#: Third-party package (top-level import name) -> (what to call it, the extra that installs it).
EXTRAS: dict[str, tuple[str, str]] = {
    "redis": ("redis-py", "redis"),
    "hiredis": ("hiredis", "redis"),
    "msgpack": ("msgpack", "msgpack"),
    "pydantic": ("pydantic", "pydantic"),
    "psycopg": ("psycopg 3", "postgres"),
    "psycopg_pool": ("psycopg_pool", "postgres"),
    "starlette": ("Starlette", "starlette"),
    "httpx": ("httpx", "starlette"),
    "fastapi": ("FastAPI", "fastapi"),
    "django": ("Django", "django"),
    "flask": ("Flask", "flask"),
    "sqlalchemy": ("SQLAlchemy", "sqlalchemy"),
    "prometheus_client": ("prometheus-client", "prometheus"),
    "typer": ("Typer", "cli"),
    "rich": ("Rich", "cli"),
}


def missing_extra(name: str, exc: ImportError) -> ImportError | None:
    """The error to raise when importing ``name`` failed for want of an optional package,
    or None when ``exc`` is not that (a bug, or a package no extra installs)."""
    package = (exc.name or "").partition(".")[0]
    known = EXTRAS.get(package)
    if known is None:
        return None
    what, extra = known
    return ImportError(f"{name} needs {what}: pip install 'readscale[{extra}]'", name=exc.name)


def require(face: str, *packages: str) -> None:
    """Raise the one-line install hint when a face that cannot work without ``packages``
    (third-party import names, keys of :data:`EXTRAS`) is imported without them: for a
    face whose every name needs them (``readscale.writebehind`` is Redis's), where a
    lazy table would only move the same error to the first name."""
    for package in packages:
        try:
            found = importlib.util.find_spec(package) is not None
        except (ImportError, ValueError):  # a blocked or half-installed package
            found = False
        if not found:
            what, extra = EXTRAS[package]
            raise ImportError(f"{face} needs {what}: pip install 'readscale[{extra}]'", name=package)


def lazy_exports(module: str, table: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for the face ``module``: each name of ``table`` is
    imported from its module on first access and kept in the face's namespace."""

    def __getattr__(name: str) -> Any:
        source = table.get(name)
        if source is None:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        try:
            imported = importlib.import_module(source)
        except ImportError as exc:
            error = missing_extra(name, exc)
            if error is None:
                raise
            raise error from exc
        value = getattr(imported, name)
        setattr(sys.modules[module], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[module])) | set(table))

    return __getattr__, __dir__


__all__ = ["EXTRAS", "lazy_exports", "missing_extra", "require"]
