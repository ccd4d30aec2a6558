"""Redis and Redis Cluster backends (redis-py), with leases and fill notifications.

Leases (the memcache lease design, on Redis): a miss runs one Lua script that returns
the value if present or sets ``{key}:lease`` with ``SET NX PX`` and a random token. The
winner's fill is another script: store the value only if the lease still holds its
token, delete the lease, and ``PUBLISH`` the key on the fill channel. Every process keeps
one subscription to that channel, so waiters are woken by the fill itself, not by a sleep
loop. The lease key shares the entry's cluster slot (``readscale._core.cache.keys``), so the
scripts work on Redis Cluster; there, ``PUBLISH`` reaches subscribers on every node.

The scripts are in ``_redis_scripts``; leases, tickets, fills and the wait for a fill (the
subscription and its waiters) in ``_redis_fills``.

Errors of redis-py (including ``RedisClusterException``, which is not a ``RedisError``)
and of sockets become :class:`CacheUnavailableError` here; nothing else escapes.
"""

from __future__ import annotations

import contextlib
import logging
import re
import secrets
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

import redis.asyncio.cluster as redis_asyncio_cluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ResponseError

from readscale._async.backends import _redis_scripts
from readscale._async.backends._redis_fills import COMMAND_ERRORS as _COMMAND_ERRORS
from readscale._async.backends._redis_fills import ERRORS as _ERRORS
from readscale._async.backends._redis_fills import AsyncRedisFills
from readscale._async.backends._redis_fills import lease_keys as _lease_keys
from readscale._async.backends._redis_fills import ms as _ms
from readscale._core.cache.fill import PRIMARY_ONLY
from readscale._core.cache.keys import companion_key
from readscale._core.cache.lease import TICKET_PREFIX, LeaseResult
from readscale._core.postgres.lsn import lsn_text, parse_lsn_text
from readscale._shared.redis_clients import async_redis_client
from readscale._shared.redis_errors import closed_transport_race
from readscale._shared.redis_lane import AsyncRedisLane
from readscale.errors import CacheUnavailableError, ConfigurationError, ValueTooLargeError
from readscale.settings import RedisSettings

log = logging.getLogger("readscale.cache")

FILL_CHANNEL = "readscale:fill"
#: Redis refuses strings over 512 MB; far below that, proto-max-bulk-len is the limit.
REDIS_MAX_VALUE = 512 * 1024 * 1024


def _floor_key(counter: str) -> str:
    """The floor beside a version counter, in the counter's cluster slot."""
    return companion_key(counter, "floor")


def _floor_text(lsn: int | None) -> str:
    return lsn_text(PRIMARY_ONLY if lsn is None else lsn)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _run_of(info: Any) -> tuple[str | None, float | None]:
    """The ``run_id`` and ``uptime_in_seconds`` of an ``INFO server`` reply (a string, or
    parsed into a dict)."""
    if isinstance(info, dict):
        fields = {_text(k): _text(v) for k, v in info.items()}
    else:
        fields = dict(line.split(":", 1) for line in _text(info).splitlines() if ":" in line)
    run_id = fields.get("run_id")
    uptime = fields.get("uptime_in_seconds", "").strip()
    return (None if run_id is None else run_id.strip()), (float(uptime) if uptime.isdigit() else None)


def _config_values(found: Any) -> list[tuple[str, str]]:
    """``(maxmemory-policy, maxmemory)`` per server from CONFIG GET (one dict, or one per
    cluster node)."""
    if not isinstance(found, dict):
        return []
    nested = [v for v in found.values() if isinstance(v, dict)]
    out = []
    for one in nested or [found]:
        plain = {_text(k): _text(v) for k, v in one.items()}
        if "maxmemory-policy" in plain:
            out.append((plain["maxmemory-policy"], plain.get("maxmemory", "")))
    return out


