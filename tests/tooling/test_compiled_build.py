"""The optional compiled build (``hatch_build.py``, ``readscale._build``).

The main test compiles the modules of ``COMPILED_MODULES`` with mypyc, the way a wheel
build does (``compile_package``, in a scratch copy of the package), checks that a fresh
interpreter really loads each of them from a C extension, and runs their unit tests
against that copy: a build that silently fell back to pure Python fails here. It is
skipped only where no C compiler exists; it takes a minute or two (mypyc and gcc).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import readscale
from readscale._build import COMPILED_MODULES, build_info, compiled_modules

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "readscale"


def _load_hook() -> ModuleType:
    spec = importlib.util.spec_from_file_location("readscale_hatch_build", ROOT / "hatch_build.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


hook = _load_hook()


def _tests_of(module: str) -> str:
    """The tests of a compiled module, by the layout tests/ mirrors (test_layout.py):
    ``readscale._core.<feature>.x`` -> ``tests/_core/<feature>``, ``readscale.x`` ->
    ``tests/test_x.py``."""
    parts = module.split(".")[1:]
    path = Path("tests", *parts[:-1]) if len(parts) > 1 else Path("tests", f"test_{parts[0]}.py")
    assert (ROOT / path).exists(), f"{module} is compiled but has no tests at {path}"
    return path.as_posix()


def test_the_list_is_read_from_the_package_without_importing_it() -> None:
    assert hook.compiled_module_list() == list(COMPILED_MODULES)
    assert list(COMPILED_MODULES) == sorted(COMPILED_MODULES)


def test_the_source_tree_holds_no_compiled_module() -> None:
    # An extension beside a .py shadows it: edits to the .py would silently not run.
    found = [p for p in PACKAGE.rglob("*") if p.name.endswith((".so", ".pyd"))]
    assert not found, f"remove the compiled modules from src/ (they shadow the sources): {found}"


def test_the_tests_run_the_pure_build_and_say_so() -> None:
    assert compiled_modules() == ()
    assert build_info() == "pure"
    assert readscale.build_info is build_info


@pytest.mark.parametrize(
    ("value", "mode"),
    [
        (None, "auto"),
        ("", "auto"),
        ("auto", "auto"),
        ("0", "pure"),
        ("pure", "pure"),
        ("1", "require"),
        ("YES", "require"),
    ],
)
def test_compile_mode(value: str | None, mode: str) -> None:
    assert hook.compile_mode({} if value is None else {hook.ENV: value}) == mode


def test_an_unknown_compile_mode_is_an_error() -> None:
    with pytest.raises(ValueError, match="READSCALE_COMPILE"):
        hook.compile_mode({hook.ENV: "maybe"})


class _Said:
    def __init__(self) -> None:
        self.lines: list[tuple[str, bool]] = []

    def __call__(self, message: str, warning: bool) -> None:
        self.lines.append((message, warning))


def _build_data() -> dict[str, Any]:
    return {"pure_python": True, "infer_tag": False, "force_include": {}}


def _add(version: str = "standard", target: str = "wheel") -> tuple[dict[str, Any], _Said, Any]:
    data = _build_data()
    said = _Said()
    scratch = hook.add_compiled_modules(ROOT, target, version, data, said)
    return data, said, scratch


def _never(*args: object, **kwargs: object) -> None:
    raise AssertionError("must not compile")


@pytest.mark.parametrize(("version", "target"), [("editable", "wheel"), ("standard", "sdist")])
def test_editable_installs_and_the_sdist_are_never_compiled(
    monkeypatch: pytest.MonkeyPatch, version: str, target: str
) -> None:
    monkeypatch.setenv(hook.ENV, "1")
    monkeypatch.setattr(hook, "compile_package", _never)
    data, said, scratch = _add(version, target)
    assert data == _build_data() and scratch is None and not said.lines


def test_compile_0_builds_the_pure_wheel_without_trying(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(hook.ENV, "0")
    monkeypatch.setattr(hook, "compile_package", _never)
    data, said, _ = _add()
    assert data == _build_data()
    assert said.lines == [("readscale: pure-Python wheel (READSCALE_COMPILE=0)", False)]


@pytest.mark.parametrize("problem", ["toolchain", "compile"])
def test_without_a_toolchain_or_when_mypyc_fails_the_wheel_is_pure_and_says_why(
    monkeypatch: pytest.MonkeyPatch, problem: str
) -> None:
    monkeypatch.delenv(hook.ENV, raising=False)
    if problem == "toolchain":
        monkeypatch.setattr(hook, "missing_toolchain", lambda: "no C compiler (cc not found)")
        monkeypatch.setattr(hook, "compile_package", _never)
    else:
        monkeypatch.setattr(hook, "missing_toolchain", lambda: None)

        def fail(*args: object, **kwargs: object) -> None:
            raise hook.CompileError("mypyc failed (exit 1): boom")

        monkeypatch.setattr(hook, "compile_package", fail)
    data, said, scratch = _add()
    assert data == _build_data() and scratch is None
    [(message, warning)] = said.lines
    assert warning and message.startswith("readscale: building the pure-Python wheel")
    assert ("no C compiler" if problem == "toolchain" else "boom") in message
    # READSCALE_COMPILE=1: the same failure fails the build.
    monkeypatch.setenv(hook.ENV, "1")
    with pytest.raises(hook.CompileError, match="READSCALE_COMPILE=1"):
        _add()


def test_no_c_compiler_is_detected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hook.sysconfig, "get_config_var", lambda name: "no-such-cc-xyz -pthread")
    assert hook.missing_toolchain() == "no C compiler (no-such-cc-xyz not found)"


def test_without_a_c_compiler_an_auto_build_asks_for_nothing_more(monkeypatch: pytest.MonkeyPatch) -> None:
    """An install with no compiler (and perhaps no index to give mypy) builds pure: it
    must not fail resolving build dependencies it will not use (found by review)."""
    monkeypatch.setattr(hook.sysconfig, "get_config_var", lambda name: "no-such-cc-xyz")
    monkeypatch.delenv(hook.ENV, raising=False)
    assert hook.build_dependencies() == []
    monkeypatch.setenv(hook.ENV, "1")  # compile or fail: it asks, and fails later saying why
    assert hook.build_dependencies() == hook.BUILD_REQUIRES
    monkeypatch.setenv(hook.ENV, "0")
    assert hook.build_dependencies() == []


def _toolchain_or_skip() -> None:
    why = hook.missing_toolchain()
    if why is not None and why.startswith("no C compiler"):
        pytest.skip(f"the compiled build needs a C compiler: {why}")
    assert why is None, why  # mypy (with mypyc) and setuptools are dev dependencies


@pytest.fixture(scope="module")
def compiled_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    _toolchain_or_skip()
    scratch = tmp_path_factory.mktemp("mypyc")
    # -O1: the same code at a fraction of gcc's time (a wheel is built at -O3).
    built: dict[str, Path] = hook.compile_package(PACKAGE, hook.compiled_module_list(), scratch, opt_level="1")
    assert f"readscale/{hook.STAMP}" in built
    # One extension per module, and the group's runtime library (readscale._mypyc__mypyc).
    assert len(built) == len(COMPILED_MODULES) + 2, sorted(built)
    return scratch / "src"


def _run(tree: Path, code: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run(
        [sys.executable, "-c", code, *args], cwd=ROOT, env=env, capture_output=True, text=True, check=False
    )


@pytest.mark.slow
def test_the_compiled_build_loads_extensions_and_says_so(compiled_tree: Path) -> None:
    proc = _run(
        compiled_tree,
        "import readscale, readscale._build as b; print(readscale.__file__); print(b.compiled_modules()); "
        "print(readscale.build_info())",
    )
    assert proc.returncode == 0, proc.stderr
    where, compiled, info = proc.stdout.splitlines()
    assert where == str(compiled_tree / "readscale" / "__init__.py")
    assert compiled == repr(COMPILED_MODULES)
    assert info.startswith("compiled (mypyc ") and "; pure:" not in info, info
    # The command line says it too.
    proc = _run(compiled_tree, "import sys; from readscale.cli import main; sys.argv[1:] = ['--version']; main()")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"readscale {readscale.__version__} ({info})\n"


@pytest.mark.slow
def test_the_compiled_modules_pass_their_tests(compiled_tree: Path) -> None:
    # In one interpreter: pytest on their tests, then the check that the modules they
    # ran were the extensions (imported after pytest starts: its plugin imports readscale).
    tests = sorted({_tests_of(module) for module in COMPILED_MODULES})
    code = (
        "import sys, pytest\n"
        "code = pytest.main(['-q', '-x', '-p', 'no:cacheprovider', *sys.argv[1:]])\n"
        "import readscale._build as b\n"
        "assert b.compiled_modules() == b.COMPILED_MODULES, b.compiled_modules()\n"
        "sys.exit(code)\n"
    )
    proc = _run(compiled_tree, code, *tests)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert " passed" in proc.stdout
