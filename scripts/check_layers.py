#!/usr/bin/env python
"""Enforce readscale's layers by reading the source (no import runs).

Every module of ``src/readscale`` has a rank (:data:`RANKS`, assigned by :data:`TABLE`):

    core < shared < drivers < integrations < tools < cli

and may import only modules of its own rank or below. What that says, rule by rule:

1. **Ranks point one way.** ``_core`` imports nothing of readscale but ``_core`` and
   ``errors``; the shared parts only the core; the drivers (``_async``, ``_sync``) no
   public face or framework integration; and so on up.
2. **The library does not import the tools** (``stack``, ``bench``, ``demo``, ``report``,
   ``testing``): the library is ranks core to integrations.
3. **Nothing imports the command line** (``cli``) but the command line.
4. **``_core`` is pure**: it imports no I/O, clock, randomness or framework module and
   never calls ``now()``, ``time()``, ``monotonic()``...: ``now`` and ``rng`` are arguments.
5. **A driver imports only its own flavour**: ``_async`` never imports ``_sync`` and the
   generated ``_sync`` never imports ``_async``.
6. **A package's ``__init__`` loads with its modules**: importing ``a.b.c`` runs
   ``a.b``'s ``__init__`` first, so a module a lower rank imports must not sit in a
   package of a higher rank (the root ``readscale`` excepted).
7. **Every module has a rank, and the table names only modules that exist**: a new
   top-level module is unranked until it gets a line in :data:`TABLE` (a moved package
   leaves a line naming nothing), and the check says so.
8. **The reference service uses only documented paths** (:data:`REFERENCE_SERVICE`): it
   is what users copy, so it imports no private module of the library (a dotted name
   with a part starting with ``_``). Other tools may, where they measure internals.

An import is any of: ``import a.b``, ``from a import b`` (``a.b`` when that is a module),
relative imports (resolved against the importing module's package), imports inside
functions and under ``TYPE_CHECKING`` (a dependency either way), and lazy imports by
name: ``importlib.import_module("a.b")``, ``__import__("a.b")``, a dict value naming a
readscale module (``{"Router": "readscale._async.replicas.router"}``) and an import target
``"readscale.pkg.module:attr"``.

Known violations that a later change removes are listed in :data:`ALLOWED` with the
reason and the change that ends them: they are reported as allowed (``--verbose``), and an
entry that no longer matches a violation fails the check, so the list only shrinks.

    python scripts/check_layers.py            # problems only; exit 1 if any
    python scripts/check_layers.py --verbose  # also the allowed violations
    python scripts/check_layers.py --ranks    # every module and its rank
"""

from __future__ import annotations

import ast
import functools
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "src" / "readscale"

RANKS = ("core", "shared", "drivers", "integrations", "tools", "cli")
LIBRARY = RANKS[: RANKS.index("tools")]

# The rank of every module, by module or package name: the longest entry that names the
# module or a package holding it wins (the root ``readscale`` names only its __init__).
# When a file moves, move its line; a new top-level module needs one.
TABLE: dict[str, str] = {
    # core: every decision, pure; and the one error root every layer raises.
    "readscale._core": "core",
    "readscale.errors": "core",
    # shared: the parts drivers are built from, which hold no policy of their own.
    "readscale._shared": "shared",  # twins (locks, single-flight, tasks, TCP), context variables, counters
    "readscale.codecs": "shared",
    "readscale.l1": "shared",  # MemoryStore, the L1 tier
    "readscale.metrics": "shared",
    "readscale.settings": "shared",
    # drivers: written async, generated sync.
    "readscale._async": "drivers",
    "readscale._sync": "drivers",
    # integrations: the public faces (re-exporting drivers under one documented path)
    # and the framework adapters at the edge.
    "readscale": "integrations",
    "readscale.backends": "integrations",
    "readscale.cache": "integrations",
    "readscale.cdc": "integrations",
    "readscale.consistency": "integrations",
    "readscale.writebehind": "integrations",
    "readscale.http": "integrations",
    "readscale.replicas": "integrations",
    "readscale.starlette": "integrations",
    "readscale.fastapi": "integrations",
    "readscale.django": "integrations",
    "readscale.flask": "integrations",
    "readscale.sqlalchemy": "integrations",
    "readscale.tracing": "integrations",
    "readscale._build": "integrations",  # which build runs (pure or compiled): names modules of every rank
    # tools: what the project runs around the library; never imported by it.
    "readscale.stack": "tools",
    "readscale.bench": "tools",
    "readscale.demo": "tools",
    "readscale.report": "tools",
    "readscale.testing": "tools",
    # cli: the command line. Nothing else imports it.
    "readscale.cli": "cli",
    "readscale.__main__": "cli",  # python -m readscale: the command line
}
TOOLS = tuple(name for name, rank in TABLE.items() if rank == "tools" and name.count(".") == 1)