class AsyncRedisBackend:
    """Redis (standalone) as a cache backend. Pass ``settings`` or a ready ``client``."""

    name = "redis"
    #: Scripts can be pipelined (redis-py loads them first); a cluster pipeline cannot.
    _pipelines_scripts = True
    #: GET and MGET run on kept connections (``readscale._shared.redis_lane``); a cluster
    #: client has no single pool to keep them from.
    _uses_lane = True
    supports_leases = True
    supports_tombstones = True

    def __init__(
        self,
        settings: RedisSettings | None = None,
        *,
        client: Any | None = None,
        fill_channel: str = FILL_CHANNEL,
        max_value_size: int | None = None,
    ) -> None:
        self.settings = settings or RedisSettings()
        self._client: Any = client if client is not None else self._make_client()
        # The gate callers queue at, and the lane of reads: only on a client made here
        # (one given may be shared, configured otherwise, or not redis-py's).
        pool = self._client.connection_pool if client is None and self._uses_lane else None
        self._limit = AsyncRedisLane(
            self.settings.max_connections, timeout=self.settings.pool_timeout_ms / 1000, pool=pool
        )
        self._lane = self._limit if pool is not None else None
        self._channel = fill_channel
        self.max_value_size = max_value_size
        #: Called when a new connection finds another server run (a restart or a failover,
        #: :meth:`_on_connect`): the cache's L2 gate, whose tombstones may be gone.
        self.restart_listeners: list[Callable[[float | None], None]] = []
        self._run_id: str | None = None
        self._invalidate_script = self._client.register_script(_redis_scripts.INVALIDATE)
        self._invalidate_for_write_script = self._client.register_script(_redis_scripts.INVALIDATE_FOR_WRITE)
        self._bump_script = self._client.register_script(_redis_scripts.BUMP)
        self._swap_script = self._client.register_script(_redis_scripts.SWAP)
        self._fills = AsyncRedisFills(
            self._client,
            fill_channel,
            self._limit,
            pipelines=self._pipelines_scripts,
            unavailable=self._unavailable,
            check_size=self._check_size,
        )

    @classmethod
    def from_url(cls, url: str, **settings: Any) -> AsyncRedisBackend:
        return cls(RedisSettings(url=url, **settings))

    def _make_client(self) -> Any:
        # Callers queue for a connection at the gate (self._limit, up to pool_timeout)
        # instead of failing under a burst: a semaphore costs far less per call than
        # redis-py's blocking pool (~8 us on the async hit path here). One quick retry
        # replaces a connection the server closed (after a restart) without paying
        # redis-py's long default backoff on a dead server.
        # One connection more than the gate lets commands use: the fill listener's pub/sub.
        # A Sentinel URL gives a pool that asks for the current master (redis_clients).
        # Each new connection reads the server's run id (_on_connect): a restart that the
        # retry hides from every call is still seen.
        return async_redis_client(
            self.settings,
            retry=Retry(NoBackoff(), 1),
            max_connections=self.settings.max_connections + 1,
            redis_connect_func=self._on_connect,
        )

    async def _on_connect(self, conn: Any) -> None:
        """redis-py's handshake, then the server's run id: another one than the last
        connection's means the server restarted (or a failover chose another), and what it
        held may be gone, tombstones included. A Redis killed and restarted while this process sat idle is
        otherwise invisible: the one retry reconnects and every call succeeds (found
        reviewing the fix for consistency seed 175)."""
        await conn.on_connect()
        await conn.send_command("INFO", "server")
        try:
            run_id, _ = _run_of(await conn.read_response())
        except ResponseError as exc:  # an ACL without INFO: restarts are seen by failed calls only
            self._cannot_see_restarts(f"INFO refused ({exc})")
            return
        if run_id is None:
            self._cannot_see_restarts("INFO server has no run_id")
            return
        previous = self._run_id
        if previous != run_id:
            # The listeners first: another thread's connection that sees the new id
            # recorded finds the window already open.
            # Only a change: a first connection to a young server opens nothing. Taking a
            # young server for a restarted one held every fill of a freshly started service
            # to 1 s for its first 35 s, and with the primary down then (replicas' staleness
            # unknown) every fill failed: the chaos primary case, 130 failed reads.
            if previous is not None:  # a new run: the whole of a tombstone's life
                for listener in self.restart_listeners:
                    listener(None)
            self._run_id = run_id

    def _cannot_see_restarts(self, why: str) -> None:
        if self._run_id is not None:
            return
        self._run_id = ""
        log.warning(
            "redis: %s: a restart no call fails on goes unseen, and the cache cannot hold fills "
            "to fresh reads after it; allow INFO for this user",
            why,
            extra={"event": "redis_info_refused", "backend": self.name, "reason": why},
        )

    @property
    def fill_channel(self) -> str:
        """The channel fills (and anything else that settles a lease) are published on."""
        return self._channel

    @property
    def client(self) -> Any:
        """The underlying redis-py client (for commands readscale does not wrap)."""
        return self._client

    def _unavailable(self, action: str, exc: BaseException) -> CacheUnavailableError:
        if isinstance(exc, AttributeError | TypeError) and not closed_transport_race(exc):
            raise exc  # a bug, not an outage: never disguised as one
        busy = "No connection available" in str(exc) or "Too many connections" in str(exc)
        return CacheUnavailableError(
            f"{self.name} {action} failed on {self.settings.safe_url}: {type(exc).__name__}: {exc}",
            backend=self.name,
            busy=busy,
        )

    def _check_size(self, key: str, value: bytes) -> None:
        limit = self.max_value_size
        if limit is not None and len(value) > limit:
            raise ValueTooLargeError(key, len(value), limit)

    # -- the protocol ----------------------------------------------------------------------

    async def get(self, key: str) -> bytes | None:
        lane = self._lane
        try:
            if lane is not None:
                return await lane.get(key)
            async with self._limit:
                value: bytes | None = await self._client.get(key)
        except _COMMAND_ERRORS as exc:
            raise self._unavailable("GET", exc) from exc
        return value

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        if not keys:
            return []
        lane = self._lane
        try:
            if lane is not None:
                return await lane.mget(list(keys))
            async with self._limit:
                values: list[bytes | None] = await self._client.mget(keys)
        except _COMMAND_ERRORS as exc:
            raise self._unavailable("MGET", exc) from exc
        return values

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        self._check_size(key, value)
        try:
            async with self._limit:
                await self._client.set(key, value, px=_ms(ttl))
        except _COMMAND_ERRORS as exc:
            raise self._unavailable("SET", exc) from exc

    async def set_many(self, items: Sequence[tuple[str, bytes, float]]) -> None:
        if not items:
            return
        for key, value, _ in items:
            self._check_size(key, value)
        try:
            async with self._limit, self._client.pipeline(transaction=False) as pipe:
                for key, value, ttl in items:
                    pipe.set(key, value, px=_ms(ttl))
                await pipe.execute()
        except _COMMAND_ERRORS as exc:
            raise self._unavailable("SET (pipeline)", exc) from exc

    async def delete(self, key: str) -> bool:
        try:
            async with self._limit:
                return bool(await self._client.delete(key))
        except _COMMAND_ERRORS as exc:
            raise self._unavailable("DEL", exc) from exc

    async def delete_many(self, keys: Sequence[str]) -> int:
        if not keys:
            return 0
        try:
            async with self._limit:
                return int(await self._client.delete(*keys))
        except _COMMAND_ERRORS as exc:
            raise self._unavailable("DEL", exc) from exc

    async def ping(self) -> None:
        try:
            async with self._limit:
                await self._client.ping()
        except _COMMAND_ERRORS as exc:
            raise self._unavailable("PING", exc) from exc

    # -- single-key writes of a cache-contract face (Django's add, incr, touch, clear) -------

    async def add(self, key: str, value: bytes, ttl: float) -> bool:
        """Store ``value`` only if ``key`` holds nothing (``SET NX``); whether it was stored."""
        self._check_size(key, value)
        try:
            async with self._limit:
                return bool(await self._client.set(key, value, px=_ms(ttl), nx=True))
        except _COMMAND_ERRORS as exc:
            raise self._unavailable("SET NX", exc) from exc

    async def swap(self, key: str, expected: bytes, value: bytes, ttl: float) -> bool:
        """Replace ``key``'s value with ``value`` only if it still is ``expected`` (one
        script: a compare and set); whether it was replaced."""
        self._check_size(key, value)
        try:
            async with self._limit:
                return bool(await self._swap_script(keys=[key], args=[expected, value, _ms(ttl)]))
        except _COMMAND_ERRORS as exc:
            raise self._unavailable("SWAP", exc) from exc

    async def clear(self, prefix: str) -> int:
        """Delete every key starting with ``prefix`` (``SCAN``, then ``DEL``; on a cluster,
        on every primary). Not atomic: a key written meanwhile may survive. How many went."""
        pattern = re.sub(r"([*?\[\]\\])", r"\\\1", prefix) + "*"
        try:
            async with self._limit:
                found = [key.decode() async for key in self._client.scan_iter(match=pattern, count=1000)]
        except _COMMAND_ERRORS as exc:
            raise self._unavailable("SCAN", exc) from exc
        removed = 0
        for start in range(0, len(found), 500):
            removed += await self.delete_many(found[start : start + 500])
        return removed

    # -- fill rights and fills: _redis_fills ------------------------------------------------

    async def lease(self, key: str, ttl: float) -> LeaseResult:
        return await self._fills.lease(key, ttl)

    async def refresh_lease(self, key: str, ttl: float) -> str | None:
        """Take the fill lease of a key that still has a (stale) value, so exactly one
        process refreshes it in the background; the token, or None if someone else has it."""
        return await self._fills.refresh_lease(key, ttl)

    async def ticket(self, key: str, ttl: float) -> LeaseResult:
        return await self._fills.ticket(key, ttl)

    async def ticket_many(self, keys: Sequence[str], ttl: float) -> list[LeaseResult]:
        return await self._fills.ticket_many(keys, ttl)

    async def fill_many(self, items: Sequence[tuple[str, bytes, float, str, int | None]]) -> list[bool]:
        return await self._fills.fill_many(items)

    async def fill(self, key: str, value: bytes, ttl: float, token: str, lsn: int | None = None) -> bool:
        return await self._fills.fill(key, value, ttl, token, lsn)

    async def release(self, key: str, token: str) -> None:
        await self._fills.release(key, token)

    async def wait_for_fill(self, key: str, timeout: float) -> bool:
        return await self._fills.wait_for_fill(key, timeout)

    # -- invalidation and counters ---------------------------------------------------------

    async def invalidate(self, keys: Sequence[str], *, lsn: int | None = None, tombstone_ttl: float = 35.0) -> int:
        if not keys:
            return 0
        args = [_floor_text(lsn), _ms(tombstone_ttl), self._channel]
        try:
            async with self._limit:
                results = [await self._invalidate_script(keys=_lease_keys(key), args=args) for key in keys]
        except _COMMAND_ERRORS as exc:
            raise self._unavailable("invalidate script", exc) from exc
        return sum(int(r) for r in results)

    async def invalidate_for_write(
        self, key: str, *, lsn: int | None, tombstone_ttl: float, ticket_ttl: float
    ) -> LeaseResult:
        token = TICKET_PREFIX + secrets.token_hex(12)
        args = [_floor_text(lsn), _ms(tombstone_ttl), self._channel, token, _ms(ticket_ttl)]
        try:
            async with self._limit:
                floor = await self._invalidate_for_write_script(keys=_lease_keys(key), args=args)
        except _COMMAND_ERRORS as exc:
            raise self._unavailable("invalidate-for-write script", exc) from exc
        return LeaseResult(token=token, floor_lsn=parse_lsn_text(floor))

    async def get_counters(self, keys: Sequence[str]) -> list[int]:
        values = await self.get_many(keys)
        return [int(v) if v is not None else 0 for v in values]

    async def incr_counters(self, keys: Sequence[str]) -> list[int]:
        if not keys:
            return []
        try:
            async with self._limit, self._client.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.incr(key)
                return [int(v) for v in await pipe.execute()]
        except _COMMAND_ERRORS as exc:
            raise self._unavailable("INCR (pipeline)", exc) from exc

    async def bump_counters(self, keys: Sequence[str], *, lsn: int | None, floor_ttl: float) -> list[int]:
        args = [_floor_text(lsn), _ms(floor_ttl)]
        try:
            async with self._limit:
                return [int(await self._bump_script(keys=[key, _floor_key(key)], args=args)) for key in keys]
        except _COMMAND_ERRORS as exc:
            raise self._unavailable("bump script", exc) from exc

    async def counter_floors(self, keys: Sequence[str]) -> list[int | None]:
        return [parse_lsn_text(v) for v in await self.get_many([_floor_key(key) for key in keys])]

    async def register(self, key: str, value: bytes) -> bytes:
        try:
            async with self._limit:
                await self._client.set(key, value, nx=True)
                stored: bytes | None = await self._client.get(key)
        except _COMMAND_ERRORS as exc:
            raise self._unavailable("SET NX", exc) from exc
        return value if stored is None else stored

    async def eviction_risk(self) -> str | None:
        try:
            async with self._limit:
                found = await self._client.config_get("maxmemory*")
        except _COMMAND_ERRORS as exc:
            return f"its eviction settings cannot be read (CONFIG GET maxmemory*: {exc})"
        settings = _config_values(found)
        if not settings:
            return "its eviction settings cannot be read (CONFIG GET maxmemory* answered nothing)"
        risky = sorted({policy for policy, limit in settings if policy != "noeviction" and limit not in ("0", "")})
        if not risky:
            return None
        return f"maxmemory is set with maxmemory-policy {', '.join(risky)}: at the limit it may evict tombstones"

    async def close(self) -> None:
        await self._fills.stop()
        with contextlib.suppress(*_ERRORS):
            await self._client.aclose()
        pool = getattr(self._client, "connection_pool", None)
        if pool is not None:
            with contextlib.suppress(*_ERRORS):
                await pool.disconnect()


