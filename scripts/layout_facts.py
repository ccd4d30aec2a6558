#!/usr/bin/env python
"""Measure the facts of the package's layout that docs/architecture.md plans against.

    python scripts/layout_facts.py            # a short text report
    python scripts/layout_facts.py --json     # the same as one JSON object
    python scripts/layout_facts.py --plan docs/architecture.md
        # every module and test file the plan's old -> new tables miss, or name but which
        # do not exist (exit 1 if any)

What it measures (run it before and after the layout move, and compare):

- hand-written modules over ``--limit`` lines (400), largest first (``_sync`` is generated
  and left out);
- the cache class: its lines and methods over the files it is spread on, the attributes
  each mixin declares without setting, and the counter increments in its logic;
- the public surface: the size of ``readscale.__all__``, and every public object importable
  from more than one public module (a public module: no path component starts with ``_``);
- the shape of the tree: top-level modules, flat ``_core`` modules, files per feature.

Importing the public modules needs the extras (``make setup`` installs them all).
"""

from __future__ import annotations

import ast
import importlib
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "src" / "readscale"
sys.path.insert(0, str(ROOT / "scripts"))

import check_layers  # noqa: E402  (the rank table says which modules are the library)

CACHE_FILES = [
    "_async/cache/cache.py",
    "_async/cache/l2.py",
    "_async/cache/entries.py",
    "_async/cache/versions.py",
    "_async/cache/coherence.py",
    "_async/cache/filler.py",
    "_async/cache/loads.py",
    "_async/cache/fill_store.py",
    "_async/cache/refresh.py",
    "_async/cache/batch.py",
    "_async/cache/parts.py",
    "_async/cache/checks.py",
    "_async/cache/reads.py",
    "_async/cache/writes.py",
]
#: A feature and the words that name its files (path components or file stems).
FEATURES = {
    "write-behind": ("writebehind", "wbqueue", "flusher", "pgwriter"),
    "replicas": ("replica", "replicas", "routing", "causal", "_causal", "lsn", "_replica_state", "fills"),
    "cache": ("cache", "_cache", "cached", "freshness", "entry", "keys", "policy", "memory", "bus", "breaker"),
    "http": ("http", "purge", "static"),
}


def lines(path: Path) -> int:
    return len(path.read_text().splitlines())


def hand_written() -> dict[str, int]:
    return {
        str(p.relative_to(PKG)): lines(p) for p in sorted(PKG.rglob("*.py")) if "_sync" not in p.relative_to(PKG).parts
    }


def targets(node: ast.AST) -> list[ast.expr]:
    if isinstance(node, ast.Assign):
        return node.targets
    if isinstance(node, ast.AnnAssign | ast.AugAssign):
        return [node.target]
    return []


def is_self_attribute(node: ast.expr) -> bool:
    return isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self"


def names_feature(path: Path, word: str) -> bool:
    stem = path.stem
    return word in path.parts[:-1] or stem == word or stem.startswith(word + "_") or stem.endswith("_" + word)


def cache_facts() -> dict[str, Any]:
    total_lines = methods = increments = 0
    declared_elsewhere: dict[str, list[str]] = {}
    for rel in CACHE_FILES:
        path = PKG / rel
        tree = ast.parse(path.read_text())
        total_lines += lines(path)
        for cls in (n for n in tree.body if isinstance(n, ast.ClassDef)):
            methods += sum(isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) for n in cls.body)
            annotated = [
                n.target.id for n in cls.body if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)
            ]
            assigned = {t.attr for n in ast.walk(cls) for t in targets(n) if is_self_attribute(t)}
            unset = [name for name in annotated if name not in assigned]
            if unset:
                declared_elsewhere[f"{rel}:{cls.name}"] = unset
        for node in ast.walk(tree):
            if isinstance(node, ast.AugAssign) and "stats" in ast.unparse(node.target):
                increments += 1
    return {
        "files": CACHE_FILES,
        "lines": total_lines,
        "methods": methods,
        "stats_increments": increments,
        "declared_not_set": declared_elsewhere,
    }


def public_modules() -> list[str]:
    out = []
    for name, path in check_layers.modules_of(PKG).items():
        del path
        rank = check_layers.rank_of(name)
        if rank not in check_layers.LIBRARY:
            continue
        if any(part.startswith("_") for part in name.split(".")):
            continue
        out.append(name)
    return out


def public_names(module: Any) -> list[str]:
    """What a module offers: its ``__all__``, or else the public names it defines itself
    (a name it merely imports is not a path it documents)."""
    names = getattr(module, "__all__", None)
    if names is not None:
        return list(names)
    return [
        n
        for n, v in vars(module).items()
        if not n.startswith("_") and getattr(v, "__module__", None) == module.__name__
    ]


def is_readscale_object(value: Any) -> bool:
    home = getattr(value, "__module__", None) or type(value).__module__
    return isinstance(home, str) and home.startswith("readscale")


def import_paths() -> dict[str, Any]:
    paths: dict[int, list[str]] = defaultdict(list)
    objects: dict[int, Any] = {}
    failed: dict[str, str] = {}
    for name in public_modules():
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            failed[name] = str(exc)
            continue
        for attr in public_names(module):
            try:
                value = getattr(module, attr)
            except (AttributeError, ImportError):
                continue
            if isinstance(value, type(sys)) or not is_readscale_object(value):
                continue  # submodules, typing helpers, plain constants
            objects[id(value)] = value
            paths[id(value)].append(f"{name}.{attr}")
    several = {
        min(p, key=len): sorted(p, key=len) for key, p in paths.items() if len(set(p)) > 1 and objects[key] is not None
    }
    histogram: dict[int, int] = defaultdict(int)
    for p in several.values():
        histogram[len(p)] += 1
    import readscale

    return {
        "readscale_all": len(readscale.__all__),
        "public_modules": len(public_modules()),
        "public_objects": len(paths),
        "objects_on_several_paths": len(several),
        "paths_per_object": dict(sorted(histogram.items())),
        "several": dict(sorted(several.items())),
        "not_importable": failed,
    }