# The modules users copy (rule 8): they import the library by its documented paths only.
REFERENCE_SERVICE = ("readscale.demo.app", "readscale.demo.shop")

# (importing module, imported module): why it is allowed for now, and what removes it.
# Empty this list; never add to it to silence a new violation (fix the import instead).
ALLOWED: dict[tuple[str, str], str] = {}

CORE_FORBIDDEN = {
    "asyncio", "anyio", "concurrent", "multiprocessing", "os", "random", "secrets", "select",
    "selectors", "signal", "socket", "ssl", "subprocess", "threading", "time", "uuid",
    "http", "urllib.request", "shutil", "tempfile", "io", "logging", "contextvars",
    "redis", "psycopg", "psycopg_pool", "psycopg2", "httpx", "hishel", "starlette", "fastapi",
    "django", "flask", "sqlalchemy", "prometheus_client", "typer", "rich", "uvicorn", "pytest",
}  # fmt: skip
CLOCK_CALLS = {"now", "utcnow", "today", "time", "time_ns", "monotonic", "monotonic_ns", "perf_counter"}
IMPORT_CALLS = {"import_module", "__import__"}
TARGET = re.compile(r"readscale(\.\w+)+:\w+(\.\w+)*")
MODULE_NAME = re.compile(r"readscale(\.\w+)+")


class Import(NamedTuple):
    line: int
    module: str
    how: str = ""  # "" for an import statement, else how a lazy import names it


