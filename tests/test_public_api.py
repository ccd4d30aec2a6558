"""The public surface: small, importable without extras, one name per idea."""

from __future__ import annotations

import subprocess
import sys

import readscale


def test_all_names_resolve() -> None:
    for name in readscale.__all__:
        assert getattr(readscale, name) is not None, name
    assert len(readscale.__all__) < 60


def test_the_root_holds_the_day_one_names_only() -> None:
    # docs/architecture.md §7.5: errors, codecs, HTTP policies and collectors each have
    # one home of their own; the routers and the bus join the root.
    import readscale.errors

    assert len(readscale.__all__) == 33
    assert {"AsyncReplicaRouter", "ReplicaRouter", "AsyncInvalidationBus", "PostgresSettings"} <= set(readscale.__all__)
    for gone in ("ConfigurationError", "ReadscaleError", "JsonCodec", "HttpPolicy", "PrometheusCollector"):
        assert gone not in readscale.__all__ and not hasattr(readscale, gone), gone
    assert set(readscale.errors.__all__).isdisjoint(readscale.__all__)


def test_import_needs_no_optional_dependency() -> None:
    code = (
        "import sys\n"
        "blocked = ('redis', 'psycopg', 'starlette', 'django', 'flask', 'sqlalchemy', 'prometheus_client', "
        "'typer', 'rich', 'httpx')\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in blocked:\n"
        "            raise ImportError(f'blocked {name}')\n"
        "sys.meta_path.insert(0, Block())\n"
        "import readscale\n"
        "print(len(readscale.__all__))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr


def test_every_public_module_exports_what_the_readme_names() -> None:
    # Names the README's examples import: each from a public module, never from _async/_sync.
    import importlib

    public = {
        "readscale.backends": ("AsyncRedisBackend", "AsyncMemoryBackend", "MemoryBackend", "MemcachedBackend"),
        "readscale": ("AsyncInvalidationBus", "InvalidationBus"),
        "readscale.cache": ("report_primary_read", "report_read_lsn", "BusStats"),
        "readscale.consistency": ("AsyncConsistencyChecker", "ConsistencyChecker"),
    }
    for module_name, names in public.items():
        module = importlib.import_module(module_name)
        for name in names:
            assert name in module.__all__ and getattr(module, name) is not None, f"{module_name}.{name}"


#: The framework modules (docs/architecture.md §7.4): each is the one path for its own
#: framework's names, so the same name (``HttpCacheMiddleware``, ``http_policy``...) is
#: listed once per framework, each time for that framework's own object.
FRAMEWORKS = {"readscale.starlette", "readscale.fastapi", "readscale.flask", "readscale.django", "readscale.sqlalchemy"}


def public_listings() -> dict[str, list[tuple[str, object]]]:
    """Every name of every public module's ``__all__``: name -> [(module, object)]."""
    import importlib
    import pkgutil
    from collections import defaultdict

    homes: dict[str, list[tuple[str, object]]] = defaultdict(list)
    for name in readscale.__all__:
        homes[name].append(("readscale", getattr(readscale, name)))
    tools = ("stack", "bench", "demo", "report", "testing", "cli")
    for info in pkgutil.walk_packages(readscale.__path__, "readscale."):
        parts = info.name.split(".")[1:]
        if parts[0] in tools or any(part.startswith("_") for part in parts):
            continue
        module = importlib.import_module(info.name)
        for name in getattr(module, "__all__", ()):
            homes[name].append((info.name, getattr(module, name)))
    return homes


def test_every_public_name_is_listed_once() -> None:
    twice = {
        name: [where for where, _ in listed]
        for name, listed in public_listings().items()
        if len(listed) > 1
        and not (
            {where for where, _ in listed} <= FRAMEWORKS  # one per framework module
            and len({id(obj) for _, obj in listed}) == len(listed)  # each its own object
        )
    }
    assert twice == {}, twice


def test_every_public_object_has_one_path() -> None:
    # Under any name: a class or function re-exported by a second face is a second path.
    paths: dict[int, list[str]] = {}
    for name, listed in public_listings().items():
        for where, obj in listed:
            if callable(obj) or isinstance(obj, type):
                paths.setdefault(id(obj), []).append(f"{where}.{name}")
    assert [p for p in paths.values() if len(p) > 1] == []


def test_the_framework_modules_are_the_only_path_to_framework_names() -> None:
    import importlib

    import readscale.http
    import readscale.replicas

    old = ("readscale.http.asgi", "readscale.http.wsgi", "readscale.http.flask", "readscale.http.django",
           "readscale.http.static", "readscale.replicas.asgi", "readscale.replicas.wsgi",
           "readscale.replicas.django", "readscale.replicas.sqlalchemy")  # fmt: skip
    for path in old:  # pre-1.0: no shims (§12)
        try:
            importlib.import_module(path)
        except ModuleNotFoundError:
            continue
        raise AssertionError(f"{path} still imports")
    framework_names = {"HttpCacheMiddleware", "CausalTokenMiddleware", "http_policy", "add_tags", "use_policy",
                       "check_not_modified", "StaticAssets", "ReplicaDatabaseRouter",
                       "routing_sessionmaker"}  # fmt: skip
    assert framework_names.isdisjoint(readscale.http.__all__)
    assert framework_names.isdisjoint(readscale.replicas.__all__)
    assert framework_names.isdisjoint(readscale.__all__)
