"""``@cached`` keeps its types under ``mypy --strict`` (issue 15): on a function, on a method
(bound through the descriptor, ``self`` left out of the call) and on a classmethod
(``@cache.cached`` over ``@classmethod``, reached through the class or an instance), async
and sync. mypy runs on a snippet; what it reveals is compared, and the one wrong call in
it must be its only error (before, a cached method typed as ``Any``)."""

from __future__ import annotations

import re
import sys
import textwrap
from pathlib import Path

from mypy import api

SNIPPET = """
from __future__ import annotations

import dataclasses

from readscale import AsyncCache, Cache, MemoryStore

acache = AsyncCache(None, l1=MemoryStore(10))
cache = Cache(None, l1=MemoryStore(10))


@dataclasses.dataclass
class Profile:
    id: int


@acache.cached("p:{user_id}")
async def load(user_id: int) -> Profile:
    return Profile(user_id)


class Users:
    @acache.cached("u:{user_id}")
    async def get(self, user_id: int, verbose: bool = False) -> Profile:
        return Profile(user_id)

    @acache.cached("c:{user_id}")
    @classmethod
    async def get_cls(cls, user_id: int) -> Profile:
        return Profile(user_id)

    @cache.cached("s:{user_id}")
    def get_sync(self, user_id: int) -> list[Profile]:
        return [Profile(user_id)]


@acache.cached("k:{user_id}")
async def by_kind(kind: type[Users], user_id: int) -> Profile:
    return Profile(user_id)


async def main() -> None:
    users = Users()
    reveal_type(await load(1))
    reveal_type(await users.get(1, verbose=True))
    reveal_type(users.get)
    reveal_type(await users.get.invalidate(1))
    reveal_type(await users.get_cls(1))
    reveal_type(await Users.get_cls(1))
    reveal_type(Users.get_cls.key)
    reveal_type(await Users.get_cls.invalidate(1))
    reveal_type(await by_kind(Users, 2))
    reveal_type(users.get_sync(1))
    reveal_type(users.get_sync.refresh(1))
    reveal_type(Users.get_sync)
    await users.get("1")  # the one error
"""

EXPECTED = [
    "snippet.Profile",
    "snippet.Profile",
    "readscale._async.cache.cached.AsyncBoundCachedFunction[[user_id: int, verbose: bool =], snippet.Profile]",
    "builtins.bool",
    "snippet.Profile",
    "snippet.Profile",
    "def (user_id: builtins.int) -> builtins.str",
    "builtins.bool",
    "snippet.Profile",
    "builtins.list[snippet.Profile]",
    "builtins.list[snippet.Profile]",
    "readscale._sync.cache.cached.CachedFunction[[self: snippet.Users, user_id: int], list[snippet.Profile]]",
]


def test_cached_keeps_its_types_under_mypy_strict(tmp_path: Path) -> None:
    snippet = tmp_path / "snippet.py"
    snippet.write_text(textwrap.dedent(SNIPPET))
    root = Path(__file__).resolve().parents[2]
    limit = sys.getrecursionlimit()
    try:
        out, err, _ = api.run(
            ["--strict", "--no-error-summary", "--config-file", str(root / "pyproject.toml"),
             "--cache-dir", str(root / ".mypy_cache"), str(snippet)]
        )  # fmt: skip
    finally:  # mypy raises it in-process; a later test relies on the default (a deep value is refused)
        sys.setrecursionlimit(limit)
    revealed = [t.replace("builtins.", "") for t in re.findall(r'Revealed type is "(.*)"', out)]
    assert revealed == [t.replace("builtins.", "") for t in EXPECTED], out + err
    errors = [line for line in out.splitlines() if ": error:" in line]
    assert len(errors) == 1, out + err
    assert '"str"; expected "int"' in errors[0], errors
