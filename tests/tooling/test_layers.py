"""The layer check catches every kind of violation it claims to.

Each case plants one violation in a copy of ``src/readscale`` (the real tree, so the
table's ranks are the real ones) and expects ``scripts/check_layers.py`` to report it,
and only it. Every rule of the check's docstring has a case, in every form an import
takes: absolute, relative, ``from pkg import module``, inside a function, under
``TYPE_CHECKING``, and lazy by name.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def load_checker() -> ModuleType:
    spec = importlib.util.spec_from_file_location("check_layers", ROOT / "scripts" / "check_layers.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


checker = load_checker()


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One copy of the package, checked clean once; each case copies it again."""
    copy = tmp_path_factory.mktemp("pristine") / "readscale"
    shutil.copytree(ROOT / "src" / "readscale", copy, ignore=shutil.ignore_patterns("__pycache__"))
    assert checker.check(copy) == []
    return copy


@pytest.fixture
def pkg(pristine: Path, tmp_path: Path) -> Path:
    """A copy of the pristine tree made of hard links: cheap; :func:`plant` replaces a
    file instead of writing through its link."""
    copy = tmp_path / "readscale"
    shutil.copytree(pristine, copy, copy_function=os.link)
    return copy


def plant(pkg: Path, rel: str, code: str) -> None:
    path = pkg / rel
    before = path.read_text() if path.exists() else ""
    path.unlink(missing_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(before + "\n" + code)


def test_the_package_keeps_its_layers() -> None:
    assert checker.check() == []


def test_the_command_runs_clean_and_lists_ranks() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "check_layers.py")], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stdout
    ranks = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "check_layers.py"), "--ranks"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\n")
    assert "core          readscale._core.replicas.routing" in ranks
    assert "tools         readscale.testing._async.backend_contract" in ranks
    assert not any(line.startswith("(none)") for line in ranks)


