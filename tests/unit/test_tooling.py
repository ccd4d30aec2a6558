"""The repository's own tooling: the layer check and the unasync rewrite."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]


def load_script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_core_is_pure_and_layers_point_one_way() -> None:
    assert load_script("check_layers").check() == []


def test_layer_check_catches_an_impure_core(tmp_path: Path) -> None:
    checker = load_script("check_layers")
    import ast

    tree = ast.parse("import time\nfrom redis import Redis\nx = datetime.now()\n")
    found = [m for _, m in checker.imports(tree) if checker.forbidden(m, checker.CORE_FORBIDDEN)]
    assert found == ["time", "redis"]


def test_unasync_rewrites_async_code() -> None:
    unasync = load_script("unasync")
    cases = {
        "class AsyncCache(AsyncBase):\n": "class Cache(Base):\n",
        "    async def get(self) -> AsyncIterator[int]:\n": "    def get(self) -> Iterator[int]:\n",
        "        await self._redis.aclose()\n": "        self._redis.close()\n",
        "import redis.asyncio as aioredis\n": "import redis as aioredis\n",
        "    @pytest.mark.anyio\n": "",
        "from readscale._async.cache import AsyncCache\n": "from readscale._sync.cache import Cache\n",
        "    async with self._lock:\n": "    with self._lock:\n",
        "    async for item in stream:\n": "    for item in stream:\n",
        "    def __aenter__(self):\n": "    def __enter__(self):\n",
        "asyncio_mode = 1\n": "asyncio_mode = 1\n",
    }
    for source, expected in cases.items():
        assert unasync.unasync_line(source) == expected, source


def test_generated_sync_code_is_up_to_date() -> None:
    assert load_script("unasync").main(["--check"]) == 0
