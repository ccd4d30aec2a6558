"""The demo's load: browser-like clients with Zipf popularity, about 100 reads per write.

Each client is a closed loop (one request at a time, as a browser tab) with its own
private HTTP cache, a user of its own, and a session cookie it sends only under
``/users`` (the cookie's path), as a browser would: catalog pages stay cookie-free, so
the edge can share them. Reads pick products and categories by Zipf popularity; writes
are profile updates and deposits by the client's user, price changes by an "admin"
(which the CDC worker turns into invalidations and purges) and product views counted
behind. Everything is bounded: by a duration and by a request count, loopback only.
"""

from __future__ import annotations

import asyncio
import bisect
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Any
from urllib.parse import urlsplit

import httpx

from readscale.demo.browser import MemoryStorage, browser_client, served_by
from readscale.errors import ConfigurationError

ACTIONS = (
    ("product", 0.60),
    ("category", 0.18),
    ("trending", 0.05),
    ("profile", 0.06),
    ("balance", 0.05),
    ("asset", 0.06),
)
WRITES = (("view", 0.5), ("profile_update", 0.2), ("deposit", 0.2), ("price", 0.1))
#: How far past its duration a run may go to reach ``LoadConfig.min_requests``.
MIN_REQUESTS_GRACE = 6.0


def write_behind_share() -> float:
    """Share of the clients' writes the service acknowledges through write-behind (views)."""
    return dict(WRITES)["view"] / sum(weight for _, weight in WRITES)


@dataclass(frozen=True)
class LoadConfig:
    base_url: str
    clients: int = 64
    duration_s: float = 60.0
    max_requests: int | None = None
    #: Keep going past ``duration_s`` until this many requests were sent (at most
    #: ``MIN_REQUESTS_GRACE`` times the duration): on a loaded machine a short run still
    #: sends enough requests for its shares to mean something.
    min_requests: int = 0
    products: int = 5_000
    categories: int = 50
    users: int = 2_000
    zipf_alpha: float = 0.9
    reads_per_write: float = 100.0
    seed: int = 7
    asset_paths: tuple[str, ...] = ()
    #: Pause between a client's requests (a user reading the page). Without it the
    #: clients saturate this small machine and every layer's latency is mostly queueing.
    think_s: float = 0.03
    #: How long a client keeps retrying a request that never reached the server
    #: (connection refused, as while the edge restarts) or a GET whose connection broke,
    #: as a browser retries an idempotent request. 0: no retry.
    retry_s: float = 5.0

    def __post_init__(self) -> None:
        host = urlsplit(self.base_url).hostname
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise ConfigurationError(f"the demo's load only targets loopback, got {self.base_url!r}")
        if self.clients < 1 or self.duration_s <= 0 or self.reads_per_write <= 0 or self.zipf_alpha <= 0:
            raise ConfigurationError("need clients >= 1, duration_s > 0, reads_per_write > 0 and zipf_alpha > 0")
        if self.min_requests < 0:
            raise ConfigurationError(f"min_requests must be >= 0, got {self.min_requests}")


@dataclass
class WriteLedger:
    """The writes the service acknowledged (a 2xx), and those it may have applied without
    acknowledging them (sent, then an error): what the database must reflect at the end.

    Deposits add up per user; views count per product; a user's profile must show the
    last acknowledged bio or one sent after it (a client writes its own user in order).
    """

    deposits_acked: Counter[int] = field(default_factory=Counter)  # user -> cents
    deposits_unsure: Counter[int] = field(default_factory=Counter)  # user -> cents
    views_acked: Counter[int] = field(default_factory=Counter)  # product -> views
    bio_acked: dict[int, str] = field(default_factory=dict)  # user -> last acknowledged bio
    bio_unsure: dict[int, list[str]] = field(default_factory=dict)  # user -> bios sent after it

    def record(self, path: str, body: dict[str, Any] | None, user: int, acked: bool) -> None:
        """Note one write (``acked``: a 2xx; else sent and maybe applied)."""
        parts = path.split("/")
        if path.endswith("/balance") and body is not None:
            (self.deposits_acked if acked else self.deposits_unsure)[user] += int(body["amount_cents"])
        elif path.endswith("/views") and acked:
            self.views_acked[int(parts[2])] += 1
        elif path.endswith("/profile") and body is not None:
            if acked:
                self.bio_acked[user] = str(body["bio"])
                self.bio_unsure.pop(user, None)
            else:
                self.bio_unsure.setdefault(user, []).append(str(body["bio"]))


