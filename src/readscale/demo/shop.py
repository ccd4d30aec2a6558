"""The reference service's data access: the shop's reads (cached, or routed to a replica
by the session's read-your-writes token), its writes (written through the cache, or left
to the CDC worker to invalidate), view counts written behind, and the counters each
process publishes for the demo's funnel. ``app.py`` puts it behind HTTP routes.

Like ``app.py``, it uses the library by its documented paths only (rule 8 of
``scripts/check_layers.py``): users copy both.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, TypeVar

from redis.exceptions import RedisError

from readscale import (
    BALANCE,
    CATALOG,
    NO_VALUE,
    PROFILE,
    TRENDING,
    AsyncCache,
    AsyncInvalidationBus,
    AsyncReplicaRouter,
    CachePolicy,
    MemoryStore,
    RedisSettings,
    ReplicaSettings,
    Tier,
)
from readscale.backends import AsyncRedisBackend
from readscale.demo import schema
from readscale.errors import CacheUnavailableError
from readscale.replicas import PrimaryProtection
from readscale.writebehind import AsyncWriteBehind, WriteBehindSettings

#: Which node served the database read of the current request (None: no read); the
#: routes set it per request and name that node in ``X-Readscale-Served``.
SERVED_BY: ContextVar[list[str] | None] = ContextVar("readscale_demo_served", default=None)
#: Set when the process's in-process tier (L1) answered a cache read of the current request.
L1_ANSWERED: ContextVar[bool] = ContextVar("readscale_demo_l1_answered", default=False)

#: View counters: kept in the cache for a day, their database rows written behind.
VIEWS = CachePolicy(name="views", ttl=86_400.0, tiers=frozenset({Tier.L2}))

log = logging.getLogger("readscale.demo")
T = TypeVar("T")


@dataclass
class DemoSettings:
    primary: str
    replicas: list[str]
    redis_url: str
    secret: str
    stats_key: str = "demo:stats"
    static_dir: str = ""
    l1_entries: int = 5_000
    #: Where the service's workers share their metrics (``SharedMetrics``): each scrape of
    #: ``/metrics`` then counts every worker's requests. Empty: the worker's own only.
    metrics_dir: str = ""
    #: The layers this service uses below HTTP (``readscale bench capacity`` measures each
    #: step): ``replicas`` routes reads to the replicas (without it every read goes to the
    #: primary, unthrottled), ``cache`` reads through the application cache (without it
    #: every read is a database read; writes and views still use Redis).
    layers: frozenset[str] = frozenset({"replicas", "cache"})

    @classmethod
    def from_env(cls) -> DemoSettings:
        env = os.environ
        return cls(
            primary=env["READSCALE_DEMO_PRIMARY"],
            replicas=[r for r in env.get("READSCALE_DEMO_REPLICAS", "").split(",") if r],
            redis_url=env["READSCALE_DEMO_REDIS"],
            secret=env["READSCALE_DEMO_SECRET"],
            stats_key=env.get("READSCALE_DEMO_STATS_KEY", "demo:stats"),
            static_dir=env.get("READSCALE_DEMO_STATIC", ""),
            l1_entries=int(env.get("READSCALE_DEMO_L1_ENTRIES", "5000")),
            metrics_dir=env.get("READSCALE_DEMO_METRICS_DIR", ""),
            layers=parse_layers(env.get("READSCALE_DEMO_LAYERS", "replicas,cache")),
        )


#: What ``READSCALE_DEMO_LAYERS`` may name.
LAYERS = frozenset({"replicas", "cache"})


def parse_layers(text: str) -> frozenset[str]:
    """``"replicas,cache"`` → the set; an unknown name is an error that names it."""
    layers = frozenset(part.strip() for part in text.split(",") if part.strip())
    unknown = sorted(layers - LAYERS)
    if unknown:
        raise ValueError(f"READSCALE_DEMO_LAYERS: unknown layer(s) {unknown}; choose from {sorted(LAYERS)}")
    return layers


class _TellingL1(MemoryStore[str, Any]):
    """The L1, noting in the request's context when it answers: a read the cache answered
    without it came from Redis (``X-Readscale-Served: app_cache:l2``), one with it from
    the process's memory (``app_cache:l1``)."""

    def get(self, key: str) -> Any:
        found = super().get(key)
        if found is not NO_VALUE:
            L1_ANSWERED.set(True)
        return found


