"""The Prometheus collectors, one per component, under one naming scheme.

Every name is ``readscale_<part>_<what>_<unit>``: counters end in ``_total``, times in
``_seconds``, sizes in ``_bytes``; ``<part>`` is ``cache``, ``replica``, ``http``, ``cdc``,
``bus``, ``purge`` or ``writebehind``. Each collector reads the component's in-process
counters (plain attributes, ``readscale._shared``) only when scraped, so exporting costs
nothing per call: the cache's hit path counts with one integer add, as without metrics.

``prometheus_client.REGISTRY.register(CacheCollector(cache.stats))`` and so on; the
names and what to do about each are in docs/observability.md; the Grafana dashboard
(deploy/grafana/readscale.json) reads only these names (a test checks it).
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any, Protocol

from readscale._shared.cache.stats import CacheStats, LoaderStats, TierStats
from readscale._shared.cdc.stats import CdcStats
from readscale._shared.histogram import Histogram
from readscale._shared.writebehind.stats import FlusherStats, WriteBehindStats


class _Families:
    """Metric families built lazily (prometheus-client is imported at scrape time)."""

    def __init__(self) -> None:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        self._kinds = {"counter": CounterMetricFamily, "gauge": GaugeMetricFamily, "histogram": HistogramMetricFamily}
        self._made: dict[str, Any] = {}

    def add(self, kind: str, name: str, doc: str, labels: Mapping[str, str], value: float | Histogram) -> None:
        family = self._made.get(name)
        if family is None:
            family = self._made[name] = self._kinds[kind](name, doc, labels=list(labels))
        if isinstance(value, Histogram):
            family.add_metric(list(labels.values()), value.cumulative(), value.sum)
        else:
            family.add_metric(list(labels.values()), value)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._made.values())


# -- the cache ----------------------------------------------------------------------------

#: TierStats fields with a family of their own; the rest go to ``readscale_cache_tier_events_total``.
_TIER_OWN = {"hits": "hits", "misses": "misses", "stale_serves": "stale_served", "fills": "fills",
             "lease_waits": "lease_waits"}  # fmt: skip
_LOADER_OWN = {"calls": "calls", "errors": "errors"}


class CacheCollector:
    """One or more caches' counters: hits, misses, stale served, fills and lease waits per
    tier; loader calls, outcomes and refused fills by reason; loader and fill durations."""

    def __init__(self, *stats: CacheStats) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Any]:
        out = _Families()
        for stats in self._stats:
            cache = {"cache": stats.name}
            for tier_name in ("l1", "l2"):
                tier: TierStats = getattr(stats, tier_name)
                labels = {**cache, "tier": tier_name}
                for f in fields(TierStats):
                    value = getattr(tier, f.name)
                    if f.name in _TIER_OWN:
                        what = _TIER_OWN[f.name]
                        out.add("counter", f"readscale_cache_{what}", f"Cache {what.replace('_', ' ')} per tier",
                                labels, value)  # fmt: skip
                    else:
                        out.add("counter", "readscale_cache_tier_events", "Other cache events per tier",
                                {**labels, "event": f.name}, value)  # fmt: skip
            for f in fields(LoaderStats):
                value = getattr(stats.loader, f.name)
                if f.name == "seconds" or f.name.startswith("fills_refused_"):
                    continue
                if f.name in _LOADER_OWN:
                    out.add("counter", f"readscale_cache_loader_{f.name}", f"Loader {f.name}", cache, value)
                elif f.name == "fills_refused":
                    continue
                else:
                    out.add("counter", "readscale_cache_loader_events", "Loader outcomes and bypasses",
                            {**cache, "event": f.name}, value)  # fmt: skip
            for f in fields(LoaderStats):
                if f.name.startswith("fills_refused_"):
                    out.add("counter", "readscale_cache_fills_refused", "Fills not stored, by reason",
                            {**cache, "reason": f.name.removeprefix("fills_refused_")},
                            getattr(stats.loader, f.name))  # fmt: skip
            out.add("counter", "readscale_cache_breaker_opens", "L2 breaker openings", cache, stats.breaker_opens)
            out.add("counter", "readscale_cache_invalidations", "Keys invalidated", cache, stats.invalidations)
            out.add("histogram", "readscale_cache_loader_duration_seconds", "Loader call durations", cache,
                    stats.loader_seconds)  # fmt: skip
            out.add("histogram", "readscale_cache_fill_duration_seconds", "Fill durations (load to stored)", cache,
                    stats.fill_seconds)  # fmt: skip
        yield from out


# -- the replica router ---------------------------------------------------------------------


class _Router(Protocol):
    def status(self) -> Iterable[Any]: ...

    def stats(self) -> Any: ...


_NAN = float("nan")
_ROUTER_OWN = {"primary_reads": "primary_fallbacks", "refusals": "refusals"}


class ReplicaCollector:
    """A replica router's nodes (lag in seconds and bytes, routable, reads, ejections and
    readmissions) and its counters (primary fallbacks, refusals, waits...)."""

    def __init__(self, router: _Router, *, name: str = "default") -> None:
        self._router = router
        self._name = name

    def collect(self) -> Iterator[Any]:
        out = _Families()
        router = {"router": self._name}
        for node in self._router.status():
            labels = {**router, "node": node.name, "role": node.role}
            out.add("gauge", "readscale_replica_routable", "1 when the node takes reads, else 0", labels,
                    1 if node.status in ("ok", "admitted") else 0)  # fmt: skip
            # Unknown (never polled, or unreachable): NaN, so the series exists and says so.
            out.add("gauge", "readscale_replica_lag_seconds", "Replica lag behind the primary (NaN: unknown)", labels,
                    _NAN if node.lag_seconds is None else node.lag_seconds)  # fmt: skip
            out.add("gauge", "readscale_replica_lag_bytes", "Replica WAL lag (NaN: unknown)", labels,
                    _NAN if node.lag_bytes is None else node.lag_bytes)  # fmt: skip
            out.add("gauge", "readscale_replica_inflight_reads", "Reads in flight", labels, node.inflight)
            out.add("counter", "readscale_replica_reads", "Reads served per node", labels, node.reads)
            out.add("counter", "readscale_replica_ejections", "Times taken out of rotation", labels, node.ejections)
            out.add("counter", "readscale_replica_readmissions", "Times put back in rotation", labels,
                    node.readmissions)  # fmt: skip
        counters = self._router.stats()
        for name, value in ((f.name, getattr(counters, f.name)) for f in fields(counters)):
            if name in _ROUTER_OWN:
                out.add("counter", f"readscale_replica_{_ROUTER_OWN[name]}", f"Router {name.replace('_', ' ')}",
                        router, value)  # fmt: skip
            else:
                out.add("counter", "readscale_replica_router_events", "Router events", {**router, "event": name}, value)
        yield from out


# -- the HTTP middleware --------------------------------------------------------------------


#: ``HeaderPlan.refusal`` codes (readscale._core.http.decide): exported at 0 before they happen.
REFUSAL_CODES = ("cookie", "causal_token", "identity_read", "identity_vary", "authorization", "vary_star",
                 "unlisted_read", "max_vary", "status", "tags_over_budget")  # fmt: skip


class HttpCollector:
    """An HTTP middleware's decisions: responses sent public, private, no-store or refused
    public (by reason code), 304s, 412s and header errors."""

    def __init__(self, metrics: Any, *, app: str = "default") -> None:
        self._metrics = metrics
        self._app = app

    def collect(self) -> Iterator[Any]:
        out = _Families()
        m, app = self._metrics, {"app": self._app}
        for decision, value in (("public", m.shared), ("private", m.private), ("no_store", m.no_store),
                                ("refused", m.downgraded)):  # fmt: skip
            out.add("counter", "readscale_http_responses", "Responses by caching decision",
                    {**app, "decision": decision}, value)  # fmt: skip
        for reason in (*REFUSAL_CODES, *sorted(set(m.refusals) - set(REFUSAL_CODES))):
            out.add("counter", "readscale_http_refused", "Public refused (sent private), by reason",
                    {**app, "reason": reason}, m.refusals.get(reason, 0))  # fmt: skip
        for name in ("not_modified", "precondition_failed", "header_errors", "undeclared_reads"):
            out.add("counter", f"readscale_http_{name}", f"HTTP {name.replace('_', ' ')}", app, getattr(m, name))
        yield from out


# -- the CDC worker -------------------------------------------------------------------------


class CdcCollector:
    """CDC workers (``worker.stats``, labelled by slot): lag behind the primary in bytes
    and seconds, batches, transactions, invalidations, slot resets, errors."""

    def __init__(self, *workers: Any) -> None:
        self._workers = workers

    def collect(self) -> Iterator[Any]:
        out = _Families()
        for worker in self._workers:
            stats: CdcStats = worker.stats
            slot = {"slot": worker.settings.slot}
            out.add("gauge", "readscale_cdc_lag_bytes", "WAL not yet applied", slot, stats.lag_bytes)
            out.add("gauge", "readscale_cdc_lag_seconds", "Age bound of the oldest unapplied change", slot,
                    stats.lag_seconds)  # fmt: skip
            for name in ("batches", "transactions", "changes", "keys_invalidated", "tags_invalidated", "slot_resets",
                         "errors"):  # fmt: skip
                out.add("counter", f"readscale_cdc_{name}", f"CDC {name.replace('_', ' ')}", slot, getattr(stats, name))
        yield from out


# -- the invalidation bus -------------------------------------------------------------------


class BusCollector:
    """Invalidation buses (``bus.stats``, labelled by channel): messages, reconnects and
    the local flushes they caused, delivery delay."""

    def __init__(self, *buses: Any) -> None:
        self._buses = buses

    def collect(self) -> Iterator[Any]:
        out = _Families()
        for bus in self._buses:
            s, channel = bus.stats, {"channel": bus.channel}
            for direction, value in (("published", s.published), ("received", s.received),
                                     ("own_skipped", s.own_skipped), ("undecodable", s.undecodable)):  # fmt: skip
                out.add("counter", "readscale_bus_messages", "Bus messages", {**channel, "direction": direction}, value)
            for name in ("reconnects", "disconnects", "l1_flushes", "handler_errors"):
                out.add("counter", f"readscale_bus_{name}", f"Bus {name.replace('_', ' ')}", channel, getattr(s, name))
            out.add("counter", "readscale_bus_delay_seconds", "Sum of delivery delays", channel, s.delay_sum)
            out.add("gauge", "readscale_bus_delay_max_seconds", "Longest delivery delay", channel, s.delay_max)
        yield from out


# -- the purgers ----------------------------------------------------------------------------


class PurgeCollector:
    """Edge purgers, per node: requests, retries, failures, tags and URLs sent, objects
    purged, replays and backlogs (docs/edge.md). A purger with ``node_stats`` (a mapping
    node -> stats; ``VarnishPurger``) is exported per node;
    otherwise its ``stats`` under its ``node`` (the edge's URL, or the vendor)."""

    def __init__(self, *purgers: Any) -> None:
        self._purgers = purgers

    def collect(self) -> Iterator[Any]:
        out = _Families()
        for purger in self._purgers:
            vendor = str(getattr(purger, "vendor", "edge"))
            per_node = getattr(purger, "node_stats", None)
            nodes = dict(per_node) if per_node is not None else {str(getattr(purger, "node", vendor)): purger.stats}
            for node, stats in nodes.items():
                labels = {"vendor": vendor, "node": node}
                for name in ("requests", "retries", "failures", "tags", "urls"):
                    out.add("counter", f"readscale_purge_{name}", f"Purge {name}", labels, getattr(stats, name))
                out.add("counter", "readscale_purge_objects", "Objects the edge said it purged", labels, stats.purged)
                out.add("counter", "readscale_purge_replays", "Backlogs of missed purges replayed to a node that "
                        "answered again (docs/edge.md)", labels, stats.replays)  # fmt: skip
                out.add("gauge", "readscale_purge_backlog_items", "Purges a node missed, not replayed yet", labels,
                        stats.backlog)  # fmt: skip
        yield from out


# -- write-behind ---------------------------------------------------------------------------

_FLUSHER_COUNTERS = (
    "batches", "records_read", "reclaimed", "coalesced", "rows_applied", "rows_skipped", "transactions", "retries",
    "transient_failures", "record_failures", "splits", "dead_letters", "redis_errors", "seals", "sums_applied",
    "sums_duplicates", "increments_refused", "durability_checks", "durability_refusals",
)  # fmt: skip
_PRODUCER_COUNTERS = (
    "writes", "increments", "full_waits", "full_rejections", "errors", "durability_checks", "durability_refusals",
)  # fmt: skip


class WriteBehindCollector:
    """Write-behind producers and flushers: events, backlog (queue length), flush lag,
    durability checks, batch sizes and record lags."""

    def __init__(self, *stats: WriteBehindStats | FlusherStats) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Any]:
        out = _Families()
        for stats in self._stats:
            queue = {"queue": stats.name}
            if isinstance(stats, WriteBehindStats):
                for name in _PRODUCER_COUNTERS:
                    out.add("counter", "readscale_writebehind_producer_events", "Write-behind producer events",
                            {**queue, "event": name}, getattr(stats, name))  # fmt: skip
                out.add("gauge", "readscale_writebehind_aof_delayed_fsync", _AOF_DOC, {**queue, "role": "producer"},
                        stats.aof_delayed_fsync)  # fmt: skip
                continue
            for name in _FLUSHER_COUNTERS:
                out.add("counter", "readscale_writebehind_flusher_events", "Write-behind flusher events",
                        {**queue, "event": name}, getattr(stats, name))  # fmt: skip
            out.add("gauge", "readscale_writebehind_queue_length", "Records in the write-behind queue (the backlog)",
                    queue, stats.queue_length)  # fmt: skip
            out.add("gauge", "readscale_writebehind_flush_lag_seconds",
                    "Age of the oldest record of the last committed batch", queue, stats.flush_lag)  # fmt: skip
            out.add("gauge", "readscale_writebehind_aof_delayed_fsync", _AOF_DOC, {**queue, "role": "flusher"},
                    stats.aof_delayed_fsync)  # fmt: skip
            out.add("gauge", "readscale_writebehind_durability_ok",
                    "1 when the queue's Redis kept the mode's settings at the flusher's last check, else 0", queue,
                    stats.durability_ok)  # fmt: skip
            out.add("histogram", "readscale_writebehind_batch_size", "Records per written batch", queue,
                    stats.batch_sizes)  # fmt: skip
            out.add("histogram", "readscale_writebehind_record_lag_seconds", "Queue-to-commit time of written batches",
                    queue, stats.lags)  # fmt: skip
        yield from out


