"""Each extra imports exactly what it installs (issue 14, §7.3 of docs/architecture.md).

The faces import optional packages lazily through one helper (``readscale._shared.lazy``);
its table of package -> extra is kept equal to ``pyproject.toml`` here, and a subprocess
that blocks every optional package stands for an install with no extra (``memcached``
installs nothing: readscale speaks its protocol itself).
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

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