def tree_facts() -> dict[str, Any]:
    top = sorted(p.stem for p in PKG.glob("*.py") if p.stem != "__init__")
    core_flat = sorted(p.stem for p in (PKG / "_core").glob("*.py") if p.stem != "__init__")
    files = [p.relative_to(PKG) for p in PKG.rglob("*.py") if "_sync" not in p.relative_to(PKG).parts]
    per_feature = {}
    for feature, words in FEATURES.items():
        hits = sorted(str(f) for f in files if any(names_feature(f, w) for w in words))
        per_feature[feature] = {"files": len(hits), "folders": len({str(Path(h).parent) for h in hits}), "paths": hits}
    return {"top_level_modules": top, "core_flat_modules": core_flat, "features": per_feature}


def plan_gaps(plan: Path) -> list[str]:
    """What the old -> new tables of ``plan`` miss, or name but which do not exist.

    The tables are those headed ``| old | new``; a row starts with a backticked old path,
    relative to ``src/readscale`` for the library, ``tests/...`` for tests. Generated
    ``_sync`` folders are not listed. While the move runs, a row counts as done when its
    old path is gone and one of its new paths exists; a new path of a row, and the
    ``__init__.py`` of a folder holding one, is in the plan, as are the paths of a row
    whose old cell is ``(new)``."""
    listed: dict[str, int] = defaultdict(int)
    targets: dict[str, list[str]] = defaultdict(list)
    new_files: list[str] = []  # rows "| (new) | `path` |": files the move adds
    in_table = False
    for line in plan.read_text().splitlines():
        if line.startswith("| old | new"):
            in_table = True
        elif not line.startswith("|"):
            in_table = False
        elif in_table and line.startswith("| `"):
            cells = line.split("|")
            old = cells[1].split("`")[1]
            listed[old] += 1
            targets[old] += cells[2].split("`")[1::2]
        elif in_table and line.startswith("| (new) |"):
            new_files += line.split("|")[2].split("`")[1::2]
    tests = ROOT / "tests"
    present = {
        str(p.relative_to(PKG))
        for p in PKG.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and "_sync" not in p.relative_to(PKG).parts
    } | {str(p.relative_to(ROOT)) for p in tests.rglob("*.py") if "_sync" not in p.relative_to(tests).parts}
    planned = set(listed) | {new for news in targets.values() for new in news} | set(new_files)
    folders = {str(Path(new).parent) for new in planned}
    planned |= {f"{folder}/__init__.py" for folder in folders if folder != "."}
    gaps = [f"not in the plan: {path}" for path in sorted(present - planned)]
    gaps += [
        f"in the plan, not in the tree: {path}"
        for path in sorted(set(listed) - present)
        if not any(new in present for new in targets[path])
    ]
    gaps += [f"listed {n} times: {path}" for path, n in sorted(listed.items()) if n > 1]
    return gaps


def main(argv: list[str]) -> int:
    if "--plan" in argv:
        gaps = plan_gaps(Path(argv[argv.index("--plan") + 1]))
        print("\n".join(gaps) or "the plan lists every module and test file")
        return 1 if gaps else 0
    limit = 400
    if "--limit" in argv:
        limit = int(argv[argv.index("--limit") + 1])
    sizes = hand_written()
    facts = {
        "hand_written_modules": len(sizes),
        "over_limit": {k: v for k, v in sorted(sizes.items(), key=lambda kv: -kv[1]) if v > limit},
        "cache": cache_facts(),
        "surface": import_paths(),
        "tree": tree_facts(),
    }
    if "--json" in argv:
        print(json.dumps(facts, indent=2))
        return 0
    print(f"hand-written modules: {facts['hand_written_modules']}; over {limit} lines: {len(facts['over_limit'])}")
    for rel, n in facts["over_limit"].items():
        print(f"  {n:5d}  {rel}")
    cache = facts["cache"]
    print(
        f"the cache: {cache['lines']} lines, {cache['methods']} methods over {len(cache['files'])} files, "
        f"{cache['stats_increments']} counter increments"
    )
    for cls, names in cache["declared_not_set"].items():
        print(f"  {cls} declares, never sets: {', '.join(names)}")
    surface = facts["surface"]
    print(
        f"readscale.__all__: {surface['readscale_all']} names; {surface['public_objects']} public objects in "
        f"{surface['public_modules']} public modules; {surface['objects_on_several_paths']} importable from several "
        f"paths (paths: objects) {surface['paths_per_object']}"
    )
    for shortest, paths in surface["several"].items():
        print(f"  {shortest}: {', '.join(paths[1:])}")
    for name, error in surface["not_importable"].items():
        print(f"  not importable here: {name} ({error})")
    tree = facts["tree"]
    print(f"top-level modules: {len(tree['top_level_modules'])}; flat _core modules: {len(tree['core_flat_modules'])}")
    for feature, found in tree["features"].items():
        print(f"  {feature}: {found['files']} files in {found['folders']} folders")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
