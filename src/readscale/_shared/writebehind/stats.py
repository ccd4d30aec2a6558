"""What the async and sync write-behind drivers share: the record a batch writer gets,
the dead-letter record, and the counters (with their Prometheus collector).

Counters are plain attributes incremented by the drivers; the collector reads them only
when scraped, so exporting costs nothing per write.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from readscale._core.writebehind.flush import FailureKind


@dataclass(frozen=True, slots=True)
class WriteRecord:
    """One write for the database: the newest queued version of ``key``.

    Arguments:
        key: the cache key the application wrote (without the cache's prefix).
        namespace: the cache policy's namespace ("" for none): lets one writer route
            several kinds of data to several tables.
        version: the write's version; apply the record only over an older version.
        value: the decoded value.
        payload: the value as the codec encoded it (JSON text for the JSON codec).
        codec: the codec's name (``json``, ``msgpack``, ``bytes``, ``pickle``).
        entry_id: the record's id in the stream.
        enqueued_at: when it was queued (Redis server time, epoch seconds).
    """

    key: str
    namespace: str
    version: int
    value: Any
    payload: bytes
    codec: str
    entry_id: str
    enqueued_at: float


@dataclass(frozen=True, slots=True)
class CounterRecord:
    """Counter increments for the database: one sums record of the queue.

    ``deltas`` maps a cache key to the sum of its increments in this record. A batch
    writer adds them and records ``entry_id`` in the same transaction, and skips a
    record whose id it already recorded: that is what makes increments exactly once.
    """

    entry_id: str
    deltas: Mapping[str, int]


@dataclass(frozen=True, slots=True)
class RefusedIncrement:
    """A counter's delta the database refused (its key does not convert, a constraint):
    dead-lettered with its error; the rest of its record is applied."""

    key: str
    delta: int
    error: str
    error_type: str


@dataclass(frozen=True, slots=True)
class IncrementsApplied:
    """What a batch writer did with sums records: ``applied`` now, ``duplicates`` it
    had already applied (a redelivery), and the deltas it refused (now or then)."""

    applied: int
    duplicates: int
    refused: tuple[RefusedIncrement, ...] = ()


class RecordRejected(Exception):
    """Raised by a batch writer when a record's data cannot become a row (its key or
    value does not convert): the record's fault, so the flusher isolates it."""


@dataclass(frozen=True, slots=True)
class DeadLetterRecord:
    """A record the flusher gave up on, as kept in the dead-letter stream."""

    id: str
    original_id: str
    key: str
    namespace: str
    version: int | None
    error: str
    error_type: str
    attempts: int
    failed_at: float
    consumer: str
    envelope: bytes = field(repr=False, default=b"")
    #: For a refused counter increment: its delta (``version`` and ``envelope`` are empty).
    delta: int | None = None


