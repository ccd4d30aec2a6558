"""Which build of readscale is running: pure Python, or with its hot modules compiled.

readscale is pure Python. A wheel built where mypyc (it ships with mypy) and a C compiler
are available also carries C extensions of the modules in :data:`COMPILED_MODULES`,
compiled from the same sources by ``hatch_build.py``; Python imports an extension before
the ``.py`` beside it. Without a compiler, with ``READSCALE_COMPILE=0``, and in editable
installs, the build is pure, and behaves the same (the test suite runs against both:
``tests/tooling/test_compiled_build.py``).

:data:`COMPILED_MODULES` is the one list of what is compiled: ``hatch_build.py`` reads it
from this file (without importing the package). A module on it must compile with mypyc
(``docs/development.md``, "The compiled build", says how to add one).

:func:`build_info` says what is actually loaded, module by module (not what the wheel
meant to ship): ``readscale --version`` and every bench print it.
"""

from __future__ import annotations

import functools
import importlib
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path
from typing import Final

__all__ = ["COMPILED_MODULES", "MYPYC_STAMP", "build_info", "compiled_modules"]

# The modules a compiled build compiles, in one mypyc group (calls between them stay in
# C). Keep it sorted; each must pass `mypy --strict` and mypyc (see the module docstring).
COMPILED_MODULES: Final = (
    "readscale._core.cache.entry",
    "readscale._core.l1.climber",
    "readscale._core.l1.shadow",
    "readscale._core.l1.sketch",
    "readscale._core.l1.wtinylfu",
    "readscale._core.memcached.hits",
    "readscale._core.memcached.replies",
    "readscale.l1",
)

# Written beside this module by hatch_build.py in a compiled wheel: the mypyc version.
MYPYC_STAMP: Final = "_mypyc_build.txt"


def compiled_modules() -> tuple[str, ...]:
    """The modules of :data:`COMPILED_MODULES` this process loaded from a C extension."""
    suffixes = tuple(EXTENSION_SUFFIXES)
    out = []
    for name in COMPILED_MODULES:
        spec = importlib.import_module(name).__spec__
        origin = spec.origin if spec is not None else None
        if origin is not None and origin.endswith(suffixes):
            out.append(name)
    return tuple(out)


@functools.cache
def build_info() -> str:
    """``"pure"``, or ``"compiled (mypyc <version>): <modules>"`` naming the compiled
    modules (``readscale.`` left out), followed by ``"; pure: <modules>"`` if some on the
    list were not compiled (a partial build: something went wrong)."""
    compiled = compiled_modules()
    if not compiled:
        return "pure"
    try:
        version = (Path(__file__).parent / MYPYC_STAMP).read_text(encoding="utf-8").strip()
    except OSError:
        version = "mypyc, version unknown"

    def short(names: tuple[str, ...]) -> str:
        return ", ".join(name.removeprefix("readscale.") for name in names)

    text = f"compiled ({version}): {short(compiled)}"
    pure = tuple(name for name in COMPILED_MODULES if name not in compiled)
    return f"{text}; pure: {short(pure)}" if pure else text