@dataclass
class LoadResult:
    """What the clients saw. ``layers`` counts responses by the layer that answered."""

    requests: int = 0
    reads: int = 0
    writes: int = 0
    failed: int = 0
    layers: Counter[str] = field(default_factory=Counter)
    latency_ms: dict[str, list[float]] = field(default_factory=dict)
    #: (seconds since start, layer, kind, tier): kind is "read" (a page or an API read),
    #: "asset" (a static file, served from the process's memory) or "write"; tier, for a
    #: read the app cache answered, "l1" (the process's memory) or "l2" (Redis), else "".
    timeline: list[tuple[float, str, str, str]] = field(default_factory=list)
    browser_hits: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    duration_s: float = 0.0
    stale_checks: int = 0  # reads whose freshness the clients could check
    stale_reads: int = 0  # of which older than allowed (see Freshness below)
    stale_examples: list[str] = field(default_factory=list)
    failed_reads: int = 0
    failed_writes: int = 0
    retries: int = 0  # requests sent again after a connection error (see LoadConfig.retry_s)
    acked_writes: int = 0
    ledger: WriteLedger = field(default_factory=WriteLedger)


#: Errors where the request never reached the server: safe to send again, whatever it is.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout)
#: Errors after the request may have been received: only an idempotent GET is sent again.
_BROKEN = (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError)

#: How stale a response may be, in seconds, by the layer that served it. A browser may
#: keep a catalog page for its max-age (60 s, it cannot be purged); any other layer must
#: show a price change within the CDC worker's reach (it purges the edge and the cache).
BROWSER_BOUND = 62.0
SHARED_BOUND = 2.0


@dataclass
class _Truth:
    """What the clients know they wrote: prices (everyone's) and their own accounts."""

    prices: dict[int, list[tuple[float, int]]] = field(default_factory=dict)

    def price_stale(self, product: int, price: int, started: float, bound: float) -> bool:
        newest = None
        for at, value in self.prices.get(product, ()):
            if at < started - bound:
                newest = value
        if newest is None:
            return False
        return price != newest and not any(
            value == price for at, value in self.prices.get(product, ()) if at >= started - bound
        )


class Zipf:
    """Draws ranks 1..n with probability proportional to rank^-alpha (inverse CDF)."""

    def __init__(self, n: int, alpha: float) -> None:
        weights = [rank**-alpha for rank in range(1, n + 1)]
        self._cdf = list(accumulate(weights))
        self._total = self._cdf[-1]

    def draw(self, rng: random.Random) -> int:
        return bisect.bisect_left(self._cdf, rng.random() * self._total) + 1


def _choose(rng: random.Random, table: tuple[tuple[str, float], ...]) -> str:
    u = rng.random() * sum(w for _, w in table)
    for name, weight in table:
        u -= weight
        if u <= 0:
            return name
    return table[-1][0]


