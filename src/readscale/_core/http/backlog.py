"""What one edge node missed while it could not be reached, and what to replay to it.

An edge of several nodes is purged node by node; a node that does not answer (after its
own retries) must not keep serving what the others dropped once it answers again. The
purger keeps, per node, an :class:`EdgeBacklog`: every purge that node missed, replayed
to it before anything else it is sent. The backlog is bounded (``limit`` items: tags
and URLs); past the limit it degrades to *ban everything*, which the replay sends as one
request, so an overflow loses nothing, it only costs the node its whole cache.

Soft purges stay soft, unless the same tag was also purged hard while the node was away
(hard wins: a hard purge means the copy must not be served at all).
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True, slots=True)
class Replay:
    """What to send a node that answers again, in this order: a ban of everything (when
    the backlog overflowed, and then nothing else), or hard tags, soft tags and URLs."""

    ban_all: bool = False
    hard: tuple[str, ...] = ()
    soft: tuple[str, ...] = ()
    urls: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.ban_all or self.hard or self.soft or self.urls)


@dataclass(frozen=True, slots=True)
class EdgeBacklog:
    """The purges one node missed (frozen: each change returns a new backlog).

    ``since`` is when it first missed one (the caller's clock), for the log and the
    metric of how long a node has been behind; ``None`` when the backlog is empty.
    """

    limit: int = 10_000
    hard: frozenset[str] = frozenset()
    soft: frozenset[str] = frozenset()
    urls: frozenset[str] = frozenset()
    ban_all: bool = False
    since: float | None = None

    def __post_init__(self) -> None:
        if self.limit < 0:
            raise ValueError(f"a backlog limit must be >= 0, got {self.limit}")

    @property
    def size(self) -> int:
        """Items waiting (a pending ban of everything counts as one)."""
        return len(self.hard) + len(self.soft) + len(self.urls) + (1 if self.ban_all else 0)

    @property
    def empty(self) -> bool:
        return self.size == 0

    def add_tags(self, tags: tuple[str, ...] | list[str], *, soft: bool, now: float) -> EdgeBacklog:
        if soft:
            new_soft, new_hard = self.soft | (frozenset(tags) - self.hard), self.hard
        else:
            new_hard = self.hard | frozenset(tags)
            new_soft = self.soft - new_hard
        return self._bounded(replace(self, hard=new_hard, soft=new_soft), now)

    def add_urls(self, urls: tuple[str, ...] | list[str], *, now: float) -> EdgeBacklog:
        return self._bounded(replace(self, urls=self.urls | frozenset(urls)), now)

    def _bounded(self, backlog: EdgeBacklog, now: float) -> EdgeBacklog:
        since = self.since if self.since is not None else now
        if backlog.ban_all or len(backlog.hard) + len(backlog.soft) + len(backlog.urls) > self.limit:
            # Too much to remember: everything the node holds goes on replay.
            return replace(backlog, hard=frozenset(), soft=frozenset(), urls=frozenset(), ban_all=True, since=since)
        if backlog.empty:
            return replace(backlog, since=None)
        return replace(backlog, since=since)

    def replay(self) -> Replay:
        """What to send, sorted so the same backlog always sends the same requests."""
        if self.ban_all:
            return Replay(ban_all=True)
        return Replay(hard=tuple(sorted(self.hard)), soft=tuple(sorted(self.soft)), urls=tuple(sorted(self.urls)))

    def cleared(self) -> EdgeBacklog:
        """The node is in step again."""
        return EdgeBacklog(limit=self.limit)
