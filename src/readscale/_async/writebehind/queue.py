"""The write-behind queue on Redis: one stream, its version clock and its dead-letter
stream, with every command the producer and the flusher send.

Scripts keep each step atomic:

- ``enqueue``: refuse when the queue is full; else take the next version from the
  clock, store the cache entry, void the entry's fill rights (lease, tickets: a fill
  that read the database before the write is refused, as after an invalidation) and
  append the record (``readscale._core.writebehind``, invariant 1). Redis writes the AOF
  before it replies, so an acknowledged write survives a crash of the Redis process;
  see the docs for ``appendfsync``.
- acknowledge: ``XACK`` + ``XDEL`` (+ ``XLEN``) in one ``MULTI``, so the stream's length is
  the number of records not yet flushed, which is what backpressure measures.
- dead-letter: append to the dead-letter stream, acknowledge and delete the record, and
  drop the cache entry if it still holds the refused value, in one script.
- ``increment``: add a counter's delta to the queue's running-sum hash (and, for the
  first delta since the last move, append a seal request that wakes a flusher).
- ``seal``: move the running sums into the stream as one record and empty the hash, in
  one script, so each delta is in exactly one sums record.
- ``server_facts``: the persistence settings the durability modes are checked against.

Errors of redis-py become :class:`CacheUnavailableError` here. A missing consumer group
(a Redis that lost its data) is created again, from the start of the stream.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Sequence
from typing import Any

from redis.exceptions import NoScriptError, RedisClusterException, RedisError, ResponseError

from readscale._async.writebehind import _queue_scripts
from readscale._core.cache.keys import companion_key
from readscale._core.writebehind.flush import ConsumerInfo
from readscale._core.writebehind.modes import CONFIG_SETTINGS, ServerFacts
from readscale._core.writebehind.records import DeadLetterRecord
from readscale._core.writebehind.settings import QueueKeys, queue_keys
from readscale._shared.redis_clients import async_redis_client
from readscale.errors import CacheUnavailableError, ConfigurationError, DurabilityError
from readscale.settings import RedisSettings

_ERRORS = (RedisError, RedisClusterException, OSError, TimeoutError)

Entry = tuple[str, dict[bytes, bytes]]


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000 + 0.999))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class AsyncWriteQueue:
    """One write-behind queue on a standalone Redis (see the module docstring).

    ``client`` is a redis-py asyncio client; ``keys`` come from
    :func:`readscale._core.writebehind.settings.queue_keys`. Use :meth:`from_url` for tools
    (status, dead letters) that have no cache at hand.
    """

    def __init__(self, client: Any, keys: QueueKeys, *, where: str = "redis", fill_channel: str = "") -> None:
        if type(client).__name__ == "RedisCluster":
            raise ConfigurationError(
                "write-behind needs a standalone Redis: the entry, the version clock and the queue record are "
                "written by one script, which Redis Cluster allows only within one hash slot, and an entry's slot "
                "is its key's. Run the write-behind cache on a standalone Redis with AOF (or Sentinel)."
            )
        self.client = client
        self.keys = keys
        self.where = where
        self.fill_channel = fill_channel  # where the cache's lease waiters listen ('': nobody)
        # Replicas a queued write must reach before it is acknowledged (WAIT; Sentinel, durable).
        self.wait_replicas = 0
        self.wait_ms = 1000
        self._enqueue_sha = hashlib.sha1(_queue_scripts.ENQUEUE.encode(), usedforsecurity=False).hexdigest()
        self._increment_sha = hashlib.sha1(_queue_scripts.INCREMENT.encode(), usedforsecurity=False).hexdigest()
        self._seal = client.register_script(_queue_scripts.SEAL)
        self._dead_letter = client.register_script(_queue_scripts.DEAD_LETTER)
        self._dead_increments = client.register_script(_queue_scripts.DEAD_INCREMENTS)
        self._requeue = client.register_script(_queue_scripts.REQUEUE)

    @classmethod
    def from_url(cls, url: str | RedisSettings, *, prefix: str = "rs:", queue: str = "default") -> AsyncWriteQueue:
        settings = url if isinstance(url, RedisSettings) else RedisSettings(url=url, socket_timeout_ms=5000.0)
        client = async_redis_client(settings)
        return cls(client, queue_keys(prefix, queue), where=settings.safe_url)

    def _unavailable(self, action: str, exc: BaseException) -> CacheUnavailableError:
        return CacheUnavailableError(
            f"write-behind queue {self.keys.stream}: {action} failed on {self.where}: {type(exc).__name__}: {exc}",
            backend="redis",
        )

    # -- producer ----------------------------------------------------------------------------

    async def enqueue(
        self, pkey: str, envelope: bytes, ttl: float, key: str, namespace: str, limit: int
    ) -> tuple[bool, int, str]:
        """``(True, version, entry id)`` once stored and queued; ``(False, queue length, "")``
        when the queue is full (nothing stored)."""
        args = (self._enqueue_sha, 5, pkey, self.keys.stream, self.keys.clock, companion_key(pkey, "lease"),
                companion_key(pkey, "tickets"), envelope, _ms(ttl), key, namespace, limit,
                self.fill_channel)  # fmt: skip
        try:
            reply = await self._queue_script(_queue_scripts.ENQUEUE, args)
        except _ERRORS as exc:
            raise self._unavailable("queueing a write", exc) from exc
        if int(reply[0]) == 1:
            return True, int(reply[1]), _text(reply[2])
        return False, int(reply[1]), ""

    async def _queue_script(self, source: str, args: tuple[Any, ...]) -> Any:
        """EVALSHA straight away (redis-py's Script wrapper costs a tenth of the call);
        with ``wait_replicas``, WAIT on the same connection after it, so the write is on
        that many replicas before it is acknowledged (Sentinel, mode durable): fewer in
        ``wait_ms`` is a :class:`DurabilityError` (queued on the master, not acknowledged)."""
        for attempt in (0, 1):
            try:
                if not self.wait_replicas:
                    return await self.client.execute_command("EVALSHA", *args)
                pipe = self.client.pipeline(transaction=False)
                pipe.execute_command("EVALSHA", *args)
                pipe.execute_command("WAIT", self.wait_replicas, self.wait_ms)
                reply, acked = await pipe.execute()
            except NoScriptError:  # a restarted Redis has forgotten its scripts
                if attempt:
                    raise
                await self.client.script_load(source)
                continue
            if int(reply[0]) == 1 and int(acked) < self.wait_replicas:
                raise DurabilityError(
                    f"write-behind queue on {self.where}: the write reached the master but {int(acked)} of "
                    f"{self.wait_replicas} replicas within {self.wait_ms} ms, so it is not acknowledged: a failover "
                    "now could lose it (it stays queued; a retry is safe)",
                    mode="durable", setting="replicas acknowledging (WAIT)", found=str(int(acked)),
                    needed=str(self.wait_replicas),
                )  # fmt: skip
            return reply
        raise AssertionError("unreachable")

    async def increment(self, key: str, delta: int, limit: int) -> tuple[bool, int, int]:
        """``(True, version, running sum)`` once the delta is added to the running sums;
        ``(False, queue length, 0)`` when the queue is full (nothing added)."""
        args = (self._increment_sha, 3, self.keys.acc, self.keys.stream, self.keys.clock, key, delta, limit)
        try:
            reply = await self._queue_script(_queue_scripts.INCREMENT, args)
        except ResponseError as exc:
            if "overflow" in str(exc) or "not an integer" in str(exc):
                raise ConfigurationError(f"counter {key!r}: its running sum cannot take {delta}: {exc}") from exc
            raise self._unavailable("queueing an increment", exc) from exc
        except _ERRORS as exc:
            raise self._unavailable("queueing an increment", exc) from exc
        if int(reply[0]) == 1:
            return True, int(reply[1]), int(reply[2])
        return False, int(reply[1]), 0

    async def server_facts(self, assumed: dict[str, str] | None = None) -> ServerFacts:
        """The Redis's persistence settings (``CONFIG GET``; where that is disabled or
        renamed, its error and the operator's ``assumed`` values) and ``INFO persistence``.
        A Redis still loading its data raises :class:`CacheUnavailableError`."""
        config: dict[str, str] = {}
        error: str | None = None
        try:
            reply = await self.client.execute_command("CONFIG", "GET", *CONFIG_SETTINGS)
        except ResponseError as exc:  # renamed, disabled, or refused by an ACL
            error = f"{type(exc).__name__}: {exc}"
        except _ERRORS as exc:
            raise self._unavailable("CONFIG GET", exc) from exc
        else:
            items = reply.items() if isinstance(reply, dict) else zip(reply[::2], reply[1::2], strict=True)
            config = {_text(k).lower(): _text(v) for k, v in items}
        try:
            info = await self.client.info("persistence")
        except _ERRORS as exc:
            raise self._unavailable("INFO persistence", exc) from exc
        facts = ServerFacts(
            config=config,
            info={str(k): _text(v) if isinstance(v, bytes) else str(v) for k, v in info.items()},
            config_error=error,
            assumed=dict(assumed or {}),
        )
        if facts.loading:  # INFO says aof_enabled:0 until the AOF is loaded: wait, as for an outage
            raise CacheUnavailableError(
                f"write-behind queue {self.keys.stream}: {self.where} is still loading its data", backend="redis"
            )
        return facts

    # -- flusher -----------------------------------------------------------------------------

    async def ensure_group(self, group: str) -> None:
        """Create the consumer group from the stream's start (records queued before any
        flusher ran are flushed too); an existing group is left as it is."""
        try:
            await self.client.xgroup_create(self.keys.stream, group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise self._unavailable("XGROUP CREATE", exc) from exc
        except _ERRORS as exc:
            raise self._unavailable("XGROUP CREATE", exc) from exc

    async def _xreadgroup(self, group: str, consumer: str, start: str, count: int, block: int | None) -> list[Entry]:
        for attempt in (1, 2):
            try:
                reply = await self.client.xreadgroup(group, consumer, {self.keys.stream: start}, count, block)
            except ResponseError as exc:
                if "NOGROUP" in str(exc) and attempt == 1:
                    await self.ensure_group(group)
                    continue
                raise self._unavailable("XREADGROUP", exc) from exc
            except _ERRORS as exc:
                raise self._unavailable("XREADGROUP", exc) from exc
            if not reply:
                return []
            return [(_text(entry_id), fields or {}) for entry_id, fields in reply[0][1]]
        return []  # pragma: no cover - the loop returns or raises

    async def read_new(self, group: str, consumer: str, count: int, block: float | None) -> list[Entry]:
        """Up to ``count`` records never delivered to this group, waiting up to ``block``
        seconds for the first (None: do not wait)."""
        return await self._xreadgroup(group, consumer, ">", count, None if block is None else _ms(block))

    async def read_own_pending(self, group: str, consumer: str, after: str, count: int) -> list[Entry]:
        """This consumer's pending records after id ``after`` (its work before a restart).
        A record deleted meanwhile comes back with no fields."""
        return await self._xreadgroup(group, consumer, after, count, None)

    async def claim(
        self, group: str, consumer: str, min_idle: float, start: str, count: int
    ) -> tuple[str, list[Entry], list[str]]:
        """XAUTOCLAIM: ``(next start, claimed records, ids of records deleted meanwhile)``."""
        try:
            reply = await self.client.xautoclaim(
                self.keys.stream, group, consumer, _ms(min_idle), start_id=start, count=count
            )
        except ResponseError as exc:
            if "NOGROUP" in str(exc):
                await self.ensure_group(group)
                return "0-0", [], []
            raise self._unavailable("XAUTOCLAIM", exc) from exc
        except _ERRORS as exc:
            raise self._unavailable("XAUTOCLAIM", exc) from exc
        next_start = _text(reply[0])
        claimed = [(_text(entry_id), fields or {}) for entry_id, fields in reply[1]]
        deleted = [_text(i) for i in reply[2]] if len(reply) > 2 else []
        return next_start, claimed, deleted

    async def seal(self, keys_per_record: int = 1000) -> list[str]:
        """Move the counters' running sums into the stream (see the module docstring);
        the ids of the sums records written (none when nothing was pending)."""
        try:
            reply = await self._seal(keys=[self.keys.acc, self.keys.stream], args=[keys_per_record])
        except _ERRORS as exc:
            raise self._unavailable("moving the counters' sums into the queue", exc) from exc
        return [_text(i) for i in reply or []]

    async def run_id(self) -> str:
        """The Redis process's run id (``INFO server``): another one means it restarted."""
        try:
            info = await self.client.info("server")
        except _ERRORS as exc:
            raise self._unavailable("INFO server", exc) from exc
        return _text(info.get("run_id", ""))

    async def pending_sums(self) -> int:
        """Counters with a running sum not yet moved into the stream."""
        try:
            return int(await self.client.hlen(self.keys.acc))
        except _ERRORS as exc:
            raise self._unavailable("HLEN", exc) from exc

    async def first_id(self) -> str | None:
        """The oldest record still in the stream (None: empty)."""
        try:
            rows = await self.client.xrange(self.keys.stream, min="-", max="+", count=1)
        except _ERRORS as exc:
            raise self._unavailable("XRANGE", exc) from exc
        return _text(rows[0][0]) if rows else None

    async def keep_claimed(self, group: str, consumer: str, ids: Sequence[str]) -> None:
        """Reset the idle time of records this flusher still works on (a long retry), so
        no other flusher claims them meanwhile."""
        if not ids:
            return
        try:
            await self.client.xclaim(self.keys.stream, group, consumer, 0, list(ids), justid=True)
        except _ERRORS as exc:
            raise self._unavailable("XCLAIM", exc) from exc

    async def ack(self, group: str, ids: Sequence[str]) -> int:
        """Acknowledge and delete ``ids`` in one MULTI; the queue's length after it."""
        try:
            async with self.client.pipeline(transaction=True) as pipe:
                if ids:
                    pipe.xack(self.keys.stream, group, *ids)
                    pipe.xdel(self.keys.stream, *ids)
                pipe.xlen(self.keys.stream)
                replies = await pipe.execute()
        except _ERRORS as exc:
            raise self._unavailable("XACK", exc) from exc
        return int(replies[-1])

    async def dead_letter(
        self, group: str, ids: Sequence[str], fields: dict[str, str | bytes], entry: str, envelope: bytes
    ) -> tuple[int, bool]:
        """Move a record to the dead-letter stream (see the module docstring); returns the
        queue's length and whether the cache entry (still holding ``envelope``) was dropped."""
        args: list[Any] = [group, envelope, len(ids), *ids]
        for name, value in fields.items():
            args += [name, value]
        try:
            reply = await self._dead_letter(keys=[self.keys.stream, self.keys.dead, entry], args=args)
        except _ERRORS as exc:
            raise self._unavailable("dead-lettering a record", exc) from exc
        return int(reply[0]), bool(int(reply[1]))

    async def dead_letter_increments(
        self, group: str, ids: Sequence[str], refused: Sequence[tuple[str, int, str, str]], at_ms: int, consumer: str
    ) -> int:
        """Dead-letter refused increments ``(key, delta, error, error type)`` and
        acknowledge the sums records ``ids`` that held them, in one script; the queue's
        length after it."""
        args: list[Any] = [group, len(ids), *ids]
        for key, delta, error, error_type in refused:
            args += [key, delta, error, error_type, at_ms, consumer]
        try:
            return int(await self._dead_increments(keys=[self.keys.stream, self.keys.dead], args=args))
        except _ERRORS as exc:
            raise self._unavailable("dead-lettering increments", exc) from exc

    # -- inspection ----------------------------------------------------------------------------

    async def length(self) -> int:
        try:
            return int(await self.client.xlen(self.keys.stream))
        except _ERRORS as exc:
            raise self._unavailable("XLEN", exc) from exc

    async def pending(self, group: str) -> int:
        """Records delivered to the group's flushers and not yet acknowledged."""
        try:
            summary = await self.client.xpending(self.keys.stream, group)
        except ResponseError as exc:
            if "NOGROUP" in str(exc) or "no such key" in str(exc):
                return 0
            raise self._unavailable("XPENDING", exc) from exc
        except _ERRORS as exc:
            raise self._unavailable("XPENDING", exc) from exc
        return int(summary["pending"])

    async def consumers(self, group: str) -> list[ConsumerInfo]:
        try:
            rows = await self.client.xinfo_consumers(self.keys.stream, group)
        except ResponseError as exc:
            if "NOGROUP" in str(exc) or "no such key" in str(exc):
                return []
            raise self._unavailable("XINFO CONSUMERS", exc) from exc
        except _ERRORS as exc:
            raise self._unavailable("XINFO CONSUMERS", exc) from exc
        return [ConsumerInfo(_text(r["name"]), int(r["pending"]), int(r["idle"]) / 1000.0) for r in rows]

    async def forget_consumer(self, group: str, consumer: str) -> None:
        try:
            await self.client.xgroup_delconsumer(self.keys.stream, group, consumer)
        except _ERRORS as exc:
            raise self._unavailable("XGROUP DELCONSUMER", exc) from exc

    async def dead_letter_count(self) -> int:
        try:
            return int(await self.client.xlen(self.keys.dead))
        except _ERRORS as exc:
            raise self._unavailable("XLEN", exc) from exc

    async def dead_letters(self, count: int = 100, after: str = "-") -> list[DeadLetterRecord]:
        """The oldest ``count`` dead letters (after id ``after``), with their errors."""
        try:
            rows = await self.client.xrange(self.keys.dead, min=after, max="+", count=count)
        except _ERRORS as exc:
            raise self._unavailable("XRANGE", exc) from exc
        out = []
        for entry_id, f in rows:
            version = f.get(b"v", b"")
            out.append(
                DeadLetterRecord(
                    id=_text(entry_id),
                    original_id=_text(f.get(b"id", b"")),
                    key=_text(f.get(b"k", b"")),
                    namespace=_text(f.get(b"n", b"")),
                    version=int(version) if version.isdigit() else None,
                    error=_text(f.get(b"error", b"")),
                    error_type=_text(f.get(b"type", b"")),
                    attempts=int(f.get(b"attempts", b"0") or 0),
                    failed_at=int(f.get(b"at", b"0") or 0) / 1000.0,
                    consumer=_text(f.get(b"consumer", b"")),
                    envelope=bytes(f.get(b"e", b"")),
                    delta=int(f[b"d"]) if f.get(b"d", b"").lstrip(b"-").isdigit() else None,
                )
            )
        return out

    async def requeue_dead_letters(self, ids: Sequence[str]) -> int:
        """Put dead letters back on the queue as they were (same version: the database's
        version rule still holds). Returns how many moved."""
        if not ids:
            return 0
        try:
            return int(await self._requeue(keys=[self.keys.stream, self.keys.dead, self.keys.acc], args=list(ids)))
        except _ERRORS as exc:
            raise self._unavailable("requeueing dead letters", exc) from exc

    async def aclose(self) -> None:
        with contextlib.suppress(*_ERRORS):
            await self.client.aclose()


__all__ = ["AsyncWriteQueue"]
