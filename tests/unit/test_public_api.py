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

    assert len(readscale.__all__) == 32
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


#: Names still listed by a framework facade (readscale.starlette, .flask, .django,
#: .sqlalchemy) and by the module it re-exports, until the framework modules become the
#: names' one home (docs/architecture.md §7.4). The list only shrinks: an entry that is no
#: longer listed twice fails the test below.
FRAMEWORK_PENDING = {
    "CausalTokenMiddleware", "DEFAULT_COOKIE", "HttpCacheMiddleware", "HttpMetrics", "HttpPolicy", "HttpSettings",
    "ReplicaDatabaseRouter", "RoutingSession", "add_tags", "async_routing_sessionmaker", "check_not_modified",
    "http_policy", "replica_settings", "routing_sessionmaker", "shared_router", "use_policy",
}  # fmt: skip


def test_every_public_name_is_listed_once() -> None:
    import importlib
    import pkgutil
    from collections import defaultdict

    homes: dict[str, list[str]] = defaultdict(list)
    for name in readscale.__all__:
        homes[name].append("readscale")
    tools = ("stack", "bench", "demo", "report", "testing", "cli")
    for info in pkgutil.walk_packages(readscale.__path__, "readscale."):
        parts = info.name.split(".")[1:]
        if parts[0] in tools or any(part.startswith("_") for part in parts):
            continue
        for name in getattr(importlib.import_module(info.name), "__all__", ()):
            homes[name].append(info.name)
    twice = {name: where for name, where in homes.items() if len(where) > 1}
    assert set(twice) - FRAMEWORK_PENDING == set(), {n: twice[n] for n in set(twice) - FRAMEWORK_PENDING}
    assert FRAMEWORK_PENDING - set(twice) == set(), "listed once now: remove from FRAMEWORK_PENDING"
