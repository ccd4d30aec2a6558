"""``readscale consistency check``: compare the cache with the database for sampled keys."""

from __future__ import annotations

import importlib
import inspect
import random
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from readscale.cli._output import console, errors_to_exit, print_json, usage_error

app = typer.Typer(help="Measure how often the cache disagrees with the database.", no_args_is_help=True)


def _load_truth(spec: str) -> Any:
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        usage_error(f"--truth must look like 'package.module:function', got {spec!r}")
    if "" not in sys.path and "." not in sys.path:
        sys.path.insert(0, "")  # like uvicorn: your modules are importable from where you run it
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        usage_error(f"cannot load --truth {spec!r}: {exc}")
    if inspect.iscoroutinefunction(fn):
        usage_error(f"--truth {spec!r} is async; this command runs sync code: give it a plain function")
    return fn


@app.command()
def check(
    truth: Annotated[str, typer.Option(help="'module:function' returning the database's value for a key.")],
    keys: Annotated[Path, typer.Option(exists=True, dir_okay=False, help="File with one cache key per line.")],
    redis_url: Annotated[
        str, typer.Option(envvar="READSCALE_REDIS_URL", help="The cache's Redis (credentials, TLS: READSCALE_REDIS_*).")
    ] = "redis://127.0.0.1:6379/0",
    prefix: Annotated[str, typer.Option(help="The cache's key prefix.")] = "rs:",
    namespace: Annotated[str, typer.Option(help="The keys' namespace.")] = "",
    samples: Annotated[int, typer.Option(min=1, help="How many keys to check (a random sample).")] = 1000,
    seed: Annotated[int | None, typer.Option(help="Seed of the sample.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Check a random sample of keys now and print the stale rate in nines."""
    from readscale import RedisSettings
    from readscale._core.cache.policy import CachePolicy
    from readscale._sync.backends.redis import RedisBackend
    from readscale._sync.cache.cache import Cache
    from readscale._sync.consistency import ConsistencyChecker

    with errors_to_exit():
        all_keys = [line.strip() for line in keys.read_text().splitlines() if line.strip()]
        if not all_keys:
            usage_error(f"--keys: {keys} holds no keys")
        chosen = random.Random(seed).sample(all_keys, min(samples, len(all_keys)))
        truth_fn = _load_truth(truth)
        cache = Cache(RedisBackend(RedisSettings.from_env(url=redis_url)), prefix=prefix)
        policy = CachePolicy(name="check", namespace=namespace)
        checker = ConsistencyChecker(cache, truth_fn)
        for key in chosen:
            checker.check(key, policy=policy)
        report = checker.report()
        cache.close()
        data = {
            "checked": report.checked,
            "stale": report.stale,
            "misses": report.misses,
            "stale_rate": report.stale_rate,
            "nines": round(report.nines, 2),
            "nines_is_lower_bound": report.nines_is_lower_bound,
            "stale_keys": checker.stale_keys[:20],
        }
        if as_json:
            print_json(data)
            return
        table = Table(title="readscale consistency check")
        for column in ("checked", "stale", "misses", "stale rate", "nines"):
            table.add_column(column, justify="right")
        nines = f"{'>= ' if report.nines_is_lower_bound else ''}{report.nines:.2f}"
        table.add_row(str(report.checked), str(report.stale), str(report.misses), f"{report.stale_rate:.4%}", nines)
        console.print(table)
        if checker.stale_keys:
            console.print("stale keys (first 20): " + ", ".join(checker.stale_keys[:20]))
