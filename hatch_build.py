"""hatchling build hook: the optional compiled build (mypyc), with a pure-Python fallback.

A wheel build (``pip install .``, ``pip install readscale`` from the sdist, ``python -m
build``) compiles the modules listed in ``src/readscale/_build.py`` (``COMPILED_MODULES``,
the one list) with mypyc into C extensions and adds them to the wheel beside their
``.py`` sources, tagged for this interpreter and platform. ``READSCALE_COMPILE`` decides:

- unset or ``auto``: compile when mypyc and a C compiler are there; otherwise, or if
  compiling fails, build the pure wheel and say why (a warning in the build's output);
- ``0`` (or ``no``, ``false``, ``pure``): the pure wheel, without trying;
- ``1`` (or ``yes``, ``true``, ``require``): compile or fail the build (CI, releases).

Never compiled: editable installs (``pip install -e``, ``make setup``) and the sdist. The
compilation runs in a scratch copy of the package in a temporary directory, so no
``.so`` ever lands in ``src/`` (one there would shadow the ``.py`` beside it: edits
would silently not run). mypy and setuptools (mypyc's build backend) are asked for as
build dependencies unless the build is pure; mypy's type check is mypyc's first step.

Why not the hatch-mypyc plugin: it raises when compilation fails (no fallback to pure)
and builds in place (``build_ext --inplace``, leaving ``.so`` files in the source tree).

``compile_package`` is also what ``tests/tooling/test_compiled_build.py`` calls: this
file imports without hatchling.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import platform
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Callable
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path
from typing import Any

try:
    from hatchling.builders.hooks.plugin.interface import BuildHookInterface  # type: ignore[import-not-found,unused-ignore]
except ImportError:  # imported by the tests, outside a build
    BuildHookInterface = object  # type: ignore[assignment,misc,unused-ignore]

ROOT = Path(__file__).resolve().parent
PACKAGE = ROOT / "src" / "readscale"
ENV = "READSCALE_COMPILE"
# One mypyc group: calls between the compiled modules stay in C. Its runtime library is
# the extension readscale._mypyc__mypyc (inside the package, not at the top level).
GROUP = "readscale._mypyc"
STAMP = "_mypyc_build.txt"  # readscale._build.MYPYC_STAMP
BUILD_REQUIRES = ["mypy>=1.18", "setuptools>=70"]


class CompileError(RuntimeError):
    """mypyc could not compile the modules (the message carries its output)."""


def compile_mode(environ: dict[str, str] | os._Environ[str] | None = None) -> str:
    """``"auto"``, ``"pure"`` or ``"require"``, from ``READSCALE_COMPILE``."""
    raw = (os.environ if environ is None else environ).get(ENV, "auto").strip().lower()
    if raw in ("", "auto"):
        return "auto"
    if raw in ("0", "no", "false", "pure"):
        return "pure"
    if raw in ("1", "yes", "true", "require"):
        return "require"
    raise ValueError(f"{ENV}={raw!r}: use auto, 0 (pure) or 1 (compile or fail)")


def compiled_module_list(package: Path = PACKAGE) -> list[str]:
    """``COMPILED_MODULES`` of ``readscale/_build.py``, read without importing it."""
    tree = ast.parse((package / "_build.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and node.target.id == "COMPILED_MODULES"
            and node.value is not None
        ):
            value = ast.literal_eval(node.value)
            if isinstance(value, tuple) and all(isinstance(name, str) for name in value):
                return list(value)
    raise CompileError(f"{package / '_build.py'}: no COMPILED_MODULES tuple of module names")


def build_dependencies() -> list[str]:
    """What the build needs beyond hatchling: mypy and setuptools when it will try to
    compile; nothing when it will not (pure, not CPython, or ``auto`` with no C compiler:
    an index that cannot give mypy, offline say, must not fail a pure install)."""
    mode = compile_mode()
    if mode == "pure" or platform.python_implementation() != "CPython":
        return []
    if mode == "auto" and missing_compiler() is not None:
        return []
    return list(BUILD_REQUIRES)


def missing_toolchain() -> str | None:
    """Why this interpreter cannot compile (None: it can try)."""
    if platform.python_implementation() != "CPython":
        return f"mypyc needs CPython, not {platform.python_implementation()}"
    for module, what in (("mypyc", "mypyc (it comes with mypy)"), ("setuptools", "setuptools (mypyc builds with it)")):
        if importlib.util.find_spec(module) is None:
            return f"{what} is not installed"
    return missing_compiler()


def missing_compiler() -> str | None:
    """Why there is no C compiler here (None: there is one)."""
    compiler = (sysconfig.get_config_var("CC") or "cc").split()
    if sys.platform != "win32" and (not compiler or shutil.which(compiler[0]) is None):
        return f"no C compiler ({compiler[0] if compiler else 'CC unset'} not found)"
    return None


_SETUP = """\
import sys
from mypyc.build import mypycify
from setuptools import setup

