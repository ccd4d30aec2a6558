"""Each extra imports exactly what it installs (issue 14, §7.3 of docs/architecture.md).

The faces import optional packages lazily through one helper (``readscale._shared.lazy``);
its table of package -> extra is kept equal to ``pyproject.toml`` here, and a subprocess
that blocks every optional package stands for an install with no extra (``memcached``
installs nothing: readscale speaks its protocol itself). The last test (issue 15) installs
each extra alone in a fresh virtualenv, as a user would: marked ``slow`` (about 40 s of CPU,
12 pip installs four at a time; 2m50s wall on a loaded 2-core machine).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

from readscale._shared.lazy import EXTRAS

ROOT = Path(__file__).resolve().parent.parent
LIBRARY_EXTRAS = ("redis", "memcached", "msgpack", "pydantic", "postgres", "starlette", "fastapi", "django",
                  "flask", "sqlalchemy", "prometheus", "cli")  # fmt: skip


def extras() -> dict[str, list[str]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return dict(project["optional-dependencies"])


def requirements(extra: str, table: dict[str, list[str]]) -> list[str]:
    """The extra's requirements, self-references (``readscale[a,b]``) expanded."""
    out: list[str] = []
    for req in table[extra]:
        own = re.fullmatch(r"readscale\[([\w,]+)\]", req)
        if own:
            for sub in own.group(1).split(","):
                out += requirements(sub, table)
        else:
            out.append(req)
    return out


def normalized(name: str) -> str:
    return name.lower().replace("_", "-")


def test_every_package_of_the_table_is_installed_by_its_extra() -> None:
    table = extras()
    for package, (_, extra) in EXTRAS.items():
        assert extra in table, f"EXTRAS names the extra {extra!r}, which pyproject.toml does not have"
        reqs = requirements(extra, table)
        names = {normalized(re.split(r"[\[<>=;~ ]", r, maxsplit=1)[0]) for r in reqs}
        bracketed = {normalized(x) for r in reqs for group in re.findall(r"\[([^\]]*)\]", r) for x in group.split(",")}
        name = normalized(package)
        assert name in names or name.rpartition("-")[2] in bracketed, (package, extra, reqs)


def test_every_package_a_library_extra_installs_is_in_the_table() -> None:
    table = extras()
    known = {normalized(p) for p in EXTRAS}
    for extra in LIBRARY_EXTRAS:
        for req in requirements(extra, table):
            name = normalized(re.split(r"[\[<>=;~ ]", req, maxsplit=1)[0])
            assert name in known, f"readscale[{extra}] installs {name}, which readscale._shared.lazy.EXTRAS lacks"


BLOCK = """
import importlib.abc, sys
BLOCKED = {blocked!r}
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked)", name=name)
        return None
sys.meta_path.insert(0, Block())
"""


def run_without(blocked: set[str], code: str) -> subprocess.CompletedProcess[str]:
    script = BLOCK.format(blocked=sorted(blocked)) + textwrap.dedent(code)
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False, timeout=60)