_AOF_DOC = "Redis INFO aof_delayed_fsync at the last check: fsyncs postponed past Redis's limit (-1: unknown)"


# -- several worker processes ---------------------------------------------------------------

log = logging.getLogger("readscale.metrics")

#: One family of a snapshot: (type, documentation, [(sample name, labels, value), ...]).
Family = tuple[str, str, list[tuple[str, dict[str, str], float]]]
#: Families whose samples add up across workers; a gauge's do not (one per live worker).
_SUMMED = frozenset({"counter", "histogram", "gaugehistogram", "summary", "untyped", "unknown"})


def snapshot_of(registry: Any) -> dict[str, Family]:
    """``registry``'s families now, as plain data (``_created`` samples dropped: a
    creation time does not add up)."""
    out: dict[str, Family] = {}
    for metric in registry.collect():
        samples = [
            (sample.name, dict(sample.labels), float(sample.value))
            for sample in metric.samples
            if not sample.name.endswith("_created") and not (metric.type == "summary" and "quantile" in sample.labels)
        ]
        out[metric.name] = (metric.type, metric.documentation, samples)
    return out


def merge_snapshots(
    own: Mapping[str, Family], others: Mapping[int, tuple[bool, Mapping[str, Family]]]
) -> dict[str, Family]:
    """The group's families: ``own`` (this worker's, live) and ``others`` (pid -> (alive,
    its last snapshot)). Counters and histograms add up over every worker, dead ones
    included (a restarted worker does not take the service's totals back); a gauge
    is one sample per live worker with a ``pid`` label."""
    merged: dict[str, tuple[str, str, dict[tuple[str, tuple[tuple[str, str], ...]], float]]] = {}
    sources: list[tuple[int, bool, Mapping[str, Family]]] = [(os.getpid(), True, own)]
    sources += [(pid, alive, families) for pid, (alive, families) in sorted(others.items())]
    for pid, alive, families in sources:
        for name, (kind, doc, samples) in families.items():
            summed = kind in _SUMMED
            if not summed and not alive:
                continue
            entry = merged.setdefault(name, (kind, doc, {}))
            values = entry[2]
            for sample, labels, value in samples:
                named = labels if summed else {**labels, "pid": str(pid)}
                key = (sample, tuple(sorted(named.items())))
                values[key] = values.get(key, 0.0) + value if summed else value
    return {
        name: (kind, doc, [(sample, dict(labels), value) for (sample, labels), value in values.items()])
        for name, (kind, doc, values) in merged.items()
    }