class AsyncRedisClusterBackend(AsyncRedisBackend):
    """Redis Cluster as a cache backend. Multi-key calls are split by slot and sent as
    one pipeline per node, so a caller never sees CROSSSLOT."""

    name = "redis-cluster"
    _pipelines_scripts = False
    _uses_lane = False

    def _make_client(self) -> Any:
        database = urlsplit(self.settings.url).path.strip("/")
        if database not in ("", "0"):
            raise ConfigurationError(
                f"Redis Cluster URL: a cluster has database 0 only, got {database!r}: {self.settings.safe_url}"
            )
        # The cluster client fails (instead of waiting) when a node's pool is exhausted;
        # the base class's gate keeps calls below the per-node pool size.
        if self.settings.sentinel:
            raise ConfigurationError("a Redis Cluster has no Sentinel: give one node's redis:// URL")
        return redis_asyncio_cluster.RedisCluster.from_url(
            self.settings.url, retry=Retry(NoBackoff(), 1), **self.settings.client_kwargs()
        )

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        if not keys:
            return []
        try:
            async with self._limit:
                values: list[bytes | None] = await self._client.mget_nonatomic(keys)
        except _COMMAND_ERRORS as exc:
            raise self._unavailable("MGET", exc) from exc
        return values

    async def delete_many(self, keys: Sequence[str]) -> int:
        if not keys:
            return 0
        try:
            async with self._limit, self._client.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.delete(key)
                results = await pipe.execute()
        except _COMMAND_ERRORS as exc:
            raise self._unavailable("DEL (pipeline)", exc) from exc
        return sum(int(r) for r in results)


__all__ = ["FILL_CHANNEL", "AsyncRedisBackend", "AsyncRedisClusterBackend"]