class Histogram:
    """Fixed buckets (upper bounds, cumulative on export, like Prometheus)."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.sum += value
        for i, bound in enumerate(self.bounds):
            if value <= bound:
                self.counts[i] += 1
                return
        self.counts[-1] += 1

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[str, int]]:
        out: list[tuple[str, int]] = []
        total = 0
        for bound, n in zip((*self.bounds, float("inf")), self.counts, strict=True):
            total += n
            out.append(("+Inf" if bound == float("inf") else repr(float(bound)), total))
        return out


BATCH_SIZE_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)
LAG_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


@dataclass(slots=True)
class WriteBehindStats:
    """Producer counters: writes and increments queued, waits and refusals for room,
    failures, checks of the server's persistence settings (``durability_refusals``: the
    checks that found a setting too weak for the mode) and, from the last check,
    ``aof_delayed_fsync`` (INFO: fsyncs Redis postponed past its limit; -1: unknown)."""

    name: str = "default"
    writes: int = 0
    increments: int = 0
    full_waits: int = 0
    full_rejections: int = 0
    errors: int = 0
    durability_checks: int = 0
    durability_refusals: int = 0
    aof_delayed_fsync: int = -1

    def snapshot(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(slots=True)
class FlusherStats:
    """Flusher counters and gauges.

    ``records_read`` counts records taken from the queue (``reclaimed`` of them claimed
    from another consumer); ``coalesced`` those superseded by a newer version in the same
    batch; ``rows_applied`` / ``rows_skipped`` what the database did with the rest (a skip
    is a version the database already had, or an older one). ``transactions`` counts
    committed batch transactions, ``retries`` failed writes tried again, ``splits`` batches
    halved to isolate a bad record, ``dead_letters`` records given up on.
    ``queue_length`` is the stream's length at the last look, ``flush_lag`` the age of
    the oldest record of the last committed batch (seconds). Counters: ``seals`` moves of
    the running sums into the stream, ``sums_applied`` sums records added to the
    database, ``sums_duplicates`` those it already had (skipped: exactly once),
    ``increments_refused`` deltas dead-lettered. Durability: ``durability_checks`` and
    ``durability_refusals`` (checks that found the Redis too weak for the mode),
    ``durability_ok`` (1 or 0 at the last check) and ``aof_delayed_fsync`` (INFO's
    count of fsyncs Redis postponed past its limit, -1 unknown; logged when it grows).
    """

    name: str = "default"
    batches: int = 0
    records_read: int = 0
    reclaimed: int = 0
    coalesced: int = 0
    rows_applied: int = 0
    rows_skipped: int = 0
    transactions: int = 0
    retries: int = 0
    transient_failures: int = 0
    record_failures: int = 0
    splits: int = 0
    dead_letters: int = 0
    redis_errors: int = 0
    seals: int = 0
    sums_applied: int = 0
    sums_duplicates: int = 0
    increments_refused: int = 0
    durability_checks: int = 0
    durability_refusals: int = 0
    queue_length: int = 0
    flush_lag: float = 0.0
    durability_ok: int = 1
    aof_delayed_fsync: int = -1
    batch_sizes: Histogram = field(default_factory=lambda: Histogram(BATCH_SIZE_BUCKETS))
    lags: Histogram = field(default_factory=lambda: Histogram(LAG_BUCKETS))

    def snapshot(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Histogram):
                out[f.name] = {"count": value.count, "sum": value.sum, "buckets": value.cumulative()}
            else:
                out[f.name] = value
        return out


_FLUSHER_COUNTERS = (
    "batches",
    "records_read",
    "reclaimed",
    "coalesced",
    "rows_applied",
    "rows_skipped",
    "transactions",
    "retries",
    "transient_failures",
    "record_failures",
    "splits",
    "dead_letters",
    "redis_errors",
    "seals",
    "sums_applied",
    "sums_duplicates",
    "increments_refused",
    "durability_checks",
    "durability_refusals",
)
_PRODUCER_COUNTERS = (
    "writes",
    "increments",
    "full_waits",
    "full_rejections",
    "errors",
    "durability_checks",
    "durability_refusals",
)


class WriteBehindCollector:
    """A prometheus-client collector for write-behind producers and flushers.

    ``prometheus_client.REGISTRY.register(WriteBehindCollector(wb.stats, flusher.stats))``
    """

    def __init__(self, *stats: WriteBehindStats | FlusherStats) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        produced = CounterMetricFamily(
            "readscale_writebehind_producer_events", "Write-behind producer events", labels=["queue", "event"]
        )
        flushed = CounterMetricFamily(
            "readscale_writebehind_flusher_events", "Write-behind flusher events", labels=["queue", "event"]
        )
        length = GaugeMetricFamily(
            "readscale_writebehind_queue_length", "Records in the write-behind queue", labels=["queue"]
        )
        lag = GaugeMetricFamily(
            "readscale_writebehind_flush_lag_seconds",
            "Age of the oldest record of the last committed batch",
            labels=["queue"],
        )
        delayed = GaugeMetricFamily(
            "readscale_writebehind_aof_delayed_fsync",
            "Redis INFO aof_delayed_fsync at the last check: fsyncs postponed past Redis's limit (-1: unknown)",
            labels=["queue", "role"],
        )
        durable = GaugeMetricFamily(
            "readscale_writebehind_durability_ok",
            "1 when the queue's Redis kept the mode's settings at the flusher's last check, else 0",
            labels=["queue"],
        )
        sizes = HistogramMetricFamily("readscale_writebehind_batch_size", "Records per written batch", labels=["queue"])
        lags = HistogramMetricFamily(
            "readscale_writebehind_record_lag_seconds", "Queue-to-commit time of written batches", labels=["queue"]
        )
        for stats in self._stats:
            if isinstance(stats, WriteBehindStats):
                for name in _PRODUCER_COUNTERS:
                    produced.add_metric([stats.name, name], getattr(stats, name))
                delayed.add_metric([stats.name, "producer"], stats.aof_delayed_fsync)
                continue
            for name in _FLUSHER_COUNTERS:
                flushed.add_metric([stats.name, name], getattr(stats, name))
            length.add_metric([stats.name], stats.queue_length)
            lag.add_metric([stats.name], stats.flush_lag)
            delayed.add_metric([stats.name, "flusher"], stats.aof_delayed_fsync)
            durable.add_metric([stats.name], stats.durability_ok)
            sizes.add_metric([stats.name], stats.batch_sizes.cumulative(), stats.batch_sizes.sum)
            lags.add_metric([stats.name], stats.lags.cumulative(), stats.lags.sum)
        yield from (produced, flushed, length, lag, delayed, durable, sizes, lags)


__all__ = [
    "CounterRecord",
    "DeadLetterRecord",
    "FailureKind",
    "FlusherStats",
    "Histogram",
    "IncrementsApplied",
    "RecordRejected",
    "RefusedIncrement",
    "WriteBehindCollector",
    "WriteBehindStats",
    "WriteRecord",
]