class SharedMetrics:
    """The metrics of every worker process of one server, served by whichever worker a
    scrape reaches.

    With several workers (``uvicorn --workers 4``, gunicorn), one scrape reaches one
    worker, and its in-process counters are a part of the service's. Each worker writes a
    snapshot of ``registry`` into ``directory`` every ``interval`` seconds (a daemon
    thread, and once more at exit); :meth:`collect` (this object is a collector) and
    :meth:`exposition` give the group's sum: counters and histograms added up over its
    workers, dead ones included, and gauges one sample per live worker with a ``pid``
    label. Other workers' figures are at most ``interval`` old. A scrape writes the
    scraped worker's snapshot first and adds up the files only, so each worker's part
    only grows and the sum never goes back between scrapes (whichever worker answers).

    The group is the workers of one start of one parent process (the server's supervisor:
    its pid and start time), so files of an earlier server in the same directory are
    ignored, a container's PID 1 included; still give each server start a fresh directory
    (or call :meth:`clear` before the workers start), as with prometheus-client's
    multiprocess mode. A dead worker's file stays (its counts are part of the totals): a
    server that recycles workers (``--limit-max-requests``, gunicorn's ``max_requests``)
    adds a file per recycled worker. Do not register it in the registry it reads. Start it
    in each worker, after the fork (in the app's lifespan)::

        shared = SharedMetrics(registry, os.environ["METRICS_DIR"]).start()
        ...
        return Response(shared.exposition(), media_type=CONTENT_TYPE_LATEST)
    """

    def __init__(self, registry: Any, directory: str | os.PathLike[str], *, interval: float = 1.0) -> None:
        if interval <= 0:
            from readscale.errors import ConfigurationError

            raise ConfigurationError(f"SharedMetrics interval must be positive, got {interval!r}")
        self.registry = registry
        self.interval = interval
        self.group = Path(directory) / _server_start()
        self._local = threading.local()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failed = False

    @staticmethod
    def clear(directory: str | os.PathLike[str]) -> None:
        """Remove every snapshot under ``directory`` (before a server starts its workers)."""
        root = Path(directory)
        for path in root.glob("*/*.json"):
            path.unlink(missing_ok=True)

    def start(self) -> SharedMetrics:
        """Write this worker's snapshot now and every ``interval`` seconds; once more at exit."""
        self.group.mkdir(parents=True, exist_ok=True)
        self.write()
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="readscale-shared-metrics", daemon=True)
            self._thread.start()
            atexit.register(self.stop)
        return self

    def stop(self) -> None:
        """Stop writing, after a last snapshot (a dead worker's counters stay in the sum)."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)
        self.write()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.write()

    def write(self) -> dict[str, Family] | None:
        """Write this worker's snapshot (atomically: a reader sees the old or the new one)
        and return it; None when it could not be written (logged once, tried again)."""
        path = self.group / f"{os.getpid()}.json"
        busy = getattr(self._local, "busy", False)
        self._local.busy = True  # registered in its own registry: its collect adds nothing
        try:
            snapshot = snapshot_of(self.registry)
            self.group.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(snapshot))
            os.replace(tmp, path)
        except Exception as exc:  # a collector racing the app, a full disk: try again later
            if not self._failed:
                self._failed = True
                log.warning(
                    "readscale.metrics: this worker's snapshot could not be written: %s",
                    exc,
                    extra={"event": "metrics_snapshot_failed", "path": str(path), "reason": str(exc)},
                )
            return None
        finally:
            self._local.busy = busy
        self._failed = False
        return snapshot

    def _others(self) -> dict[int, tuple[bool, dict[str, Family]]]:
        me = os.getpid()
        out: dict[int, tuple[bool, dict[str, Family]]] = {}
        for path in self.group.glob("*.json"):
            try:
                pid = int(path.stem)
            except ValueError:
                continue
            if pid == me:
                continue
            try:
                raw = json.loads(path.read_text())
            except (OSError, ValueError):
                continue  # removed or being replaced: the next scrape has it
            families = {name: (kind, doc, [(s, dict(labels), float(v)) for s, labels, v in samples])
                        for name, (kind, doc, samples) in raw.items()}  # fmt: skip
            out[pid] = (_alive(pid), families)
        return out

    def collect(self) -> Iterator[Any]:
        """The group's families (prometheus-client's collector protocol)."""
        from prometheus_client.metrics_core import Metric

        if getattr(self._local, "busy", False):  # registered in the registry it reads
            return
        self._local.busy = True
        try:
            # This worker's part as written for the others: what a later scrape through
            # another worker reads, so the sum does not go back (see the class).
            own = self.write()
            merged = merge_snapshots(own if own is not None else snapshot_of(self.registry), self._others())
        finally:
            self._local.busy = False
        for name, (kind, doc, samples) in merged.items():
            metric = Metric(name, doc, kind)
            for sample, labels, value in samples:
                metric.add_sample(sample, labels, value)
            yield metric

    def exposition(self) -> bytes:
        """The group's metrics in Prometheus's text format (what ``/metrics`` answers)."""
        from prometheus_client import CollectorRegistry, generate_latest

        registry = CollectorRegistry(auto_describe=False)
        registry.register(self)
        return bytes(generate_latest(registry))


def _server_start() -> str:
    """This worker's group: its parent's pid and start time (``/proc``; the pid alone
    where there is none), so a new start of the server, even with the same pid, is
    another group."""
    ppid = os.getppid()
    try:
        fields = Path(f"/proc/{ppid}/stat").read_text().rsplit(")", 1)[1].split()
        return f"{ppid}-{fields[19]}"  # field 22 of stat(5): starttime
    except (OSError, IndexError):
        return str(ppid)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# WriteBehindCollector is public as readscale.writebehind.WriteBehindCollector.
__all__ = [
    "BusCollector",
    "CacheCollector",
    "CdcCollector",
    "HttpCollector",
    "PurgeCollector",
    "ReplicaCollector",
    "SharedMetrics",
    "merge_snapshots",
    "snapshot_of",
]
