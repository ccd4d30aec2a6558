#!/usr/bin/env python
"""Enforce readscale's layers by reading the source (no import runs).

- ``readscale._core`` is pure policy: it imports no I/O, clock, randomness or framework
  module, and nothing of readscale outside ``_core`` and ``errors``. It never calls
  ``datetime.now()`` and friends: ``now`` and ``rng`` are arguments.
- Nothing in the library imports the command line (``readscale.cli``).
- Dependencies point one way: ``_core`` <- primitives and backends <- drivers <-
  integrations <- cli.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "src" / "readscale"

CORE_FORBIDDEN = {
    "asyncio", "anyio", "concurrent", "multiprocessing", "os", "random", "secrets", "select",
    "selectors", "signal", "socket", "ssl", "subprocess", "threading", "time", "uuid",
    "http", "urllib.request", "shutil", "tempfile", "io", "logging",
    "redis", "psycopg", "psycopg_pool", "psycopg2", "httpx", "hishel", "starlette", "fastapi",
    "django", "flask", "sqlalchemy", "prometheus_client", "typer", "rich", "uvicorn",
}  # fmt: skip
CLOCK_CALLS = {"now", "utcnow", "today", "time", "monotonic", "perf_counter"}


def imports(tree: ast.AST) -> Iterator[tuple[int, str]]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module


def forbidden(module: str, banned: set[str]) -> bool:
    return any(module == b or module.startswith(b + ".") for b in banned)


def check() -> list[str]:
    problems: list[str] = []
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG.parent)
        tree = ast.parse(path.read_text(), str(path))
        in_core = path.is_relative_to(PKG / "_core")
        in_cli = path.is_relative_to(PKG / "cli")
        for lineno, module in imports(tree):
            if in_core and forbidden(module, CORE_FORBIDDEN):
                problems.append(f"{rel}:{lineno}: _core must stay pure but imports {module}")
            if (
                in_core
                and module.startswith("readscale")
                and not (module.startswith("readscale._core") or module == "readscale.errors")
            ):
                problems.append(f"{rel}:{lineno}: _core may import only _core and errors, not {module}")
            if not in_cli and module.startswith("readscale.cli"):
                problems.append(f"{rel}:{lineno}: the library must not import the command line ({module})")
        if in_core:
            for node in ast.walk(tree):
                if (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute)
                    and node.func.attr in CLOCK_CALLS
                ):
                    name = node.func.attr
                    problems.append(f"{rel}:{node.lineno}: _core reads the clock ({name}()); take `now` as an argument")
    return problems


def main() -> int:
    problems = check()
    for line in problems:
        print(line)
    if problems:
        print(f"layer check: {len(problems)} problem(s)")
        return 1
    print("layer check: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