async def run_load(
    config: LoadConfig,
    *,
    progress: Callable[[LoadResult], None] | None = None,
    result: LoadResult | None = None,
    stop: asyncio.Event | None = None,
) -> LoadResult:
    """Run every client until the duration or the request budget is spent, or ``stop``
    is set (each client finishes the request it is on). ``result`` (filled as the
    clients go) lets a caller watch the run while it happens."""
    result = result if result is not None else LoadResult()
    products = Zipf(config.products, config.zipf_alpha)
    categories = Zipf(config.categories, config.zipf_alpha)
    started = time.monotonic()
    deadline = started + config.duration_s
    hard_deadline = started + config.duration_s * MIN_REQUESTS_GRACE
    budget = config.max_requests
    sent = 0
    done = False
    write_probability = 1.0 / (1.0 + config.reads_per_write)
    limits = httpx.Limits(max_connections=4, max_keepalive_connections=4)

    def spend() -> bool:
        nonlocal budget, sent
        now = time.monotonic()
        if stop is not None and stop.is_set():
            return False
        if now >= deadline and (sent >= config.min_requests or now >= hard_deadline):
            return False
        sent += 1
        if budget is not None:
            if budget <= 0:
                return False
            budget -= 1
        return True

    truth = _Truth()

    async def send(http: httpx.AsyncClient, method: str, path: str, body: dict[str, Any] | None) -> httpx.Response:
        """One request, retried as a browser would while the server cannot be reached."""
        give_up = time.monotonic() + config.retry_s
        pause = 0.05
        while True:
            try:
                if method == "GET":
                    response = await http.get(path)
                else:
                    response = await http.post(path, json=body)
                await response.aread()
                return response
            except _NOT_SENT:
                if time.monotonic() + pause > give_up:
                    raise
            except _BROKEN:
                if method != "GET" or time.monotonic() + pause > give_up:
                    raise
            result.retries += 1
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.5)

    def check(result_: LoadResult, problem: str | None) -> None:
        result_.stale_checks += 1
        if problem is not None:
            result_.stale_reads += 1
            if len(result_.stale_examples) < 10:
                result_.stale_examples.append(problem)

    async def client(index: int) -> None:
        rng = random.Random(config.seed * 1_000_003 + index)
        user = 1 + (index * 7919) % config.users
        storage = MemoryStorage()
        own_balance: int | None = None  # read-your-writes: never below what a deposit returned
        own_bio: str | None = None
        async with browser_client(config.base_url, storage=storage, limits=limits) as http:
            # The session and the causal token live in the cookie jar, scoped to /users
            # as a browser scopes them: catalog requests carry no cookie.
            host = urlsplit(config.base_url).hostname or "127.0.0.1"
            http.cookies.set("session", f"user-{user}", domain=host, path="/users")
            while spend():
                write = rng.random() < write_probability
                method, path, body = _request(rng, write, user, products, categories, config)
                began = time.perf_counter()
                sent_at = time.monotonic()
                tier = ""
                try:
                    response = await send(http, method, path, body)
                    layer = served_by(response) if response.status_code < 400 else "error"
                    if layer == "app_cache":
                        tier = response.headers.get("x-readscale-served", "").partition(":")[2]
                    if write and (response.status_code < 300 or response.status_code >= 500):
                        result.ledger.record(path, body, user, acked=response.status_code < 300)
                        result.acked_writes += response.status_code < 300
                    if response.status_code >= 400:
                        result.failures[f"{response.status_code} {path.split('/')[1]}"] += 1
                    elif response.status_code == 200:
                        body_out = (
                            response.json()
                            if response.headers.get("content-type", "").startswith("application/json")
                            else None
                        )
                        kind = path.split("/")
                        if method == "POST" and kind[1] == "admin" and body is not None:
                            change = (time.monotonic(), int(body["price_cents"]))
                            truth.prices.setdefault(int(kind[3]), []).append(change)
                        elif method == "POST" and path.endswith("/balance") and isinstance(body_out, dict):
                            own_balance = int(body_out["balance_cents"])
                        elif method == "POST" and path.endswith("/profile") and isinstance(body_out, dict):
                            own_bio = str(body_out.get("bio"))
                        elif method == "GET" and path.endswith("/balance") and isinstance(body_out, dict):
                            seen = int(body_out["balance_cents"])
                            check(
                                result,
                                None
                                if own_balance is None or seen >= own_balance
                                else f"balance {seen} < own deposit result {own_balance} (user {user})",
                            )
                        elif method == "GET" and path.endswith("/profile") and isinstance(body_out, dict):
                            check(
                                result,
                                None
                                if own_bio is None or body_out.get("bio") == own_bio
                                else f"profile bio {body_out.get('bio')!r} != own update {own_bio!r} (user {user})",
                            )
                        elif method == "GET" and kind[1] == "products" and isinstance(body_out, dict):
                            bound = BROWSER_BOUND if layer == "browser" else SHARED_BOUND
                            price = int(body_out["price_cents"])
                            product = int(kind[2])
                            if truth.prices.get(product):
                                stale = truth.price_stale(product, price, sent_at, bound)
                                changes = [(round(at - started, 2), value) for at, value in truth.prices[product][-3:]]
                                problem = (
                                    f"product {product} price {price} via {layer} at {sent_at - started:.2f} s "
                                    f"(changes: {changes}; Age {response.headers.get('age')})"
                                )
                                check(result, problem if stale else None)
                except httpx.HTTPError as exc:
                    layer = "error"
                    result.failures[type(exc).__name__] += 1
                    if write and not isinstance(exc, _NOT_SENT):
                        result.ledger.record(path, body, user, acked=False)
                elapsed = (time.perf_counter() - began) * 1000
                result.requests += 1
                if write:
                    result.writes += 1
                else:
                    result.reads += 1
                if layer == "error":
                    result.failed += 1
                    if write:
                        result.failed_writes += 1
                    else:
                        result.failed_reads += 1
                result.layers[layer] += 1
                result.latency_ms.setdefault(layer, []).append(elapsed)
                what = "write" if write else "asset" if path.startswith("/static/") else "read"
                result.timeline.append((time.monotonic() - started, layer, what, tier))
                if config.think_s:
                    await asyncio.sleep(config.think_s * (0.5 + rng.random()))

    async def reporter() -> None:
        while not done:
            await asyncio.sleep(0.5)
            if progress is not None:
                result.duration_s = time.monotonic() - started
                progress(result)

    report = asyncio.ensure_future(reporter())
    try:
        await asyncio.gather(*(client(i) for i in range(config.clients)))
    finally:
        done = True
        report.cancel()
    result.duration_s = time.monotonic() - started
    result.browser_hits = result.layers["browser"]
    return result