# (file to plant in, code appended to it, text the one reported problem contains)
CASES = {
    # rule 4: _core is pure
    "core imports I/O": ("_core/cache/freshness.py", "import os\n", "_core must stay pure but imports os"),
    "core imports a client in a function": (
        "_core/cache/keys.py",
        "def f():\n    from redis import Redis\n",
        "_core must stay pure but imports redis",
    ),
    "core imports a framework for typing": (
        "_core/http/policy.py",
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import starlette.requests\n",
        "_core must stay pure but imports starlette.requests",
    ),
    "core reads the wall clock": ("_core/cache/entry.py", "x = datetime.now()\n", "_core reads the clock (now())"),
    "core reads the monotonic clock": ("_core/replicas/routing.py", "y = time.monotonic()\n", "_core reads the clock"),
    # rule 1: ranks point one way, absolute and relative
    "core imports shared, relative": (
        "_core/cache/keys.py",
        "from ...l1 import MemoryStore\n",
        "readscale._core.cache.keys (core) imports readscale.l1 (shared)",
    ),
    "core imports a driver, from-package": (
        "_core/sim/model.py",
        "from readscale._async import cache\n",
        "readscale._core.sim.model (core) imports readscale._async.cache (drivers)",
    ),
    "core imports shared, relative from a package __init__": (
        "_core/http/__init__.py",
        "from ...codecs import JsonCodec\n",
        "readscale._core.http (core) imports readscale.codecs (shared)",
    ),
    "shared imports a driver, relative": (
        "l1.py",
        "from ._async.cache import AsyncCache\n",
        "readscale.l1 (shared) imports readscale._async.cache (drivers): shared may import only core, shared",
    ),
    "shared imports a face": (
        "codecs.py",
        "def f():\n    import readscale.backends\n",
        "readscale.codecs (shared) imports readscale.backends (integrations)",
    ),
    "driver imports an integration, relative": (
        "_async/cache/cache.py",
        "from ...starlette import _http\n",
        "readscale._async.cache.cache (drivers) imports readscale.starlette._http (integrations)",
    ),
    "driver imports the package root": (
        "_async/cache/bus.py",
        "from readscale import AsyncCache\n",
        "readscale._async.cache.bus (drivers) imports readscale (integrations)",
    ),
    "driver imports a face lazily": (
        "_async/cdc/worker.py",
        "import importlib\nm = importlib.import_module('readscale.writebehind')\n",
        "imports readscale.writebehind (integrations): drivers may import only core, shared, drivers "
        "(by import_module())",
    ),
    "generated driver imports a face": (
        "_sync/writebehind/flusher.py",
        "from readscale.replicas import causal_context\n",
        "readscale._sync.writebehind.flusher (drivers) imports readscale.replicas (integrations)",
    ),
    # rule 5: one flavour
    "async driver imports the sync one": (
        "_async/cache/cache.py",
        "from readscale._sync.cache.bus import InvalidationBus\n",
        "readscale._async.cache.cache imports readscale._sync.cache.bus: "
        "a driver imports only its own flavour (_async)",
    ),
    "sync driver imports the async one, relative": (
        "_sync/backends/redis.py",
        "from ..._async.cache.bus import AsyncInvalidationBus\n",
        "readscale._sync.backends.redis imports readscale._async.cache.bus: "
        "a driver imports only its own flavour (_sync)",
    ),
    # rule 2: the library never imports the tools, in every form
    "face imports the stack": ("backends.py", "import readscale.stack\n", "the library must not import the tools"),
    "integration imports testing, relative": (
        "starlette/_http.py",
        "from ..testing import clock\n",
        "readscale.starlette._http (integrations) imports readscale.testing.clock",
    ),
    "driver imports bench in a function": (
        "_async/purge/base.py",
        "def f():\n    from readscale.bench.harness import Rounds\n",
        "readscale._async.purge.base (drivers) imports readscale.bench.harness",
    ),
    "shared imports demo for typing": (
        "metrics.py",
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from readscale.demo.funnel import Funnel\n",
        "readscale.metrics (shared) imports readscale.demo.funnel",
    ),
    "core imports report": (
        "_core/sim/solve.py",
        "from readscale.report import svg\n",
        "readscale._core.sim.solve (core) imports readscale.report.svg",
    ),
    "library imports the contract suite": (
        "_async/backends/memory.py",
        "from readscale.testing._async.backend_contract import AsyncBackendContract\n",
        "readscale._async.backends.memory (drivers) imports readscale.testing._async.backend_contract",
    ),
    "library imports a tool by a lazy table": (
        "replicas/__init__.py",
        "_MORE = {'Stack': 'readscale.stack._stack'}\n",
        "imports readscale.stack._stack (by a lazy-import table)",
    ),
    "library imports a tool by __import__": (
        "writebehind.py",
        "def f():\n    return __import__('readscale.testing.plugin')\n",
        "imports readscale.testing.plugin (by __import__())",
    ),
    "library names a tool as an import target": (
        "flask/_wsgi.py",
        "APP = 'readscale.demo.app:app_from_env'\n",
        "imports readscale.demo.app (by an import target string)",
    ),
    # rule 3: nothing imports the command line
    "integration imports the cli": (
        "django/_replicas.py",
        "from readscale.cli import main\n",
        "nothing outside the command line imports it, but readscale.django._replicas (integrations) "
        "imports readscale.cli",
    ),
    "tool imports the cli, relative": (
        "stack/_proc.py",
        "from ..cli import _output\n",
        "nothing outside the command line imports it, but readscale.stack._proc (tools) imports readscale.cli._output",
    ),
    # rule 8: the reference service uses documented paths
    "the reference service imports a private module": (
        "demo/app.py",
        "from readscale._async.cache.cache import AsyncCache\n",
        "readscale.demo.app (the reference service) imports the private readscale._async.cache.cache",
    ),
    "the reference service imports a private helper lazily": (
        "demo/app.py",
        "def f():\n    from readscale.http._context import POLICY_ATTR\n",
        "imports the private readscale.http._context: use a documented path",
    ),
    # rule 6: every module has a rank
    "a new top-level module": ("newthing.py", "X = 1\n", "readscale.newthing has no rank: give it a line in TABLE"),
    "a new top-level package": ("newpkg/__init__.py", "", "readscale.newpkg has no rank"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_each_planted_violation_is_caught(pkg: Path, case: str) -> None:
    rel, code, expected = CASES[case]
    plant(pkg, rel, code)
    problems = checker.check(pkg)
    assert len(problems) == 1, problems
    assert expected in problems[0], problems[0]
    assert problems[0].startswith(f"readscale/{rel}"), problems[0]


def test_every_tool_is_forbidden_to_the_library(pkg: Path) -> None:
    for tool in ("stack", "bench", "demo", "report", "testing"):
        plant(pkg, "settings.py", f"from readscale import {tool}\n")
    problems = checker.check(pkg)
    assert [p.rsplit(" imports ", 1)[1] for p in problems] == [
        f"readscale.{t}" for t in ("stack", "bench", "demo", "report", "testing")
    ]
    assert all("the library must not import the tools" in p for p in problems)


def test_a_table_line_naming_nothing_is_reported(pristine: Path) -> None:
    table = {**checker.TABLE, "readscale.gone": "shared"}
    assert checker.check(pristine, table=table) == [
        "scripts/check_layers.py: TABLE names readscale.gone, which does not exist: move or remove its line"
    ]


def test_the_allow_list_only_shrinks(pkg: Path) -> None:
    plant(pkg, "codecs.py", "import readscale.stack\n")
    allowed = {("readscale.codecs", "readscale.stack"): "the layout move ends it"}
    seen: list[str] = []
    assert checker.check(pkg, allowed=allowed, seen_allowed=seen) == []
    assert len(seen) == 1
    assert "allowed: the library must not import the tools" in seen[0]
    assert "[the layout move ends it]" in seen[0]
    # Once the import is gone, the entry must go too.
    source = (pkg / "codecs.py").read_text().replace("import readscale.stack\n", "")
    (pkg / "codecs.py").unlink()
    (pkg / "codecs.py").write_text(source)
    problems = checker.check(pkg, allowed=allowed)
    assert problems == [
        "scripts/check_layers.py: ALLOWED lists readscale.codecs -> readscale.stack, which is no violation any "
        "more: remove its entry"
    ]


def test_allowed_imports_are_not_flagged(pkg: Path) -> None:
    # Downward and same-rank imports, in the forms the check resolves, are fine.
    plant(pkg, "_async/cache/cache.py", "from ...l1 import MemoryStore\nfrom . import bus\n")
    plant(pkg, "starlette/_http.py", "from . import _causal\nfrom ..http import _engine\nfrom .._async import purge\n")
    plant(pkg, "bench/cache.py", "from ..demo import funnel\nfrom ..http import _static\n")
    plant(pkg, "cli/demo.py", "from ..stack import Stack\n")
    plant(pkg, "_async/cache/bus.py", "LOGGER = 'readscale.bus'\nKEY = 'readscale:bus'\n")  # names, not imports
    assert checker.check(pkg) == []


def test_ranks_resolve_by_longest_entry() -> None:
    assert checker.rank_of("readscale") == "integrations"
    assert checker.rank_of("readscale._async.cache.cache") == "drivers"
    assert checker.rank_of("readscale.testing._async.backend_contract") == "tools"
    assert checker.rank_of("readscale._core.http.etag") == "core"
    assert checker.rank_of("readscale.unknown") is None


def test_a_package_above_the_target_counts_as_imported(pkg: Path) -> None:
    # A shared module inside a face's package: importing it runs the face's __init__.
    plant(pkg, "http/_counters.py", "COUNT = 0\n")
    plant(pkg, "_async/cache/cache.py", "from readscale.http._counters import COUNT\n")
    table = {**checker.TABLE, "readscale.http._counters": "shared"}
    problems = checker.check(pkg, table=table)
    assert problems == [
        "readscale/_async/cache/cache.py:"
        f"{len((pkg / '_async/cache/cache.py').read_text().splitlines())}: "
        "readscale._async.cache.cache (drivers) imports readscale.http._counters, which loads its package "
        "readscale.http (integrations) first: move the module out of that package"
    ]
    # Its own package is loaded already: a module of that package may import it.
    (pkg / "_async/cache/cache.py").unlink()
    shutil.copy(ROOT / "src/readscale/_async/cache/cache.py", pkg / "_async/cache/cache.py")
    plant(pkg, "http/_engine.py", "from readscale.http._counters import COUNT\n")
    assert checker.check(pkg, table=table) == []
