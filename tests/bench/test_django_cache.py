"""``readscale bench cache``'s Django part runs every contender on a real Redis and both
backends hold the same values (its figures are times: never asserted here)."""

from __future__ import annotations

import ast
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.stack]

CODE = """
import sys
from readscale.bench import _django_cache
from readscale.bench.cache import DOC
found = _django_cache.measure(sys.argv[1], DOC, 20, 2)
rows = [(op, name, len(wall.values), len(cpu.values)) for op, per in found.items() for name, (wall, cpu) in per.items()]
print(sorted(rows))
"""


def test_bench_django_cache_measures_each_contender(redis_url: str) -> None:
    url = redis_url.rsplit("/", 1)[0] + "/9"
    run = subprocess.run([sys.executable, "-c", CODE, url], capture_output=True, text=True, check=False, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    rows = ast.literal_eval(run.stdout.strip().splitlines()[-1])
    assert rows == [
        ("get", "django_redis", 2, 2),
        ("get", "readscale", 2, 2),
        ("get", "readscale_l1", 2, 2),
        ("get_many_100", "django_redis", 2, 2),
        ("get_many_100", "readscale", 2, 2),
        ("set", "django_redis", 2, 2),
        ("set", "readscale", 2, 2),
    ]
