"""Varnish running readscale's VCL, as an edge of one or several nodes.

Each purge (tags or URLs) goes to every node at once; each node is retried on its own
(the policy's attempts and backoff), so a dead node neither delays nor fails the others.
A node that still does not answer keeps what it missed in its backlog
(``readscale._core.http.backlog``): the purge is not lost, it is replayed to that node
before anything else it is sent, and until then the node is left alone for a bounded
backoff (doubling up to the policy's cap) instead of costing every purge a timeout.

Replays happen on the next purge after the backoff, or on :meth:`AsyncVarnishPurger.replay`
(:meth:`run_replayer` calls it every ``interval``). Every miss is counted per node
(``node_stats``, exported by ``readscale.metrics.PurgeCollector``) and logged with its
fields. docs/edge.md states the bound on what a node that missed purges may serve.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from urllib.parse import urlsplit

import httpx

from readscale._async.purge.base import PURGED_COUNT, HttpPurger, PurgeResult, PurgeStats, RetryPolicy, in_batches
from readscale._core.http import wire_tag
from readscale._core.http.backlog import EdgeBacklog, Replay
from readscale._shared.primitives.locks import AsyncEvent, AsyncLock
from readscale._shared.primitives.tasks import async_fan_out
from readscale.errors import ConfigurationError, PurgeError
from readscale.settings import check_url

log = logging.getLogger("readscale.purge")

BAN_ALL_HEADER = "readscale-ban-all"


@dataclass
class AsyncEdgeNode:
    """One Varnish node: its address, what it missed, when to try it again."""

    url: str
    backlog: EdgeBacklog
    stats: PurgeStats = field(default_factory=PurgeStats)
    lock: AsyncLock = field(default_factory=AsyncLock)
    failures_in_a_row: int = 0
    next_try: float = 0.0


class AsyncVarnishPurger(HttpPurger):
    """Varnish running readscale's VCL: ``PURGE`` with ``xkey-(soft)purge``, or a URL.

    ``edge_url`` is one node's address or a list of them (the VCL accepts purges from
    its purge ACL: loopback unless ``render_vcl(purge_acl=...)`` names more).
    ``backlog_limit`` bounds what one node's backlog remembers (past it, the replay bans
    everything on that node); ``None`` keeps no backlog: a node's failure is raised.
    ``purge_tags``/``purge_urls`` raise :class:`PurgeError` only when a purge reached no
    node and was kept for none, or every node missed it (``nodes`` names them).
    """

    vendor = "varnish"

    def __init__(
        self,
        edge_url: str | Sequence[str],
        *,
        client: httpx.AsyncClient | None = None,
        retry: RetryPolicy | None = None,
        rng: random.Random | None = None,
        timeout: float = 5.0,
        tags_per_request: int = 100,
        backlog_limit: int | None = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        urls = [edge_url] if isinstance(edge_url, str) else list(edge_url)
        if not urls:
            raise ConfigurationError("a Varnish purger needs at least one edge node URL")
        for url in urls:  # one line naming the wrong part (scheme, host, port), before any purge is tried
            check_url(url, name="edge node URL", schemes=("http", "https"))
        super().__init__(client, retry, rng, timeout)
        self.tags_per_request = tags_per_request
        self.backlog_limit = backlog_limit
        self.clock = clock
        self.nodes = {
            url: AsyncEdgeNode(url, EdgeBacklog(limit=backlog_limit or 0))
            for url in dict.fromkeys(u.rstrip("/") for u in urls)
        }

    @property
    def edge_urls(self) -> tuple[str, ...]:
        return tuple(self.nodes)

    @property
    def node_stats(self) -> dict[str, PurgeStats]:
        """Each node's counters, by its URL (``backlog``: what it has yet to be replayed)."""
        for node in self.nodes.values():
            node.stats.backlog = node.backlog.size
        return {url: node.stats for url, node in self.nodes.items()}

    # -- the purges --------------------------------------------------------------------------

    async def purge_tags(self, tags: Sequence[str], *, soft: bool = True) -> PurgeResult:
        wire = list(dict.fromkeys(wire_tag(t, "varnish") for t in tags))
        result = await self._fan_out(
            lambda node, attempts: self._send_tags(node, wire, soft, attempts),
            lambda backlog, now: backlog.add_tags(wire, soft=soft, now=now),
            f"{'soft ' if soft else ''}tags {' '.join(wire[:5])}{' ...' if len(wire) > 5 else ''}",
        )
        self.stats.tags += len(wire)
        self.stats.purged += result.purged or 0
        return result

    async def purge_urls(self, urls: Sequence[str]) -> PurgeResult:
        unique = list(dict.fromkeys(urls))
        result = await self._fan_out(
            lambda node, attempts: self._send_urls(node, unique, attempts),
            lambda backlog, now: backlog.add_urls(unique, now=now),
            f"urls {' '.join(unique[:5])}{' ...' if len(unique) > 5 else ''}",
        )
        self.stats.urls += len(unique)
        return result

    async def replay(self, *, force: bool = True) -> int:
        """Replay every node's backlog now (``force``) or those whose backoff is over;
        returns how many nodes are still behind."""
        now = self.clock()
        behind = [n for n in self.nodes.values() if not n.backlog.empty and (force or now >= n.next_try)]
        await async_fan_out([partial(self._replay_node, n) for n in behind])
        return sum(1 for n in self.nodes.values() if not n.backlog.empty)

    async def run_replayer(self, stop: AsyncEvent, *, interval: float = 1.0) -> None:
        """Replay backlogs whose backoff is over, every ``interval`` seconds, until
        ``stop`` is set: a node that answers again is brought back in step even when no
        purge comes (run it as a task, or a thread in the sync flavour)."""
        while not await stop.wait(interval):
            try:
                await self.replay(force=False)
            except Exception:  # a replayer that dies would void the bound: log and go on
                log.exception(
                    "varnish purge replayer: unexpected error",
                    extra={"event": "purge_replayer_failed", "backend": self.vendor},
                )

    # -- per node ----------------------------------------------------------------------------

    async def _fan_out(
        self,
        send: Callable[[AsyncEdgeNode, int | None], Awaitable[PurgeResult]],
        missed: Callable[[EdgeBacklog, float], EdgeBacklog],
        what: str,
    ) -> PurgeResult:
        outcomes = await async_fan_out([partial(self._node_purge, n, send, missed, what) for n in self.nodes.values()])
        result = PurgeResult()
        errors: list[tuple[str, PurgeError]] = []
        for node, outcome in zip(self.nodes.values(), outcomes, strict=True):
            if isinstance(outcome, PurgeError):
                errors.append((node.url, outcome))
            else:
                result = result + outcome
        kept = self.backlog_limit is not None
        if errors and (not kept or len(errors) == len(self.nodes)):
            raise PurgeError(
                "; ".join(str(e) for _, e in errors) + ("" if not kept else " (kept in each node's backlog)"),
                backend=self.vendor,
                nodes=tuple(url for url, _ in errors),
            )
        return result

    async def _node_purge(
        self,
        node: AsyncEdgeNode,
        send: Callable[[AsyncEdgeNode, int | None], Awaitable[PurgeResult]],
        missed: Callable[[EdgeBacklog, float], EdgeBacklog],
        what: str,
    ) -> PurgeResult | PurgeError:
        async with node.lock:
            now = self.clock()
            # Behind: what it missed goes first, and the new purge joins it if it cannot.
            behind = self.backlog_limit is not None and not node.backlog.empty
            if behind and (now < node.next_try or not await self._replay_locked(node)):
                node.backlog = missed(node.backlog, now)
                return PurgeError(f"varnish node {node.url} is behind, purge kept", backend=self.vendor)
            try:
                return await send(node, None)
            except PurgeError as exc:
                self._missed(node, exc, what, missed)
                return exc

    async def _replay_node(self, node: AsyncEdgeNode) -> None:
        async with node.lock:
            if not node.backlog.empty:
                await self._replay_locked(node)

    async def _replay_locked(self, node: AsyncEdgeNode) -> bool:
        """Send a node its backlog (one attempt: it has failed before); true when it is
        in step again."""
        backlog = node.backlog
        try:
            await self._send_replay(node, backlog.replay())
        except PurgeError as exc:
            node.failures_in_a_row += 1
            node.next_try = self.clock() + self.retry.delay_after(node.failures_in_a_row)
            log.warning(
                "varnish purge: node %s still unreachable, %d purges wait for it: %s", node.url, backlog.size, exc,
                extra={"event": "purge_node_unreachable", "backend": self.vendor, "node": node.url,
                       "backlog": backlog.size, "reason": str(exc)},
            )  # fmt: skip
            return False
        node.backlog = backlog.cleared()
        node.failures_in_a_row = 0
        node.next_try = 0.0
        node.stats.replays += 1
        self.stats.replays += 1
        behind = self.clock() - backlog.since if backlog.since is not None else 0.0
        log.warning(
            "varnish purge: node %s answers again; replayed %d missed purges (behind for %.1f s)",
            node.url, backlog.size, behind,
            extra={"event": "purge_node_back", "backend": self.vendor, "node": node.url, "backlog": backlog.size,
                   "behind_s": round(behind, 3), "ban_all": backlog.ban_all},
        )  # fmt: skip
        return True

    def _missed(
        self, node: AsyncEdgeNode, exc: PurgeError, what: str, missed: Callable[[EdgeBacklog, float], EdgeBacklog]
    ) -> None:
        now = self.clock()
        node.failures_in_a_row += 1
        node.next_try = now + self.retry.delay_after(node.failures_in_a_row)
        if self.backlog_limit is not None:
            node.backlog = missed(node.backlog, now)
        log.warning(
            "varnish purge: node %s missed %s: %s", node.url, what, exc,
            extra={"event": "purge_node_missed", "backend": self.vendor, "node": node.url, "reason": str(exc),
                   "backlog": node.backlog.size, "kept": self.backlog_limit is not None},
        )  # fmt: skip

    # -- requests ----------------------------------------------------------------------------

    async def _send_tags(
        self, node: AsyncEdgeNode, wire: Sequence[str], soft: bool, attempts: int | None
    ) -> PurgeResult:
        result = PurgeResult()
        header = "xkey-softpurge" if soft else "xkey-purge"
        for batch in in_batches(wire, self.tags_per_request):
            request = self.client.build_request("PURGE", node.url + "/", headers={header: " ".join(batch)})
            response = await self._send(request, node=node.stats, attempts=attempts)
            found = PURGED_COUNT.search(response.reason_phrase) or PURGED_COUNT.search(response.text)
            result = result + PurgeResult(1, int(found.group(1)) if found else None)
        node.stats.tags += len(wire)
        node.stats.purged += result.purged or 0
        return result

    async def _send_urls(self, node: AsyncEdgeNode, urls: Sequence[str], attempts: int | None) -> PurgeResult:
        result = PurgeResult()
        for url in urls:
            parts = urlsplit(url)
            path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            headers = {"host": parts.netloc} if parts.netloc else {}
            request = self.client.build_request("PURGE", node.url + path, headers=headers)
            await self._send(request, node=node.stats, attempts=attempts)
            result = result + PurgeResult(1, None)
        node.stats.urls += len(urls)
        return result

    async def _send_replay(self, node: AsyncEdgeNode, replay: Replay) -> None:
        if replay.ban_all:
            request = self.client.build_request("PURGE", node.url + "/", headers={BAN_ALL_HEADER: "1"})
            await self._send(request, node=node.stats, attempts=1)
            return
        if replay.hard:
            await self._send_tags(node, replay.hard, False, 1)
        if replay.soft:
            await self._send_tags(node, replay.soft, True, 1)
        if replay.urls:
            await self._send_urls(node, replay.urls, 1)