def test_memcached_backends_import_without_any_optional_package() -> None:
    done = run_without(
        set(EXTRAS),
        """
        import readscale
        import readscale.backends
        from readscale.backends import AsyncMemcachedBackend, MemcachedBackend, AsyncMemoryBackend, MemoryBackend
        from readscale.backends import LeaseResult
        assert "AsyncRedisBackend" in dir(readscale.backends)
        try:
            from readscale.backends import AsyncRedisBackend
        except ImportError as exc:
            print(exc)
        else:
            raise SystemExit("AsyncRedisBackend imported without redis-py")
        """,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "AsyncRedisBackend needs redis-py: pip install 'readscale[redis]'"


def test_the_routers_name_their_extra_and_the_rest_of_replicas_needs_none() -> None:
    done = run_without(
        {"psycopg", "psycopg_pool"},
        """
        import readscale, readscale.replicas
        from readscale import ReplicaSettings, causal_context, dump_token
        for name in ("AsyncReplicaRouter", "ReplicaRouter"):
            try:
                getattr(readscale, name)
            except ImportError as exc:
                print(exc)
        """,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        f"{name} needs psycopg 3: pip install 'readscale[postgres]'" for name in ("AsyncReplicaRouter", "ReplicaRouter")
    ]


def test_a_lazy_name_is_kept_once_imported() -> None:
    import readscale.backends

    first = readscale.backends.AsyncMemoryBackend
    assert vars(readscale.backends)["AsyncMemoryBackend"] is first


def test_each_framework_module_imports_only_what_its_names_need() -> None:
    # docs/architecture.md §7.4: the framework modules are lazy faces. Django's HTTP
    # middleware needs no psycopg (the router and the token middleware do, and say so);
    # the WSGI and ASGI middlewares need no framework and no psycopg.
    done = run_without(
        set(EXTRAS) - {"django", "starlette", "httpx"},
        """
        import sys
        import readscale.django, readscale.flask, readscale.starlette
        assert not any(m.partition(".")[0] in {"django", "starlette", "flask"} for m in sys.modules), "eager"
        from readscale.django import HttpCacheMiddleware, http_policy
        from readscale.flask import CausalTokenMiddleware, HttpCacheMiddleware
        from readscale.starlette import CausalTokenMiddleware, HttpCacheMiddleware, StaticAssets
        assert "psycopg" not in sys.modules
        for name in ("ReplicaDatabaseRouter", "CausalTokenMiddleware"):
            try:
                getattr(readscale.django, name)
            except ImportError as exc:
                print(exc)
        try:
            readscale.flask.http_policy
        except ImportError as exc:
            print(exc)
        """,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "ReplicaDatabaseRouter needs psycopg 3: pip install 'readscale[postgres]'",
        "CausalTokenMiddleware needs psycopg 3: pip install 'readscale[postgres]'",
        "readscale.flask needs Flask: pip install 'readscale[flask]'",
    ]


# -- each extra, installed alone in a fresh virtualenv ------------------------------------
#
# The tests above block packages in one environment; this one installs readscale's wheel
# with one extra at a time, as a user would, so pip resolves exactly what the extra
# declares (no --no-deps: the resolution is what is tested). Then, in that environment:
# every name of every public module imports, or fails with the one-line hint naming an
# extra this install does not have; and the names the extra is for import.

#: What each extra is for: code that must run in a virtualenv holding only that extra.
SERVES = {
    "": "import readscale; from readscale import AsyncCache, Cache, MemoryStore, RedisSettings, TokenSigner",
    "redis": "from readscale.backends import AsyncRedisBackend, RedisBackend, AsyncRedisClusterBackend, "
    "RedisClusterBackend\nfrom readscale import AsyncInvalidationBus, InvalidationBus\n"
    "from readscale.writebehind import AsyncWriteBehind, WriteBehind, AsyncFlusher, Flusher",
    "memcached": "from readscale.backends import AsyncMemcachedBackend, MemcachedBackend\n"
    "from readscale import Cache\nCache(MemcachedBackend('127.0.0.1:11211'))",
    "msgpack": "from readscale.codecs import MsgpackCodec\nMsgpackCodec()",
    "pydantic": "import pydantic\nfrom readscale.codecs import JsonCodec\n"
    "class Item(pydantic.BaseModel):\n    id: int\nJsonCodec()",
    "postgres": "from readscale import AsyncReplicaRouter, ReplicaRouter\nfrom readscale.cdc import *\n"
    "from readscale.settings import check_dsn\ncheck_dsn('postgresql://db.example/app')",
    "starlette": "from readscale.starlette import *\nfrom readscale.http.purge import *",
    "fastapi": "from readscale.fastapi import *\nfrom readscale.starlette import *",
    "django": "from readscale.django import HttpCacheMiddleware, http_policy",
    "flask": "from readscale.flask import *",
    "sqlalchemy": "from readscale.sqlalchemy import *",
    "prometheus": "from readscale.metrics import *",
    "cli": "import readscale.cli._app",
}

CHECK = r"""
import importlib, pkgutil, re, sys
import readscale

installed = set(sys.argv[1].split(",")) - {""}
bad = []
tools = ("stack", "bench", "demo", "report", "testing", "cli")
modules = ["readscale"] + [
    info.name for info in pkgutil.walk_packages(readscale.__path__, "readscale.")
    if not (info.name.split(".")[1] in tools or info.name == "readscale.__main__"
            or any(p.startswith("_") for p in info.name.split(".")[1:]))
]
for module_name in modules:
    try:
        module = importlib.import_module(module_name)
        names = list(getattr(module, "__all__", ()))
    except ImportError as exc:
        module, names = None, [None]
        error = exc
    for name in names:
        try:
            if module is None:
                raise error
            getattr(module, name)
        except ImportError as exc:
            hint = re.fullmatch(r"\S+ needs .+: pip install 'readscale\[(\w+)\]'.*", str(exc))
            # A module of a framework's face (readscale.django.cache) may need that framework
            # outright: the module's own name says which extra.
            framework = (module_name.split(".") + [""])[1]
            own = (exc.name or "").partition(".")[0] == framework and framework not in installed
            if not own and (hint is None or hint.group(1) in installed):
                bad.append(f"{module_name}.{name}: {type(exc).__name__}: {exc}")
for line in bad:
    print(line)
sys.exit(1 if bad else 0)
"""


def installed_extras(extra: str, table: dict[str, list[str]]) -> set[str]:
    """``extra`` and every extra it pulls in (``readscale[a,b]``)."""
    out = {extra}
    for req in table.get(extra, []):
        own = re.fullmatch(r"readscale\[([\w,]+)\]", req)
        if own:
            for sub in own.group(1).split(","):
                out |= installed_extras(sub, table)
    return out


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # readscale's own wheel, built once (its dependencies are resolved per extra below);
    # pure (READSCALE_COMPILE=0): the compiled build has its own test (tooling/test_compiled_build.py)
    pure = {**os.environ, "READSCALE_COMPILE": "0"}
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(ROOT)],
                   check=True, capture_output=True, timeout=120, env=pure)  # fmt: skip
    (built,) = out.glob("readscale-*.whl")
    assert built.name.endswith("-py3-none-any.whl"), built.name
    return built