def module_name(path: Path, pkg: Path) -> str:
    parts = list(path.relative_to(pkg.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules_of(pkg: Path) -> dict[str, Path]:
    return {module_name(path, pkg): path for path in sorted(pkg.rglob("*.py"))}


def rank_of(module: str, table: dict[str, str] = TABLE) -> str | None:
    """The rank of ``module`` by the longest table entry naming it or a package above it."""
    best: str | None = None
    for name in table:
        covers = module == name or (name != "readscale" and module.startswith(name + "."))
        if covers and (best is None or len(name) > len(best)):
            best = name
    return table[best] if best is not None else None


def resolve_from(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute module a ``from ... import`` names (relative ones resolved)."""
    if node.level == 0:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    if node.level > 1:
        base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def node_imports(node: ast.AST, module: str, is_package: bool, known: frozenset[str]) -> Iterator[Import]:
    """The modules one AST node imports (see the module docstring for what counts)."""
    if isinstance(node, ast.Import):
        for alias in node.names:
            yield Import(node.lineno, alias.name)
    elif isinstance(node, ast.ImportFrom):
        source = resolve_from(module, is_package, node)
        # `from pkg import mod` depends on pkg.mod, not on pkg's __init__ alone.
        submodules = [f"{source}.{a.name}" for a in node.names if f"{source}.{a.name}" in known]
        if len(submodules) < len(node.names):
            yield Import(node.lineno, source)
        for sub in submodules:
            yield Import(node.lineno, sub)
    elif isinstance(node, ast.Call):
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
        if name in IMPORT_CALLS and node.args:
            arg = node.args[0]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str) and not arg.value.startswith("."):
                yield Import(node.lineno, arg.value, f"{name}()")
    elif isinstance(node, ast.Dict):
        for value in node.values:
            name = value.value if isinstance(value, ast.Constant) else None
            if isinstance(name, str) and MODULE_NAME.fullmatch(name) and name in known:
                yield Import(value.lineno, name, "a lazy-import table")
    elif isinstance(node, ast.Constant) and isinstance(node.value, str) and TARGET.fullmatch(node.value):
        target = node.value.split(":")[0]
        if target in known:
            yield Import(node.lineno, target, "an import target string")


def clock_calls(node: ast.AST) -> Iterator[tuple[int, str]]:
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in CLOCK_CALLS:
        yield node.lineno, node.func.attr


@functools.cache
def scan(text: str, module: str, is_package: bool, known: frozenset[str]) -> tuple[list[Import], list[tuple[int, str]]]:
    """The imports and clock calls of one module's source, in one walk. Cached by content:
    the planted-violation test checks many copies of the tree that differ in one file."""
    found: list[Import] = []
    clocks: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(text, module)):
        found.extend(node_imports(node, module, is_package, known))
        clocks.extend(clock_calls(node))
    return found, clocks


def forbidden(module: str, banned: set[str]) -> bool:
    return any(module == b or module.startswith(b + ".") for b in banned)


def in_readscale(module: str) -> bool:
    return module == "readscale" or module.startswith("readscale.")


def private(module: str, table: dict[str, str]) -> bool:
    """A library module users are not meant to import: a part of its name starts with ``_``."""
    library = rank_of(module, table) in LIBRARY
    return library and any(part.startswith("_") for part in module.split(".")[1:])


def flavour(module: str) -> str | None:
    for name in ("_async", "_sync"):
        if module == f"readscale.{name}" or module.startswith(f"readscale.{name}."):
            return name
    return None


def rank_problem(module: str, rank: str, target: str, target_rank: str) -> str | None:
    if RANKS.index(target_rank) <= RANKS.index(rank):
        return None
    if target_rank == "cli":
        return f"nothing outside the command line imports it, but {module} ({rank}) imports {target}"
    if target_rank == "tools" and rank in LIBRARY:
        return f"the library must not import the tools ({', '.join(TOOLS)}): {module} ({rank}) imports {target}"
    allowed = ", ".join(RANKS[: RANKS.index(rank) + 1])
    return f"{module} ({rank}) imports {target} ({target_rank}): {rank} may import only {allowed}"


def package_problem(module: str, rank: str, target: str, table: dict[str, str]) -> str | None:
    """Importing ``a.b.c`` runs ``a.b``'s ``__init__`` first: a package above the target
    (but not the root, nor a package the importer is in already) counts as imported."""
    parts = target.split(".")
    for i in range(2, len(parts)):
        package = ".".join(parts[:i])
        if module == package or module.startswith(package + "."):
            continue
        package_rank = rank_of(package, table)
        if package_rank is not None and RANKS.index(package_rank) > RANKS.index(rank):
            return (
                f"{module} ({rank}) imports {target}, which loads its package {package} ({package_rank}) "
                "first: move the module out of that package"
            )
    return None


def check(
    pkg: Path = PKG,
    table: dict[str, str] = TABLE,
    allowed: dict[tuple[str, str], str] = ALLOWED,
    seen_allowed: list[str] | None = None,
) -> list[str]:
    """Every layer problem of the package at ``pkg``, as ``path:line: message`` lines."""
    problems: list[str] = []
    found = modules_of(pkg)
    known = frozenset(found)
    used_allowances: set[tuple[str, str]] = set()
    for name in table:
        if not any(m == name or (name != "readscale" and m.startswith(name + ".")) for m in known):
            problems.append(
                f"scripts/check_layers.py: TABLE names {name}, which does not exist: move or remove its line"
            )
    for module, path in found.items():
        rel = path.relative_to(pkg.parent)
        rank = rank_of(module, table)
        if rank is None:
            problems.append(f"{rel}: {module} has no rank: give it a line in TABLE (scripts/check_layers.py)")
            continue
        found_imports, found_clocks = scan(path.read_text(), module, path.name == "__init__.py", known)
        for imp in found_imports:
            where = f"{rel}:{imp.line}: "
            how = f" (by {imp.how})" if imp.how else ""
            if rank == "core" and forbidden(imp.module, CORE_FORBIDDEN):
                problems.append(f"{where}_core must stay pure but imports {imp.module}{how}")
            if not in_readscale(imp.module):
                continue
            target_rank = rank_of(imp.module, table)
            message = None
            if target_rank is not None:
                message = rank_problem(module, rank, imp.module, target_rank)
            if message is None:
                message = package_problem(module, rank, imp.module, table)
            mine, theirs = flavour(module), flavour(imp.module)
            if message is None and mine and theirs and mine != theirs and target_rank == "drivers":
                message = f"{module} imports {imp.module}: a driver imports only its own flavour ({mine})"
            if message is None and module in REFERENCE_SERVICE and private(imp.module, table):
                message = f"{module} (the reference service) imports the private {imp.module}: use a documented path"
            if message is None:
                continue
            if (module, imp.module) in allowed:
                used_allowances.add((module, imp.module))
                if seen_allowed is not None:
                    seen_allowed.append(f"{where}allowed: {message}{how} [{allowed[module, imp.module]}]")
                continue
            problems.append(f"{where}{message}{how}")
        if rank == "core":
            for line, name in found_clocks:
                problems.append(f"{rel}:{line}: _core reads the clock ({name}()); take `now` as an argument")
    for stale in sorted(set(allowed) - used_allowances):
        problems.append(
            f"scripts/check_layers.py: ALLOWED lists {stale[0]} -> {stale[1]}, which is no violation any more: "
            "remove its entry"
        )
    return problems


def main(argv: list[str]) -> int:
    if "--ranks" in argv:
        for module in modules_of(PKG):
            print(f"{rank_of(module) or '(none)':<13} {module}")
        return 0
    seen: list[str] = []
    problems = check(seen_allowed=seen)
    if "--verbose" in argv:
        for line in seen:
            print(line)
    for line in problems:
        print(line)
    allowed = f", {len(seen)} allowed (ALLOWED)" if seen else ""
    if problems:
        print(f"layer check: {len(problems)} problem(s){allowed}")
        return 1
    print(f"layer check: ok{allowed}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