setup(
    name="readscale-mypyc",
    py_modules=[],  # no package discovery: only the extensions
    ext_modules=mypycify({args!r}, opt_level={opt_level!r}, group_name={group!r}),
    script_args=["build_ext", "--inplace", "--build-temp", {temp!r}],
)
"""


def compile_package(package: Path, modules: list[str], scratch: Path, *, opt_level: str = "3") -> dict[str, Path]:
    """Compile ``modules`` of the readscale package at ``package`` in a copy of it made
    under ``scratch``. Returns {path inside the wheel: built extension}; raises
    :class:`CompileError` unless every module got its extension. ``package`` is only read."""
    src = scratch / "src"
    shutil.copytree(package, src / "readscale", ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.so", "*.pyd"))
    paths = []
    for name in modules:
        rel = Path(*name.split(".")).with_suffix(".py")
        if not (src / rel).is_file():
            raise CompileError(f"{name}: no such module ({rel})")
        paths.append(rel.as_posix())
    # Missing third-party stubs are Any to mypyc; the other readscale modules are read
    # for their types only (they are checked by the project's own `mypy --strict`).
    args = ["--ignore-missing-imports", "--follow-imports=silent", *paths]
    setup = src / "setup_mypyc.py"
    setup.write_text(
        _SETUP.format(args=args, opt_level=opt_level, group=GROUP, temp=str(scratch / "temp")), encoding="utf-8"
    )
    env = {**os.environ, "MYPY_CACHE_DIR": str(scratch / "mypy_cache")}
    proc = subprocess.run([sys.executable, setup.name], cwd=src, env=env, capture_output=True, text=True, check=False)
    if proc.returncode:
        raise CompileError(f"mypyc failed (exit {proc.returncode}):\n{(proc.stdout + proc.stderr)[-6000:]}")
    suffixes = tuple(EXTENSION_SUFFIXES)
    built = {
        path.relative_to(src).as_posix(): path
        for path in sorted((src / "readscale").rglob("*"))
        if path.is_file() and path.name.endswith(suffixes)
    }
    missing = [name for name in modules if not any(rel.startswith(name.replace(".", "/") + ".") for rel in built)]
    if missing or not any(rel.startswith(GROUP.replace(".", "/") + "__mypyc.") for rel in built):
        raise CompileError(f"mypyc built no extension for {missing or [GROUP]}; it wrote {sorted(built)}")
    import mypy.version

    stamp = src / "readscale" / STAMP
    stamp.write_text(f"mypyc {mypy.version.__version__}\n", encoding="utf-8")
    built[f"readscale/{STAMP}"] = stamp
    return built


def add_compiled_modules(
    root: Path, target_name: str, version: str, build_data: dict[str, Any], say: Callable[[str, bool], None]
) -> tempfile.TemporaryDirectory[str] | None:
    """What the hook does before hatchling writes a wheel: on success, adds the built
    extensions to ``build_data`` (a platform wheel) and returns the scratch directory
    holding them (clean it up once the wheel is written); else leaves ``build_data``
    alone (the pure wheel), ``say`` (message, is_warning) telling why."""
    if target_name != "wheel" or version == "editable":
        return None  # the sdist ships sources; an editable install must run the .py files
    mode = compile_mode()
    if mode == "pure":
        say(f"readscale: pure-Python wheel ({ENV}=0)", False)
        return None
    why = missing_toolchain()
    scratch = None
    if why is None:
        scratch = tempfile.TemporaryDirectory(prefix="readscale-mypyc-")
        try:
            built = compile_package(
                root / "src" / "readscale", compiled_module_list(root / "src" / "readscale"), Path(scratch.name)
            )
        except CompileError as exc:
            why = str(exc)
            scratch.cleanup()
            scratch = None
    if why is not None:
        if mode == "require":
            raise CompileError(f"readscale: {ENV}=1 but the compiled build failed: {why}")
        say(f"readscale: building the pure-Python wheel ({ENV}=0 to skip trying): {why}", True)
        return None
    build_data["pure_python"] = False
    build_data["infer_tag"] = True
    build_data["force_include"].update({str(path): rel for rel, path in built.items()})
    say(f"readscale: compiled with mypyc: {', '.join(sorted(built))}", False)
    return scratch


class CompiledBuildHook(BuildHookInterface):  # type: ignore[misc,valid-type,unused-ignore]
    """Adds the compiled modules to a wheel (see the module docstring)."""

    PLUGIN_NAME = "custom"

    def dependencies(self) -> list[str]:
        return build_dependencies()

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        def say(message: str, warning: bool) -> None:
            (self.app.display_warning if warning else self.app.display_info)(message)

        self._scratch = add_compiled_modules(Path(self.root), self.target_name, version, build_data, say)

    def finalize(self, version: str, build_data: dict[str, Any], artifact_path: str) -> None:
        scratch = getattr(self, "_scratch", None)
        if scratch is not None:
            scratch.cleanup()