def install_and_check(extra: str, wheel: Path, where: Path) -> list[str]:
    """The problems of readscale[extra] installed alone in a fresh virtualenv at ``where``."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(where)], check=True, timeout=60)
    python = where / "bin" / "python"
    spec = f"readscale[{extra}] @ {wheel.as_uri()}" if extra else f"readscale @ {wheel.as_uri()}"
    # This environment's pip installs into the new one (--python): no pip bootstrapped per venv.
    pip = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", spec],
                         capture_output=True, text=True, timeout=400, check=False)  # fmt: skip
    if pip.returncode != 0:
        return [f"[{extra}] pip install failed: {pip.stderr[-2000:]}"]
    problems = []
    table = extras()
    done = subprocess.run([str(python), "-c", CHECK, ",".join(sorted(installed_extras(extra, table)))],
                          capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    problems += [f"[{extra}] {line}" for line in (done.stdout + done.stderr).splitlines()]
    served = subprocess.run([str(python), "-c", SERVES[extra]], capture_output=True, text=True, timeout=60, check=False)
    if served.returncode != 0:
        problems.append(f"[{extra}] what it is for does not import: {served.stderr.strip().splitlines()[-1:]}")
    # The command line: the version without the cli extra too, python -m readscale with it.
    version = subprocess.run([str(where / "bin" / "readscale"), "--version"], capture_output=True, text=True,
                             timeout=60, check=False)  # fmt: skip
    if version.stdout.strip() != f"readscale {readscale_version()} (pure)":
        problems.append(f"[{extra}] readscale --version: {version.stdout!r} {version.stderr[-300:]!r}")
    if extra == "cli":
        help_ = subprocess.run([str(python), "-m", "readscale", "--help"], capture_output=True, text=True,
                               timeout=60, check=False)  # fmt: skip
        if help_.returncode != 0 or "stack" not in help_.stdout:
            problems.append(f"[cli] python -m readscale --help: {help_.stderr[-300:]!r}")
    elif not installed_extras(extra, table) & {"cli"}:
        bare = subprocess.run([str(python), "-m", "readscale", "stack", "up"], capture_output=True, text=True,
                              timeout=60, check=False)  # fmt: skip
        if bare.returncode != 2 or len(bare.stderr.strip().splitlines()) != 1 or "readscale[cli]" not in bare.stderr:
            problems.append(f"[{extra}] without the cli extra the command line is not one line: {bare.stderr!r}")
    return problems


def readscale_version() -> str:
    return str(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"])


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_each_extra_installed_alone_imports_what_it_installs(wheel: Path, tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    assert set(SERVES) == {"", *LIBRARY_EXTRAS}
    with ThreadPoolExecutor(4) as pool:
        found = pool.map(lambda e: install_and_check(e, wheel, tmp_path / (e or "bare")), SERVES)
        problems = [p for ps in found for p in ps]
    assert problems == [], "\n".join(problems)
