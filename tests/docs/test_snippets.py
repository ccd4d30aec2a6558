"""Every fenced Python block in README.md and docs/ runs here, as written (issue 14).

A block is found by its page and the heading above it (``docs/cache.md#the-application-cache``,
``-2`` for a heading's second block). Each block is in exactly one of three tables, checked
both ways, so a new block cannot go untested and a removed one cannot leave a stale entry:

- ``RUN``: a test below executes the block's text, compiled from the page (a traceback
  names the page and line), with top-level ``await`` allowed. The names a reader supplies
  (``REDIS_URL``, ``PRIMARY_DSN``, a loader) come from the test, bound to the servers the
  suite starts anyway (the ``readscale.testing`` fixtures). After it runs, the test checks
  what the block promises (a value read back, a header, a row).
- ``ELSEWHERE``: the block is the source of an app another test runs and compares word for
  word (docs/http.md's recommended stacks: tests/http/test_stacks.py).
- ``FRAGMENT``: a sketch that is not a program (a planned signature, an elided dict); it
  must still compile unless the reason says why not.

Each ``RUN`` test was seen to fail once with its block broken (a name misspelled in the
page), so a block that rots fails the suite.

Shell blocks (``sh``) are checked line by line without running anything: a ``make`` target
exists, ``pip install 'readscale[...]'`` names real extras, a ``readscale`` command line
parses with the CLI's own parser (subcommands, options, values), a pytest path exists;
any other command fails until this test learns to check it. (Blocks without a language
are output and diagrams, not code.)
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import linecache
import re
import shlex
import shutil
import sys
import tomllib
import types
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis

from readscale.errors import StackError
from readscale.stack import Stack
from readscale.testing.shared import new_stack_root
from tests.replica_helpers import restore_replicas

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
FENCE = re.compile(r"^(`{3,})(\S*)")
TOKEN_SECRET = b"the docs' snippets: tests only"


@dataclass(frozen=True)
class Block:
    page: str
    anchor: str
    line: int  # of the block's first code line, 1-based
    code: str

    @property
    def id(self) -> str:
        return f"{self.page}#{self.anchor}"


def _slug(heading: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", heading.lower()).strip("-")


SHELLS = ("sh", "bash", "shell", "console")


def python_blocks(langs: tuple[str, ...] = ("python",)) -> list[Block]:
    found: list[Block] = []
    for path in PAGES:
        page = path.relative_to(ROOT).as_posix()
        heading, per_heading = "top", 0
        lines = path.read_text().splitlines()
        i = 0
        while i < len(lines):
            line = lines[i]
            fence = FENCE.match(line)
            if fence:
                ticks, lang = fence.groups()
                end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith(ticks))
                if lang in langs:
                    per_heading += 1
                    anchor = _slug(heading) + (f"-{per_heading}" if per_heading > 1 else "")
                    found.append(Block(page, anchor, i + 2, "\n".join(lines[i + 1 : end]) + "\n"))
                i = end + 1
                continue
            if line.startswith("#"):
                heading, per_heading = line.lstrip("#").strip(), 0
            i += 1
    return found


BLOCKS = {b.id: b for b in python_blocks()}

# Blocks a test below runs: id -> the test.
RUN = {
    "README.md#a-short-tour": "test_readme_tour",
    "docs/cache.md#the-application-cache": "test_cache_page",
    "docs/cache.md#the-application-cache-2": "test_cache_page_typed_values",
    "docs/http.md#in-short": "test_http_in_short",
    "docs/replicas.md#in-short": "test_replicas_in_short",
    "docs/write-behind.md#write-behind-modes-promises-counters": "test_write_behind_intro",
    "docs/write-behind.md#in-short": "test_write_behind_in_short",
    "docs/stack.md#the-local-stack-and-the-pytest-fixtures": "test_stack_from_python",
    "docs/stack.md#pytest-fixtures-for-your-own-tests": "test_stack_fixtures",
    "docs/guides/fastapi.md#a-service-the-cache-the-replicas-and-the-token-between-requests": "test_fastapi_guide",
    "docs/guides/starlette.md#a-service-the-cache-the-replicas-and-the-token-between-requests": "test_starlette_guide",
    "docs/guides/flask.md#a-service-the-cache-the-replicas-and-the-token-between-requests": "test_flask_guide",
    "docs/guides/django.md#settings-replicas-the-causal-token-http-caching": "test_django_guide_settings",
    "docs/guides/django.md#the-cache-and-the-replicas-in-a-view": "test_django_guide_views",
    "docs/guides/sqlalchemy.md#sqlalchemy": "test_sqlalchemy_guide",
    "docs/observability.md#tracing-opentelemetry": "test_observability_tracing",
    "docs/observability.md#several-worker-processes": "test_observability_shared_metrics",
}
# Blocks that are the source of an app another test runs and compares word for word.
_STACKS = "tests/http/test_stacks.py"
ELSEWHERE = {
    "docs/http.md#fastapi": _STACKS,
    "docs/http.md#starlette": _STACKS,
    "docs/http.md#flask": _STACKS,
    "docs/http.md#django": _STACKS,
    "docs/http.md#django-2": _STACKS,
}
# Sketches: id -> (why it is not run, whether it compiles).
FRAGMENT = {
    "docs/edge.md#an-edge-of-several-nodes": (
        "purges the reader's three edge hosts; tests/http/test_edge_tier.py makes these calls on 2 real Varnish nodes",
        True,
    ),
    "docs/guides/django-cache.md#django-s-cache-on-readscale": (
        "a settings.py fragment; tests/django/test_cache.py's site (tests/django/cacheapp) runs on these settings",
        True,
    ),
    "docs/guides/django-cache.md#readscale-s-extras-on-the-same-object": (
        "calls on a configured cache with the reader's load_product and page; tests/django/test_cache.py runs each",
        True,
    ),
    "docs/observability.md#prometheus-metrics": (
        "registers collectors of the reader's own objects; tests/test_metrics.py and tests/demo/test_prometheus.py do",
        True,
    ),
    "docs/operations.md#redis-sentinel": (
        "names the reader's sentinels; tests/_async/backends/test_sentinel.py parses such URLs, fails a group over",
        True,
    ),
    "docs/response-cache.md#setup": (
        "wiring into the reader's app (app, Request); the same wiring runs in tests/browser/response_cache_apps.py",
        True,
    ),
    "docs/response-cache.md#setup-2": ("Django settings lines; run in tests/browser/response_cache_apps.py", True),
    "docs/response-cache.md#setup-3": ("the reader's Flask app; run in tests/browser/response_cache_apps.py", True),
    "docs/architecture.md#6-the-fill-protocol-as-a-pure-planner": (
        "the planned signatures of _core/cache/fill.py (issue 14, step 6), bodies elided",
        True,
    ),
    "docs/architecture.md#7-3-optional-dependencies-one-helper-lazy-faces": (
        "a planned module's shape: the mapping is elided with '...', so it does not compile",
        False,
    ),
}


def test_every_block_is_run_or_allow_listed_with_a_reason() -> None:
    listed = set(RUN) | set(ELSEWHERE) | set(FRAGMENT)
    assert len(listed) == len(RUN) + len(ELSEWHERE) + len(FRAGMENT), "a block is in two tables"
    unlisted = sorted(set(BLOCKS) - listed)
    assert not unlisted, f"Python blocks no test runs (add a test to RUN, or a reason to FRAGMENT): {unlisted}"
    stale = sorted(listed - set(BLOCKS))
    assert not stale, f"entries for blocks the pages no longer have: {stale}"
    tests = {name for name, fn in globals().items() if name.startswith("test_") and callable(fn)}
    assert set(RUN.values()) <= tests


@pytest.mark.parametrize("block_id", sorted(FRAGMENT))
def test_fragments_compile_unless_said_otherwise(block_id: str) -> None:
    reason, compiles = FRAGMENT[block_id]
    assert reason
    if compiles:
        compile(BLOCKS[block_id].code, block_id, "exec")


@pytest.mark.parametrize("block_id", sorted(ELSEWHERE))
def test_blocks_run_elsewhere_are_compared_there(block_id: str) -> None:
    test = (ROOT / ELSEWHERE[block_id]).read_text()
    assert BLOCKS[block_id].page in test, f"{ELSEWHERE[block_id]} does not read {BLOCKS[block_id].page}"


# -- running a block ------------------------------------------------------------------------


def _compiled(block_id: str, replace: dict[str, str] | None = None) -> Any:
    block = BLOCKS[block_id]
    filename = f"{ROOT / block.page}:{block.line}"
    code = block.code
    for old, new in (replace or {}).items():  # a literal the test must not use as is (a shared path)
        assert old in code, f"{block_id} no longer has {old!r}"
        code = code.replace(old, new)
    # Pad so the traceback's line numbers are the page's.
    source = "\n" * (block.line - 1) + code
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    return compile(source, filename, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)


@contextmanager
def _module(block_id: str, namespace: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """A real module for the block to run in: libraries that resolve annotations through
    ``sys.modules`` (SQLAlchemy's ``Mapped``) or find a root from ``__name__`` (Flask) work."""
    name = "docs_snippet_" + _slug(block_id).replace("-", "_")
    module = types.ModuleType(name)
    module.__file__ = str(ROOT / BLOCKS[block_id].page)
    module.__dict__.update(namespace)
    sys.modules[name] = module
    try:
        yield module.__dict__
    finally:
        del sys.modules[name]


async def run_async(block_id: str, namespace: dict[str, Any]) -> dict[str, Any]:
    with _module(block_id, namespace) as ns:
        result = eval(_compiled(block_id), ns)  # the docs' own code, on purpose
        if inspect.iscoroutine(result):
            await result
        return ns


def run_sync(block_id: str, namespace: dict[str, Any], replace: dict[str, str] | None = None) -> dict[str, Any]:
    with _module(block_id, namespace) as ns:
        result = eval(_compiled(block_id, replace), ns)  # the docs' own code, on purpose
        assert not inspect.iscoroutine(result), f"{block_id} awaits: run it with run_async"
        return ns


@pytest.fixture
def docs_redis_url(redis_url: str) -> Iterator[str]:
    """The suite's Redis, on a database of its own, emptied before and after: the blocks'
    keys (``item:1``, ``user:42``) meet no other test's."""
    url = redis_url.rsplit("/", 1)[0] + "/9"
    with redis.Redis.from_url(url) as admin:
        admin.flushdb()
        yield url
        admin.flushdb()


@pytest.fixture
def docs_durable_redis_url(durable_redis_url: str) -> Iterator[str]:
    url = durable_redis_url.rsplit("/", 1)[0] + "/9"
    with redis.Redis.from_url(url) as admin:
        admin.flushdb()
        yield url
        admin.flushdb()


@pytest.fixture
def items(pg_stack: Stack) -> Stack:
    """The table the blocks read and write: ``items(id, price)`` with item 1 at price 5,
    on every replica too (a block's first read has no token: any replica may serve it)."""
    with psycopg.connect(pg_stack.primary.dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS items (id int PRIMARY KEY, price int NOT NULL)")
        conn.execute("INSERT INTO items VALUES (1, 5) ON CONFLICT (id) DO UPDATE SET price = 5")
    restore_replicas(pg_stack)  # replay resumed and caught up with the seeding
    return pg_stack


def _servers(stack: Stack, redis_url: str) -> dict[str, Any]:
    return {
        "REDIS_URL": redis_url,
        "PRIMARY_DSN": stack.primary.dsn,
        "REPLICA_DSNS": [r.dsn for r in stack.replicas],
        "TOKEN_SECRET": TOKEN_SECRET,
    }


def _price(stack: Stack) -> int:
    with psycopg.connect(stack.primary.dsn) as conn:
        row = conn.execute("SELECT price FROM items WHERE id = 1").fetchone()
    assert row is not None
    return int(row[0])


# -- README ----------------------------------------------------------------------------------


@pytest.mark.stack
@pytest.mark.anyio
async def test_readme_tour(items: Stack, docs_redis_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    ns = await run_async("README.md#a-short-tour", _servers(items, docs_redis_url))
    assert capsys.readouterr().out == "5\n"  # the first read: the row as seeded
    assert _price(items) == 9
    assert ns["cache"].stats.loader.calls == 2  # the write's invalidation made the second read load


# -- the layers ------------------------------------------------------------------------------


@pytest.mark.stack
@pytest.mark.anyio
async def test_cache_page(pg_stack: Stack, docs_redis_url: str) -> None:
    from dataclasses import dataclass as _dataclass

    @_dataclass
    class Profile:
        name: str

    loads: list[int] = []

    async def load_product(pid: int) -> dict[str, Any]:
        loads.append(pid)
        return {"id": pid, "name": "lamp"}

    async def save_profile(uid: int, data: dict[str, str]) -> Profile:
        return Profile(**data)

    with psycopg.connect(pg_stack.primary.dsn, autocommit=True) as conn:
        row = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
    assert row is not None
    hi, lo = row[0].split("/")
    ns = await run_async(
        "docs/cache.md#the-application-cache",
        {
            "REDIS_URL": docs_redis_url,
            "pid": 1,
            "cid": 7,
            "uid": 42,
            "data": {"name": "Ada"},
            "commit_lsn": (int(hi, 16) << 32) + int(lo, 16),
            "load_product": load_product,
            "save_profile": save_profile,
            "Profile": Profile,
        },
    )
    cache = ns["cache"]
    try:
        assert ns["product"] == {"id": 1, "name": "lamp"} and loads == [1]
        cache.l1.clear()
        stored = await cache.get("user:42:profile", policy=ns["PROFILE"], type=Profile)
        assert stored == Profile(name="Ada"), "written through, and a Profile from Redis too"
        # Invalidated: the next read loads again.
        assert await cache.get_or_load("product:1", lambda: load_product(1), tags=["category:7"]) == ns["product"]
        assert loads == [1, 1]
    finally:
        await cache.aclose()


@pytest.mark.anyio
async def test_cache_page_typed_values(docs_redis_url: str) -> None:
    import pydantic

    from readscale import AsyncCache, MemoryStore, RedisSettings
    from readscale.backends import AsyncRedisBackend

    class User(pydantic.BaseModel):
        id: int
        name: str

    loads: list[int] = []

    async def fetch_user(uid: int) -> User:
        loads.append(uid)
        return User(id=uid, name="Ada")

    cache = AsyncCache(AsyncRedisBackend(RedisSettings(url=docs_redis_url)), l1=MemoryStore(100))
    try:
        ns = await run_async(
            "docs/cache.md#the-application-cache-2",
            {"cache": cache, "User": User, "fetch_user": fetch_user, "uid": 42},
        )
        assert ns["user"] == User(id=42, name="Ada") and ns["flags"] == {1: "on"}
        assert cache.l1 is not None
        cache.l1.clear()
        again = await cache.get_or_load("user:42", lambda: fetch_user(42), type=User)
        assert isinstance(again, User) and loads == [42], "a User from Redis, loaded once"
        assert ns["Users"].by_email.key("a@b") == "users:by-email:a@b"
    finally:
        await cache.aclose()


def test_observability_tracing() -> None:
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from readscale import Cache, CachePolicy, MemoryStore
    from readscale._shared.tracing import TRACING

    exporter = InMemorySpanExporter()
    try:
        ns = run_sync("docs/observability.md#tracing-opentelemetry", {"my_exporter": exporter})
        assert TRACING.tracer is not None
        cache = Cache(l1=MemoryStore(10), policy=CachePolicy(name="docs", ttl=60.0))  # no server needed
        assert cache.get("nothing") is not None  # NO_VALUE
        ns["provider"].force_flush()
        assert [s.name for s in exporter.get_finished_spans()] == ["readscale.cache.get"]
    finally:
        import readscale.tracing

        readscale.tracing.disable()


def test_observability_shared_metrics(tmp_path: Path) -> None:
    from readscale import Cache, CachePolicy, MemoryStore

    cache = Cache(l1=MemoryStore(10), policy=CachePolicy(name="docs", ttl=60.0))
    where = str(tmp_path / "metrics")
    ns = run_sync("docs/observability.md#several-worker-processes", {"cache": cache}, {"/run/myservice/metrics": where})
    shared = ns["shared"].start()
    try:
        cache.get("nothing")
        assert 'readscale_cache_misses_total{cache="cache",tier="l1"} 1.0' in shared.exposition().decode()
        assert list((tmp_path / "metrics").glob("*/*.json"))  # its snapshot, for the other workers
    finally:
        shared.stop()


@pytest.mark.anyio
async def test_http_in_short() -> None:
    import httpx
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse

    @dataclass
    class Product:
        id: int
        version: int

        def as_dict(self) -> dict[str, int]:
            return {"id": self.id, "version": self.version}

    class Repo:
        async def get(self, pid: str) -> Product:
            return Product(int(pid), 3)

    app = Starlette()
    ns = await run_async("docs/http.md#in-short", {"repo": Repo(), "JSONResponse": JSONResponse, "app": app})
    app.add_route("/products/{id}", ns["product"])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://shop.test") as client:
        first = await client.get("/products/1")
        assert first.status_code == 200 and first.json() == {"id": 1, "version": 3}
        assert first.headers["cache-control"].startswith("public, max-age=60")
        assert "max-age=600" in first.headers["cdn-cache-control"]
        assert "product:1" in first.headers["xkey"]
        again = await client.get("/products/1", headers={"if-none-match": first.headers["etag"]})
        assert again.status_code == 304


@pytest.mark.stack
@pytest.mark.anyio
async def test_replicas_in_short(items: Stack) -> None:
    r1, r2 = (r.dsn for r in items.replicas)
    ns = await run_async("docs/replicas.md#in-short", {"PRIMARY_DSN": items.primary.dsn, "R1_DSN": r1, "R2_DSN": r2})
    assert tuple(ns["row"]) == (9,)  # "sees 9"
    assert _price(items) == 9


@pytest.mark.stack
@pytest.mark.anyio
async def test_write_behind_intro(docs_durable_redis_url: str) -> None:
    ns = await run_async(
        "docs/write-behind.md#write-behind-modes-promises-counters", {"REDIS_URL": docs_durable_redis_url}
    )
    cache, wb = ns["cache"], ns["wb"]
    try:
        assert ns["version"] > 0
        assert await cache.get("user:42") == {"name": "Ada"}
        assert await wb.queue_length() == 2  # the value and the counter, queued for the flusher
    finally:
        await cache.aclose()


@pytest.mark.stack
@pytest.mark.anyio
async def test_write_behind_in_short(docs_durable_redis_url: str) -> None:
    ns = await run_async("docs/write-behind.md#in-short", {"REDIS_URL": docs_durable_redis_url})
    cache, wb = ns["cache"], ns["wb"]
    try:
        assert ns["version"] > 0
        assert await cache.get("user:42") == {"name": "Ada"}  # as the block's comment says
        assert await wb.queue_length() == 2
    finally:
        await cache.aclose()


# -- the local stack -------------------------------------------------------------------------


@pytest.mark.stack
@pytest.mark.slow
def test_stack_from_python(capsys: pytest.CaptureFixture[str]) -> None:
    """The block as written, in a folder of the test's own instead of /tmp/my-stack."""
    base = new_stack_root("readscale-docs-")
    try:
        root = str(base / "my-stack")
        ns = run_sync("docs/stack.md#the-local-stack-and-the-pytest-fixtures", {}, {"/tmp/my-stack": root})
        out = capsys.readouterr().out.splitlines()
        assert out[0].startswith("postgresql://") and out[0].count("postgresql://") == 3  # primary, r1, r2
        assert "redis://" in out[0]
        assert int(out[1]) >= 0  # r1's lag in bytes, while paused
        with pytest.raises(StackError, match="no PostgreSQL primary"):  # the with block took the stack down
            ns["stack"].primary  # noqa: B018
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.stack
def test_stack_fixtures(request: pytest.FixtureRequest) -> None:
    """The block is a test: each argument must be a fixture the plugin provides (pytest
    would resolve them the same way), and it runs with their values."""
    ns = run_sync("docs/stack.md#pytest-fixtures-for-your-own-tests", {})
    test = ns["test_my_repository"]
    names = list(inspect.signature(test).parameters)
    assert names, "the block's test asks for no fixture"
    assert test(**{name: request.getfixturevalue(name) for name in names}) is None


# -- the guides ------------------------------------------------------------------------------


def _json(response: Any) -> Any:
    return response.json() if callable(response.json) else response.json  # httpx, or Flask's client


def _session_reads_its_write(get: Any, post: Any) -> None:
    """A session reads item 1 (seeded at 5), sets it to 9, and reads 9 on its next request."""
    first = get("/items/1")
    assert first.status_code == 200 and _json(first) == {"id": 1, "price": 5}
    assert first.headers["cache-control"].startswith("private")
    assert "set-cookie" not in first.headers  # an anonymous reader gets no cookie
    wrote = post("/items/1?price=9")
    assert wrote.status_code == 200 and "readscale_token=" in wrote.headers.get("set-cookie", "")
    again = get("/items/1")
    assert again.status_code == 200 and _json(again) == {"id": 1, "price": 9}


async def _asgi_session_reads_its_write(app: Any) -> None:
    """Run the app's own lifespan as a server does (its state handed to every request:
    FastAPI's dependencies read the cache and the router from it), then three requests."""
    import anyio
    import httpx

    state: dict[str, Any] = {}
    to_app, app_inbox = anyio.create_memory_object_stream[dict[str, Any]](2)
    app_outbox, from_app = anyio.create_memory_object_stream[dict[str, Any]](2)

    async def with_state(scope: Any, receive: Any, send: Any) -> None:
        await app({**scope, "state": dict(state)}, receive, send)

    lifespan = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": state}
    async with anyio.create_task_group() as tasks, to_app, app_inbox, app_outbox, from_app:
        tasks.start_soon(app, lifespan, app_inbox.receive, app_outbox.send)
        await to_app.send({"type": "lifespan.startup"})
        assert (await from_app.receive())["type"] == "lifespan.startup.complete"
        transport = httpx.ASGITransport(app=with_state)
        async with httpx.AsyncClient(transport=transport, base_url="http://shop.test") as client:
            responses = [
                await client.get("/items/1"),
                await client.post("/items/1?price=9"),
                await client.get("/items/1"),
            ]
        await to_app.send({"type": "lifespan.shutdown"})
        assert (await from_app.receive())["type"] == "lifespan.shutdown.complete"
    replies = iter(responses)
    _session_reads_its_write(lambda _: next(replies), lambda _: next(replies))


@pytest.mark.stack
@pytest.mark.anyio
async def test_fastapi_guide(items: Stack, docs_redis_url: str) -> None:
    ns = await run_async(
        "docs/guides/fastapi.md#a-service-the-cache-the-replicas-and-the-token-between-requests",
        _servers(items, docs_redis_url),
    )
    await _asgi_session_reads_its_write(ns["app"])
    assert _price(items) == 9


@pytest.mark.stack
@pytest.mark.anyio
async def test_starlette_guide(items: Stack, docs_redis_url: str) -> None:
    ns = await run_async(
        "docs/guides/starlette.md#a-service-the-cache-the-replicas-and-the-token-between-requests",
        _servers(items, docs_redis_url),
    )
    await _asgi_session_reads_its_write(ns["app"])
    assert _price(items) == 9


@pytest.mark.stack
def test_flask_guide(items: Stack, docs_redis_url: str) -> None:
    ns = run_sync(
        "docs/guides/flask.md#a-service-the-cache-the-replicas-and-the-token-between-requests",
        _servers(items, docs_redis_url),
    )
    try:
        client = ns["app"].test_client()
        _session_reads_its_write(client.get, client.post)
    finally:
        ns["router"].close()
        ns["cache"].close()
    assert _price(items) == 9


@pytest.mark.stack
def test_django_guide_settings(items: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    """settings.py is plain Python: run it, then open the router it configures and read
    through it (Django's own use of these settings runs in tests/django/test_replicas.py)."""
    from readscale import ReplicaRouter

    monkeypatch.setenv("READSCALE_TOKEN_SECRET", "a secret")
    r1, r2 = items.replicas
    ns = run_sync(
        "docs/guides/django.md#settings-replicas-the-causal-token-http-caching",
        {"PRIMARY_PORT": items.primary.port, "R1_PORT": r1.port, "R2_PORT": r2.port},
    )
    settings = ns["READSCALE_REPLICA_SETTINGS"]
    assert [name for name, _ in settings.replica_dsns] == ["r1", "r2"]
    with ReplicaRouter(settings) as router:
        assert tuple(router.fetch_one("SELECT price FROM items WHERE id = 1") or ()) == (5,)
        with router.write() as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    assert ns["READSCALE_TOKEN_SECRET"] == "a secret"


@pytest.mark.stack
def test_django_guide_views(items: Stack, docs_redis_url: str) -> None:
    """The guide's settings and views as one Django process (tests/docs/django_guide.py, in
    a fresh interpreter: Django's settings are process-wide), driven by Django's test client."""
    import json
    import os
    import subprocess

    r1, r2 = items.replicas
    ports = {"primary": items.primary.port, "r1": r1.port, "r2": r2.port}
    env = {**os.environ, "RS_PORTS": json.dumps(ports), "RS_REDIS_URL": docs_redis_url}
    env["READSCALE_TOKEN_SECRET"] = "the docs' Django guide: tests only"
    proc = subprocess.run(
        [sys.executable, "-m", "tests.docs.django_guide"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    first, wrote, again = json.loads(proc.stdout)
    assert (first["status"], first["json"]) == (200, {"id": 1, "price": 5})
    assert first["cache_control"].startswith("private") and not first["set_cookie"]
    assert (wrote["status"], wrote["json"], wrote["set_cookie"]) == (200, {"id": 1, "price": 9}, True)
    assert (again["status"], again["json"]) == (200, {"id": 1, "price": 9})  # the session reads its write
    assert _price(items) == 9


@pytest.mark.stack
def test_sqlalchemy_guide(items: Stack) -> None:
    ns = run_sync("docs/guides/sqlalchemy.md#sqlalchemy", _servers(items, ""))
    assert _price(items) == 9
    engine = ns["Session"].kw["primary"]
    engine.dispose()
    for replica in ns["Session"].kw["replicas"].values():
        replica.dispose()


# -- shell blocks: every command line is one this repository has --------------------------


def _shell_commands() -> list[tuple[str, str]]:
    """(where, command) for every command of every shell block: continuation lines
    joined, comments dropped, ``a && b`` split."""
    commands = []
    for block in python_blocks(SHELLS):
        for line in block.code.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            while words:
                cut = words.index("&&") if "&&" in words else len(words)
                commands.append((f"{block.page}:{block.line}", shlex.join(words[:cut])))
                words = words[cut + 1 :]
    return commands


def _make_targets() -> set[str]:
    return set(re.findall(r"(?m)^([a-z][\w-]*):", (ROOT / "Makefile").read_text()))


def _extras() -> set[str]:
    return set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])


def _parse_cli(args: list[str]) -> str:
    """Parse a ``readscale`` command line as the CLI would, without running it: each
    subcommand exists, each option is known and each value converts. Returns the command."""
    import click
    import typer
    import typer.main

    from readscale.cli._app import app

    def rest_of(ctx: Any) -> list[str]:
        return [*getattr(ctx, "_protected_args", []), *ctx.args]

    command: Any = typer.main.get_command(app)
    try:
        ctx = command.make_context("readscale", list(args))
    except (click.exceptions.Exit, typer.Exit) as done:  # an eager option (--version, --help) answered
        if done.exit_code != 0:
            raise AssertionError(f"readscale {shlex.join(args)} exits {done.exit_code}") from done
        return str(command.name)
    rest = rest_of(ctx)
    while hasattr(command, "resolve_command") and rest:
        name, command, rest = command.resolve_command(ctx, rest)
        ctx = command.make_context(name, rest, parent=ctx)
        rest = rest_of(ctx)
    assert not hasattr(command, "resolve_command"), f"readscale {shlex.join(args)}: a group, not a command"
    assert not rest, f"readscale {shlex.join(args)}: arguments left over: {rest}"
    return str(command.name)


def check_shell_command(command: str) -> None:
    words = shlex.split(command)
    while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", words[0]):  # an environment for the command
        words = words[1:]
    match words:
        case ["make", *targets]:
            assert targets and set(targets) <= _make_targets(), f"no such make target: {command}"
        case ["pip", "install", *specs]:
            for spec in specs:
                m = re.fullmatch(r"readscale\[([\w,]+)\]", spec)
                assert m, f"installs something other than readscale's extras: {spec}"
                assert set(m.group(1).split(",")) <= _extras(), f"no such extra: {spec}"
        case ["readscale", *args]:
            _parse_cli(args)
        case [".venv/bin/python", "-m", "pytest", *args]:
            for arg in args:
                if not arg.startswith("-"):
                    assert (ROOT / arg.split("::")[0]).exists(), f"no such test path: {arg}"
        case _:
            raise AssertionError(f"a command this test cannot check: {command!r} (teach check_shell_command)")


@pytest.mark.parametrize(("where", "command"), _shell_commands(), ids=lambda v: v)
def test_every_shell_command_is_one_this_repository_has(where: str, command: str) -> None:
    check_shell_command(command)


@pytest.mark.parametrize(
    "command",
    [
        "make tests",
        "pip install 'readscale[redis,postgress]'",
        "readscale stak up",
        "readscale stack",
        "readscale writebehind status --redis-urll X",
        "readscale sim --rps many",
        ".venv/bin/python -m pytest tests/no_such_dir",
        "curl http://example.test",
        "PYTHONPATH=build readscale stak up",
    ],
)
def test_a_wrong_shell_command_is_caught(command: str) -> None:
    with pytest.raises(BaseException) as info:  # the CLI's own usage errors, or ours
        check_shell_command(command)
    assert not isinstance(info.value, KeyboardInterrupt)


def test_the_simulator_page_shows_what_the_simulator_prints() -> None:
    """docs/sim.md's funnel table is the output of its first command, row for row (the model
    is pure: same settings, same figures)."""
    import os
    import subprocess

    page = (ROOT / "docs" / "sim.md").read_text()
    rows = [line for line in page.splitlines() if line.startswith(("┃ layer", "│ "))]
    assert len(rows) == 6, rows
    assert "readscale sim --example textbook" in page
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    out = subprocess.run(
        [sys.executable, "-c", "from readscale.cli import main; main()", "sim", "--example", "textbook"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        timeout=120,
    ).stdout
    printed = {line.strip() for line in out.splitlines()}
    missing = [row for row in rows if row.strip() not in printed]
    assert not missing, "docs/sim.md shows rows `readscale sim --example textbook` does not print:\n" + "\n".join(
        missing
    )


def test_the_decision_table_names_functions_that_exist() -> None:
    """docs/how-it-works.md's table: each function is defined in the module named."""
    rows = re.findall(
        r"(?m)^\| [^|]+ \| (`.+?`) \| `(_core/[\w/]+\.py)` \|$", (ROOT / "docs/how-it-works.md").read_text()
    )
    assert len(rows) >= 15
    for names, module in rows:
        source = (ROOT / "src" / "readscale" / module).read_text()
        for name in re.findall(r"`(\w+)`", names):
            assert re.search(rf"(?m)^(def|class) {name}\b", source), f"{module} defines no {name}"


def test_the_blocks_are_found() -> None:
    # The parser itself: a page's blocks, and the anchors they are named by.
    assert "README.md#a-short-tour" in BLOCKS
    assert BLOCKS["README.md#a-short-tour"].code.startswith("from readscale import")
    assert not any("```" in b.code for b in BLOCKS.values())
    assert asyncio.iscoroutinefunction(run_async)