@dataclass
class Counters:
    """What this process did, published to Redis for the demo's funnel."""

    requests: int = 0
    app_cache: int = 0
    loads: dict[str, int] = field(default_factory=dict)  # node -> request-driven reads
    refresh_loads: dict[str, int] = field(default_factory=dict)  # node -> background reads
    writes: int = 0
    not_modified: int = 0
    errors: int = 0
    static: int = 0  # assets served from memory
    absorbed_writes: int = 0  # view counts acknowledged by Redis, written to the database behind
    background_requests: int = 0  # the edge's background refreshes (grace), not clients'
    background_app_cache: int = 0  # of which answered by the cache


class Shop:
    """The service's data access: every read is cached or routed, every write invalidates."""

    def __init__(self, settings: DemoSettings) -> None:
        self.settings = settings
        redis = RedisSettings(url=settings.redis_url, max_connections=64)
        if "replicas" in settings.layers:
            replicas = ReplicaSettings(primary=settings.primary, replicas=settings.replicas)
        else:
            # A service with no replicas reads its primary: no fallback throttle to hit.
            unthrottled = PrimaryProtection(rate=1e9, burst=10**9)
            replicas = ReplicaSettings(primary=settings.primary, replicas=[], protection=unthrottled)
        self.router = AsyncReplicaRouter(replicas, on_read=self._served)
        self.bus = AsyncInvalidationBus(redis)
        self.cache = AsyncCache(
            AsyncRedisBackend(redis),
            l1=_TellingL1(settings.l1_entries),
            bus=self.bus,
            policy=CATALOG,
            name="demo",
        )
        #: View counts: in Redis at once, queued for the database (a flusher writes them).
        self.views = AsyncWriteBehind(self.cache, WriteBehindSettings(queue="views"))
        self.counters = Counters()

    async def open(self) -> None:
        await self.router.open()

    async def close(self) -> None:
        await self.router.close()
        await self.cache.aclose()

    # -- reads ------------------------------------------------------------------------------

    def _served(self, node: str) -> None:
        """The router's per-read hook: count the read against the request, or as background
        work (a refresh) when no request is being served in this task."""
        served = SERVED_BY.get()
        counts = self.counters.loads if served is not None else self.counters.refresh_loads
        counts[node] = counts.get(node, 0) + 1
        if served is not None:
            served.append(node)

    async def _cached(
        self, key: str, load: Callable[[], Awaitable[T]], policy: CachePolicy, tags: tuple[str, ...] | list[str] = ()
    ) -> T:
        """A read through the application cache, or straight to the database when the
        service runs without the cache layer."""
        if "cache" not in self.settings.layers:
            return await load()
        result: T = await self.cache.get_or_load(key, load, policy=policy, tags=tags)
        return result

    async def _read(self, query: str, params: tuple[Any, ...], *, many: bool = False) -> Any:
        """One routed database read (counted by the router's hook)."""
        rows = await self.router.fetch(query, params)
        return rows if many else (rows[0] if rows else None)

    async def product(self, product_id: int) -> dict[str, Any] | None:
        async def load() -> dict[str, Any] | None:
            row = await self._read(schema.PRODUCT_PAGE, (product_id,))
            if row is None:
                return None
            keys = ("id", "name", "description", "price_cents", "category_id", "category", "rating", "reviews", "sold")
            return dict(zip(keys, row, strict=True))

        return await self._cached(f"product:{product_id}", load, CATALOG, [f"product:{product_id}"])

    async def category(self, category_id: int) -> list[dict[str, Any]]:
        async def load() -> list[dict[str, Any]]:
            rows = await self._read(schema.CATEGORY_PAGE, (category_id,), many=True)
            return [{"id": r[0], "name": r[1], "price_cents": r[2], "rating": r[3]} for r in rows]

        return await self._cached(f"category:{category_id}", load, CATALOG, [f"category:{category_id}"])

    async def trending(self) -> list[dict[str, Any]]:
        async def load() -> list[dict[str, Any]]:
            rows = await self._read(schema.TRENDING, (), many=True)
            return [{"id": r[0], "name": r[1], "sold": r[2]} for r in rows]

        return await self._cached("trending", load, TRENDING)

    async def profile(self, user_id: int) -> dict[str, Any] | None:
        async def load() -> dict[str, Any] | None:
            row = await self._read(schema.PROFILE, (user_id,))
            return None if row is None else _profile(row)

        return await self._cached(f"user:{user_id}:profile", load, PROFILE)

    async def balance(self, user_id: int) -> int | None:
        # Never cached (BALANCE), always read-your-writes through the session's token.
        async def load() -> int | None:
            row = await self._read(schema.BALANCE, (user_id,))
            return None if row is None else int(row[0])

        return await self._cached(f"user:{user_id}:balance", load, BALANCE)

    # -- writes -----------------------------------------------------------------------------

    async def update_profile(self, user_id: int, bio: str) -> dict[str, Any] | None:
        async def write() -> dict[str, Any] | None:
            async with self.router.write() as conn:
                await conn.execute(schema.UPDATE_PROFILE, (bio, user_id))
                row = await (await conn.execute(schema.PROFILE_IN_WRITE, (user_id,))).fetchone()
            return None if row is None else _profile(row)

        self.counters.writes += 1
        result: dict[str, Any] | None = await self.cache.write_through(f"user:{user_id}:profile", write, policy=PROFILE)
        return result

    async def deposit(self, user_id: int, amount_cents: int) -> int | None:
        self.counters.writes += 1
        async with self.router.write() as conn:
            row = await (await conn.execute(schema.DEPOSIT, (amount_cents, user_id))).fetchone()
        return None if row is None else int(row[0])

    async def change_price(self, product_id: int, price_cents: int) -> None:
        # No invalidation here on purpose: the CDC worker sees the change in the WAL and
        # invalidates product:<id> and category:<cid>, in the cache and at the edge.
        self.counters.writes += 1
        async with self.router.write() as conn:
            await conn.execute(schema.UPDATE_PRICE, (price_cents, product_id))

    async def count_view(self, product_id: int) -> int:
        """A product view: counted in Redis now, written to the database behind (batched).

        With Redis down the view goes straight to the database (fail open for the user,
        a warning for the operator): a write nobody acknowledged durably is never
        dropped. If Redis failed between the INCR and the queue write, that one view is
        counted twice; never lost.
        """
        client = self.cache.backend.client  # type: ignore[union-attr]
        counter = f"demo:views:{product_id}"
        try:
            views = int(await client.incr(counter))
            queued = 0
            # Two views of one product can queue their counts out of order (newest
            # version wins, so 5 could overwrite 6). Whoever queues last looks at the
            # counter afterwards and queues again until what it queued is current, so
            # the last record of every product carries its final count.
            while queued != views:
                queued = views
                await self.views.write_behind(
                    f"views:{product_id}", {"product_id": product_id, "views": queued}, policy=VIEWS
                )
                views = int(await client.get(counter) or queued)
            views = queued
        except (CacheUnavailableError, RedisError, OSError) as exc:
            log.warning("views: Redis unavailable (%s); view of product %s written to the database", exc, product_id)
            self.counters.writes += 1
            served = SERVED_BY.get()
            if served is not None:
                served.append("primary")  # the response says the primary took it, not the cache
            async with self.router.write() as conn:
                cur = await conn.execute(schema.COUNT_VIEW_DIRECT, {"key": f"views:{product_id}", "id": product_id})
                row = await cur.fetchone()
            return int(row[0]) if row is not None else 0
        self.counters.absorbed_writes += 1
        return views

    async def publish_counters(self) -> None:
        c = self.counters
        stats = self.cache.stats.snapshot()
        payload = {
            "requests": c.requests, "app_cache": c.app_cache, "loads": c.loads, "refresh_loads": c.refresh_loads,
            "writes": c.writes, "not_modified": c.not_modified, "errors": c.errors, "cache": stats,
            "static": c.static, "background_requests": c.background_requests, "absorbed_writes": c.absorbed_writes,
            "background_app_cache": c.background_app_cache,
            "router": {k: v for k, v in vars(self.router.stats()).items() if isinstance(v, int)}
            if hasattr(self.router.stats(), "__dict__") else {},
        }  # fmt: skip
        client = self.cache.backend.client  # type: ignore[union-attr]
        await client.hset(self.settings.stats_key, str(os.getpid()), json.dumps(payload))


def _profile(row: tuple[Any, ...]) -> dict[str, Any]:
    keys = ("id", "name", "email", "bio", "orders", "spent_cents")
    return dict(zip(keys, row, strict=True))