def _request(
    rng: random.Random,
    write: bool,
    user: int,
    products: Zipf,
    categories: Zipf,
    config: LoadConfig,
) -> tuple[str, str, dict[str, Any] | None]:
    """(method, path, json body) of one request."""
    if write:
        kind = _choose(rng, WRITES)
        if kind == "view":
            return "POST", f"/products/{products.draw(rng)}/views", None
        if kind == "profile_update":
            return "POST", f"/users/{user}/profile", {"bio": f"bio {rng.randrange(10**6)}"}
        if kind == "deposit":
            return "POST", f"/users/{user}/balance", {"amount_cents": rng.randrange(1, 500)}
        return "POST", f"/admin/products/{products.draw(rng)}/price", {"price_cents": rng.randrange(100, 20000)}
    kind = _choose(rng, ACTIONS)
    if kind == "product":
        return "GET", f"/products/{products.draw(rng)}", None
    if kind == "category":
        return "GET", f"/categories/{categories.draw(rng)}", None
    if kind == "trending":
        return "GET", "/trending", None
    if kind == "profile":
        return "GET", f"/users/{user}/profile", None
    if kind == "balance":
        return "GET", f"/users/{user}/balance", None
    if config.asset_paths:
        return "GET", config.asset_paths[rng.randrange(len(config.asset_paths))], None
    return "GET", f"/products/{products.draw(rng)}", None
