"""The repository's own tooling: the unasync rewrite (the layer check: test_layers.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def load_script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_unasync_rewrites_async_code() -> None:
    unasync = load_script("unasync")
    cases = {
        "class AsyncCache(AsyncBase):\n": "class Cache(Base):\n",
        "    async def get(self) -> AsyncIterator[int]:\n": "    def get(self) -> Iterator[int]:\n",
        "        await self._redis.aclose()\n": "        self._redis.close()\n",
        "import redis.asyncio as aioredis\n": "import redis as aioredis\n",
        "    @pytest.mark.anyio\n": "",
        "from readscale._async.cache.cache import AsyncCache\n": "from readscale._sync.cache.cache import Cache\n",
        "    async with self._lock:\n": "    with self._lock:\n",
        "    async for item in stream:\n": "    for item in stream:\n",
        "    def __aenter__(self):\n": "    def __enter__(self):\n",
        "asyncio_mode = 1\n": "asyncio_mode = 1\n",
    }
    for source, expected in cases.items():
        assert unasync.unasync_line(source) == expected, source


def test_generated_sync_code_is_up_to_date() -> None:
    assert load_script("unasync").main(["--check"]) == 0


def test_unasync_check_fails_on_a_rule_that_rewrites_nothing(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    unasync = load_script("unasync")
    assert unasync.unused_rules() == []
    rule = (r"\bStopAsyncIteration\b", "StopIteration")
    monkeypatch.setattr(unasync, "SUBS", [*unasync.SUBS, rule])
    monkeypatch.setattr(unasync, "COMPILED", [*unasync.COMPILED, (unasync.re.compile(rule[0]), rule[1])])
    assert unasync.unused_rules() == [rule[0]]
    monkeypatch.setattr(unasync, "expected_files", dict)  # the generated files are checked above
    monkeypatch.setattr(unasync, "generated_files", set)
    assert unasync.main(["--check"]) == 1
    assert "rewrites nothing in any source: remove it" in capsys.readouterr().out


def test_layout_plan_check_names_what_the_tables_miss(tmp_path: Path) -> None:
    facts = load_script("layout_facts")
    plan = tmp_path / "plan.md"
    plan.write_text(
        "| old | new |\n|---|---|\n| `errors.py` | `errors.py` |\n| `gone.py` | `x.py` |\n| `errors.py` | `y.py` |\n"
        "| `moved.py` | `settings.py`, `gone_too.py` |\n"
        "| (new) | `metrics.py` |\n"
        "\nnot a table\n| `codecs.py` | outside the tables: not counted |\n"
    )
    gaps = facts.plan_gaps(plan)
    assert "not in the plan: codecs.py" in gaps
    assert "not in the plan: tests/tooling/test_unasync.py" in gaps
    assert "in the plan, not in the tree: gone.py" in gaps
    assert "listed 2 times: errors.py" in gaps
    # A row whose old path is gone and one of whose new paths exists is a move done.
    assert not any(g.endswith((": moved.py", ": settings.py")) for g in gaps)
    # A row "(new)" puts a file the move adds in the plan.
    assert "not in the plan: metrics.py" not in gaps
    assert not any(g.endswith(": errors.py") and g.startswith("not in") for g in gaps)
