"""The tests mirror the source (docs/architecture.md §10), so the test of a feature is one hop
from its module: a test file added outside that layout fails here, before it is landed.

The layout: ``tests/<layer>/<feature>/`` where ``<feature>`` is a folder of
``src/readscale/<layer>/`` (``_core``, ``_async``, generated ``_sync``, ``_shared``); a face's
or a tool's folder (``tests/cache/``, ``tests/django/``, ``tests/stack/``, ...); and
``tests/test_<module>.py`` for the single-module faces. A path §10 moved from stays gone.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "tests"
PKG = ROOT / "src" / "readscale"

LAYERS = ("_core", "_shared", "_async", "_sync")
# The faces (what a user does), the tools, and what runs across features (§10).
FOLDERS = {
    *("cache", "replicas", "writebehind", "cdc", "http", "starlette", "fastapi", "flask", "django", "sqlalchemy"),
    *("stack", "bench", "demo", "report", "cli"),
    *("fuzz", "chaos", "browser", "consistency", "tooling", "docs"),
}
# A test file at the top of tests/ names a module of the package, or the package as a whole.
WHOLE_PACKAGE = {"public_api", "extras"}
# A test file at the top of a driver layer names a module of that layer (tests/_async/
# test_consistency.py: _async/consistency.py), or one of these: the sync/async twins of
# _shared/primitives, tested through each flavour.
FLAT_DRIVER_TESTS = {"test_primitives.py"}


def python_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.py") if "__pycache__" not in p.parts)


def misplaced(root: Path, pkg: Path) -> list[str]:
    """The Python files under ``root`` (a tests/ folder) outside the mirrored layout of ``pkg``."""
    found = []
    for path in python_files(root):
        rel = path.relative_to(root)
        parts = rel.parts
        if len(parts) == 1:
            name = rel.stem.removeprefix("test_")
            module_exists = (pkg / f"{name}.py").exists() or (pkg / name).is_dir()
            if rel.name.startswith("test_") and not (module_exists or name in WHOLE_PACKAGE):
                found.append(f"tests/{rel}: a test at the top of tests/ names a module of readscale")
            continue
        top = parts[0]
        if top in LAYERS:
            layer = pkg / top
            if len(parts) == 2:
                if top == "_core" and rel.name.startswith("test_"):
                    found.append(f"tests/{rel}: the pure rules' tests go in tests/_core/<feature>/")
                elif top in ("_async", "_sync") and rel.name.startswith("test_"):
                    module = layer / (rel.stem.removeprefix("test_") + ".py")
                    if not module.exists() and rel.name not in FLAT_DRIVER_TESTS:
                        found.append(f"tests/{rel}: a driver's test goes in tests/{top}/<feature>/")
            elif not (layer / parts[1]).is_dir():
                found.append(f"tests/{rel}: {parts[1]}/ is not a folder of src/readscale/{top}/")
        elif top not in FOLDERS:
            found.append(f"tests/{rel}: tests/{top}/ is not a folder of the layout (docs/architecture.md §10)")
    return found


def moved_from(plan: Path) -> list[str]:
    """The old paths of §10's table that moved elsewhere."""
    section = plan.read_text().split("## 10. Tests mirror the source", 1)[1].split("\n## 11.", 1)[0]
    gone = []
    for old, new in re.findall(r"^\| `([^`]+)` \| (.+?) \|$", section, re.MULTILINE):
        if old not in re.findall(r"`([^`]+)`", new):
            gone.append(old)
    return gone


def test_every_test_file_sits_in_the_mirrored_layout() -> None:
    assert misplaced(TESTS, PKG) == []


def test_no_test_file_is_back_where_section_10_moved_it_from() -> None:
    gone = moved_from(ROOT / "docs" / "architecture.md")
    assert len(gone) > 100, "the table of §10 was not found"
    assert [old for old in gone if (ROOT / old).exists()] == []


def test_the_check_names_what_sits_outside(tmp_path: Path) -> None:
    """Planted files: each misplacement is caught, and the files of the layout are not."""
    pkg = tmp_path / "src"
    for folder in ("_core/cache", "_async/cache", "_shared/cache"):
        (pkg / folder).mkdir(parents=True)
    (pkg / "_async" / "consistency.py").write_text("")
    (pkg / "errors.py").write_text("")
    tests = tmp_path / "tests"
    good = [
        "test_errors.py", "test_public_api.py", "conftest.py", "helpers.py",
        "_core/cache/test_fill.py", "_async/cache/test_cache.py", "_async/test_consistency.py",
        "_async/test_primitives.py", "_async/conftest.py", "_shared/test_semaphore.py",
        "_shared/cache/test_recorders.py", "django/replicaapp/models.py", "cache/test_stampede.py",
    ]  # fmt: skip
    bad = [
        "test_cache_things.py", "_core/test_policy.py", "_core/nowhere/test_x.py",
        "_async/test_cache.py", "_async/nowhere/test_x.py", "_shared/nowhere/test_x.py",
        "unit/test_entry.py", "invalidation/helper.py",
    ]  # fmt: skip
    for rel in good + bad:
        (tests / rel).parent.mkdir(parents=True, exist_ok=True)
        (tests / rel).write_text("")
    found = misplaced(tests, pkg)
    assert sorted(f.split(":")[0] for f in found) == sorted(f"tests/{rel}" for rel in bad)
