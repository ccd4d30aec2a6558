"""The processes of a consistency run beside its sessions: the service processes
(``python -m readscale.bench.consistency.service``), the CDC worker's cache with its
witness, and the write-behind flusher."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from readscale.bench.consistency.config import CONFIG_ENV, ServiceConfig
from readscale.stack import Stack

__all__ = ["WITNESS", "Services", "cdc_backend", "start_flusher", "witness_cache"]

WITNESS = "cons-witness:"


class Services:
    """The service processes of one run."""

    def __init__(self, configs: Sequence[ServiceConfig], workdir: Path) -> None:
        self.configs = list(configs)
        self.workdir = workdir
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: list[Path] = []

    def start(self) -> None:
        root = Path(__file__).resolve().parents[3]
        for config in self.configs:
            log = self.workdir / f"{config.name}.log"
            self.logs.append(log)
            env = {**os.environ, CONFIG_ENV: config.to_json(), "PYTHONPATH": str(root)}
            with log.open("wb") as out:
                self.procs.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "readscale.bench.consistency.service"],
                        env=env,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )

    async def ready(self, client: Any, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        for proc, config, log in zip(self.procs, self.configs, self.logs, strict=True):
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"service {config.name} exited: {log.read_text()[-3000:]}")
                with contextlib.suppress(Exception):
                    response = await client.get(f"http://127.0.0.1:{config.port}/health", timeout=1.0)
                    if response.status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"service {config.name} not ready in {timeout:g}s: {log.read_text()[-3000:]}")
                await asyncio.sleep(0.1)

    async def stats(self, client: Any) -> list[dict[str, Any]]:
        out = []
        for config in self.configs:
            try:
                response = await client.get(f"http://127.0.0.1:{config.port}/stats", timeout=5.0)
                out.append({"proc": config.name, **response.json()})
            except Exception as exc:  # a stats call is diagnostics, never the verdict
                out.append({"proc": config.name, "error": str(exc)})
        return out

    def stop(self) -> dict[str, str]:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return {log.stem: log.read_text(errors="replace")[-20000:] for log in self.logs if log.exists()}


def cdc_backend(stack: Stack, kind: str, redis_url: str) -> Any:
    """An async cache backend of ``kind`` on the stack (the CDC worker's)."""
    from readscale import RedisSettings
    from readscale.backends import AsyncMemcachedBackend, AsyncRedisBackend, AsyncRedisClusterBackend

    if kind == "memcached":
        return AsyncMemcachedBackend(stack.memcached.address)
    if kind == "cluster":
        return AsyncRedisClusterBackend(RedisSettings(url=stack.cluster_nodes[0].url))
    return AsyncRedisBackend(RedisSettings(url=redis_url))


# -- the CDC worker and its witness --------------------------------------------------------------


def witness_cache(base: Any, applied: dict[tuple[int, int], float]) -> Any:
    """The CDC worker's cache, noting when each row version's invalidation was applied.

    The worker invalidates a batch's keys, then its tags; a witness tag per row version
    (``cons-witness:{id}:{version}``, rendered by the CDC rule from the new row) arrives
    with the tags, after the keys, so its time is when that version's invalidation had
    completed. Witness tags are noted, never bumped."""

    class WitnessCache(base):  # type: ignore[misc]
        async def invalidate_tags(self, *tags: str) -> dict[str, int]:
            real = [t for t in tags if not t.startswith(WITNESS)]
            result: dict[str, int] = await super().invalidate_tags(*real) if real else {}
            now = time.monotonic()
            for tag in tags:
                if tag.startswith(WITNESS):
                    key, version = tag[len(WITNESS) :].split(":")
                    applied.setdefault((int(key), int(version)), now)
            return result

    return WitnessCache


async def start_flusher(stack: Stack, redis_url: str, prefix: str, queue: str, table: str) -> tuple[Any, Any]:
    """The write-behind flusher of a run, as ``readscale writebehind run`` would run it:
    it writes each key's newest queued value to ``table``'s ``val`` (volatile mode: the
    harness's Redis has no persistence)."""
    from readscale._async.writebehind.flusher import AsyncFlusher
    from readscale._async.writebehind.postgres import AsyncPostgresWriter
    from readscale._core.writebehind.settings import FlusherSettings

    writer = AsyncPostgresWriter(stack.primary.dsn, table=table, key_column="id", value_column="val", key_from=_wb_id)
    settings = FlusherSettings(queue=queue, prefix=prefix, mode="volatile", block=0.1, batch_wait=0.02)
    flusher = AsyncFlusher(writer, redis_url, settings=settings)
    await flusher.start()
    return flusher, asyncio.ensure_future(flusher.run())


def _wb_id(key: str) -> int:
    return int(key.rsplit(":", 1)[1])  # "wbitem:7" -> 7
