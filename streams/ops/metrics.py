"""Prometheus ``/metrics`` and ``/health`` for each worker.

Every figure here is this worker's own (Prometheus adds workers up): records in and out,
events ingested and dead letters by reason, rows stored, insert batches and failures,
complaint-signal states, processing latency and the lag on this worker's partitions. The
hot path only bumps plain counters; they become Prometheus samples when scraped.
``/health`` answers 200 once the worker has recovered its tables and is not rebalancing,
and 503 otherwise, or with ``problems`` when a stage has stopped with an error, Kafka
cannot be read, or warehouse writes have been failing for long.
"""

from __future__ import annotations

import asyncio
import threading
import time
from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import faust
from faust.sensors import Sensor
from faust.web import Request, Response, View
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from touchpoint.sinks import tables
from touchpoint.sinks.base import Batch, Sink
from touchpoint.sinks.writer import WriterStats
from touchpoint.streams.ops.lag import OffsetMonitor, consumed_topics, partition_lag
from touchpoint.streams.runtime import memory

__all__ = [
    "LATENCY_BUCKETS",
    "BulkHistogram",
    "InstrumentedSink",
    "Metrics",
    "MetricsSensor",
    "health",
    "register",
    "stopped_stages",
]

# Seconds. Event time to stored also covers events that arrive hours late.
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
                   3600.0, 21600.0, 86400.0)
BATCH_ROW_BUCKETS = (1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 50000)
INSERT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class BulkHistogram:
    """A histogram that takes a whole batch of observations at the cost of a bisect each.

    prometheus_client's Histogram takes a lock per observation, too slow for every row
    of a 5,000-row insert. Thread-safe: the sink's thread observes, a scrape reads.
    """

    def __init__(self, bounds: Sequence[float]) -> None:
        if list(bounds) != sorted(bounds) or not bounds:
            raise ValueError("bounds must be a non-empty ascending sequence")
        self.bounds = tuple(float(b) for b in bounds)
        self._counts = [0] * (len(self.bounds) + 1)  # the last one is +Inf
        self._sum = 0.0
        self._lock = threading.Lock()

    def observe_many(self, values: Iterable[float]) -> None:
        """Add every value (negative ones count as 0)."""
        bounds, local = self.bounds, [0] * len(self._counts)
        total = 0.0
        for value in values:
            value = max(value, 0.0)
            local[bisect_left(bounds, value)] += 1
            total += value
        with self._lock:
            for i, n in enumerate(local):
                self._counts[i] += n
            self._sum += total

    def snapshot(self) -> tuple[list[tuple[str, float]], float]:
        """Cumulative buckets (``le`` label, count) and the sum."""
        with self._lock:
            counts, total = list(self._counts), self._sum
        buckets, running = [], 0
        for bound, n in zip((*map(str, self.bounds), "+Inf"), counts, strict=True):
            running += n
            buckets.append((bound, float(running)))
        return buckets, total


class Metrics:
    """A worker's figures: plain counters on the hot path, turned into samples on scrape."""

    def __init__(self) -> None:
        self.messages_in: Counter[str] = Counter()
        self.messages_out: Counter[str] = Counter()
        self.event_to_stored = BulkHistogram(LATENCY_BUCKETS)
        self.ingest_to_stored = BulkHistogram(LATENCY_BUCKETS)
        self.batch_rows: dict[str, BulkHistogram] = {}
        self.insert_seconds: dict[str, BulkHistogram] = {}
        self.insert_failures: Counter[tuple[str, str]] = Counter()
        self.signal_states: Counter[tuple[str, str]] = Counter()
        self._lock = threading.Lock()

    def stored(self, batch: Batch, seconds: float, at: float) -> None:
        """Note a batch the sink stored in ``seconds``, finishing at wall-clock ``at``."""
        with self._lock:
            rows = self.batch_rows.setdefault(batch.table, BulkHistogram(BATCH_ROW_BUCKETS))
            took = self.insert_seconds.setdefault(batch.table, BulkHistogram(INSERT_BUCKETS))
        rows.observe_many((len(batch.rows),))
        took.observe_many((seconds,))
        columns = batch.columns
        if batch.table == tables.EVENTS_RAW:
            occurred, ingested = columns.index("occurred_at"), columns.index("ingested_at")
            at_ms = at * 1000
            self.event_to_stored.observe_many((at_ms - r[occurred]) / 1000 for r in batch.rows)
            self.ingest_to_stored.observe_many((at_ms - r[ingested]) / 1000 for r in batch.rows)
        elif batch.table == tables.COMPLAINT_SIGNALS_RAW:
            severity, status = columns.index("severity"), columns.index("status")
            states = Counter((r[severity], r[status]) for r in batch.rows)
            with self._lock:
                self.signal_states.update(states)

    def failed(self, batch: Batch, error: BaseException) -> None:
        """Note an insert that raised (the writer retries it)."""
        with self._lock:
            self.insert_failures[(batch.table, type(error).__name__)] += 1

    def sink_figures(self) -> tuple[dict[str, BulkHistogram], dict[str, BulkHistogram],
                                    dict[tuple[str, str], int], dict[tuple[str, str], int]]:
        """Copies of what the sink's thread writes.

        Batch rows and insert seconds per table, failures, signal states.
        """
        with self._lock:
            return (dict(self.batch_rows), dict(self.insert_seconds),
                    dict(self.insert_failures), dict(self.signal_states))


class InstrumentedSink(Sink):
    """Wraps a sink: times every insert, counts its rows, failures and what it stored."""

    def __init__(self, sink: Sink, metrics: Metrics,
                 clock: Callable[[], float] = time.time) -> None:
        self.sink = sink
        self.metrics = metrics
        self._clock = clock

    def write(self, batch: Batch) -> None:
        """Store ``batch`` through the wrapped sink, and note how it went."""
        started = time.perf_counter()
        try:
            self.sink.write(batch)
        except BaseException as exc:
            self.metrics.failed(batch, exc)
            raise
        self.metrics.stored(batch, time.perf_counter() - started, self._clock())

    def flush(self) -> None:
        """Flush the wrapped sink."""
        self.sink.flush()

    def close(self) -> None:
        """Close the wrapped sink."""
        self.sink.close()


class MetricsSensor(Sensor):
    """Counts records read from and sent to Kafka, per topic (a Faust sensor)."""

    def __init__(self, metrics: Metrics, **kwargs: Any) -> None:
        self.metrics = metrics
        super().__init__(**kwargs)

    def on_message_in(self, tp: Any, offset: int, message: Any) -> None:
        """A record was read."""
        self.metrics.messages_in[tp.topic] += 1

    def on_send_completed(self, producer: Any, state: Any, metadata: Any) -> None:
        """A record was acknowledged by the broker."""
        self.metrics.messages_out[metadata.topic] += 1

    def on_records_sent(self, topic: str, count: int) -> None:
        """``count`` records sent in batches (``outbox.py``) were acknowledged."""
        self.metrics.messages_out[topic] += count


class _Collector(Collector):
    """Turns the worker's counters into Prometheus samples when scraped."""

    def __init__(self, metrics: Metrics, pipeline: Any, monitor: OffsetMonitor | None,
                 assignment: Callable[[], Iterable[Any]], consumed: Sequence[str]) -> None:
        self.metrics = metrics
        self.pipeline = pipeline
        self.monitor = monitor
        self.assignment = assignment
        self.consumed = list(consumed)
        self.pauses = memory.pauses()

    def collect(self) -> Iterator[Metric]:
        m, p = self.metrics, self.pipeline
        yield _counter("touchpoint_messages_in", "Records read from Kafka.", "topic",
                       m.messages_in)
        yield _counter("touchpoint_messages_out", "Records sent to Kafka (acknowledged).",
                       "topic", m.messages_out)
        yield _counter("touchpoint_events_ingested", "Valid events ingested, per channel.",
                       "channel", p.ingest_stats.accepted)
        yield _counter("touchpoint_deadletters", "Records sent to the dead-letter topic, "
                       "per reason code.", "reason", p.ingest_stats.rejected)
        stats = p.writer.stats
        yield _counter("touchpoint_sink_rows", "Rows stored in the warehouse, per table.",
                       "table", stats.rows)
        yield _counter("touchpoint_sink_retries", "Failed inserts the writer retried.",
                       None, {(): stats.retries})
        batch_rows, insert_seconds, insert_failures, signal_states = m.sink_figures()
        failures = CounterMetricFamily("touchpoint_sink_insert_failures",
                                       "Inserts that failed, per table and error.",
                                       labels=["table", "error"])
        for (table, error), n in sorted(insert_failures.items()):
            failures.add_metric([table, error], n)
        yield failures
        retrying = GaugeMetricFamily("touchpoint_sink_retrying_seconds",
                                     "How long the writer has been retrying (0: it is not).")
        since = stats.retrying_since
        retrying.add_metric([], 0.0 if since is None else max(time.time() - since, 0.0))
        yield retrying
        yield _histograms("touchpoint_sink_batch_rows", "Rows per warehouse insert.",
                          batch_rows)
        yield _histograms("touchpoint_sink_insert_seconds", "Duration of warehouse inserts.",
                          insert_seconds)
        yield _histogram("touchpoint_event_to_stored_seconds",
                         "From an event's time (occurred_at) to its row being stored.",
                         m.event_to_stored)
        yield _histogram("touchpoint_ingest_to_stored_seconds",
                         "From an event's ingest by a worker to its row being stored.",
                         m.ingest_to_stored)
        states = CounterMetricFamily("touchpoint_signal_states",
                                     "Complaint-signal states stored (raised, escalated, "
                                     "closed), per severity and status.",
                                     labels=["severity", "status"])
        for (severity, status), n in sorted(signal_states.items()):
            states.add_metric([severity, status], n)
        yield states
        for stage, counters in (("identity", p.identity_stats), ("profiles", p.profile_stats)):
            family = CounterMetricFamily(f"touchpoint_{stage}_records",
                                         f"Records the {stage} stage handled, per outcome.",
                                         labels=["outcome"])
            for name, n in sorted(dict(counters).items()):
                family.add_metric([name], n)
            yield family
        yield from self._lag()
        yield from self._collector()

    def _collector(self) -> Iterator[Metric]:
        pauses = self.pauses
        collections = CounterMetricFamily(
            "touchpoint_gc_collections", "Python garbage collections, per generation.",
            labels=["generation"])
        seconds = CounterMetricFamily(
            "touchpoint_gc_pause_seconds", "Time spent in Python garbage collections (nothing "
            "else runs meanwhile), per generation.", labels=["generation"])
        for generation in range(3):
            collections.add_metric([str(generation)], pauses.collections[generation])
            seconds.add_metric([str(generation)], pauses.seconds[generation])
        yield collections
        yield seconds

    def _assigned(self) -> set[tuple[str, int]]:
        try:
            return {(tp.topic, tp.partition) for tp in self.assignment()}
        except Exception:  # no consumer yet (starting): nothing assigned
            return set()

    def _lag(self) -> Iterator[Metric]:
        lag = GaugeMetricFamily("touchpoint_consumer_lag",
                                "Records not yet committed by the group on the partitions "
                                "this worker is assigned.", labels=["topic", "partition"])
        age = GaugeMetricFamily("touchpoint_kafka_offsets_age_seconds",
                                "Age of the offsets the lag is computed from.")
        latest = None if self.monitor is None else self.monitor.latest
        if latest is not None:
            mine = self._assigned()
            for row in partition_lag(latest, self.consumed):
                if (row["topic"], row["partition"]) in mine:
                    lag.add_metric([row["topic"], str(row["partition"])], row["lag"])
            age.add_metric([], max(time.time() - latest.at, 0.0))
        yield lag
        yield age


def _counter(name: str, documentation: str, label: str | None,
             values: Any) -> CounterMetricFamily:
    family = CounterMetricFamily(name, documentation, labels=[label] if label else [])
    for key, n in sorted(dict(values).items()):
        family.add_metric([key] if label else [], n)
    return family


def _histogram(name: str, documentation: str, histogram: BulkHistogram
               ) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, documentation)
    buckets, total = histogram.snapshot()
    family.add_metric([], buckets, total)
    return family


def _histograms(name: str, documentation: str,
                by_table: dict[str, BulkHistogram]) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, documentation, labels=["table"])
    for table, histogram in sorted(dict(by_table).items()):
        buckets, total = histogram.snapshot()
        family.add_metric([table], buckets, total)
    return family


#: How long Kafka may go unread by the offset monitor (a sample every 10 s unwatched)
#: before ``/health`` fails: samples missed in a row, not one slow one.
KAFKA_GRACE_SECONDS = 30.0
#: How long the writer may retry failing warehouse writes before ``/health`` fails: an
#: outage the worker rides out (it pauses, loses nothing) is not worth a page at once.
WAREHOUSE_GRACE_SECONDS = 120.0


def health(app: faust.App, *, monitor: OffsetMonitor | None = None,
           writer_stats: WriterStats | None = None, since: float | None = None,
           now: float | None = None,
           kafka_grace: float = KAFKA_GRACE_SECONDS,
           warehouse_grace: float = WAREHOUSE_GRACE_SECONDS) -> dict[str, Any]:
    """Readiness: tables recovered, not rebalancing, and nothing broken.

    Broken (``problems``, one sentence each, about the worker and never its data): a
    stage that stopped with an error (until the worker restarts: the records it held
    stay unacknowledged, and hold back its partitions' commits); no offsets read from
    Kafka by ``monitor`` for ``kafka_grace`` seconds (counted from ``since``, the
    worker's start, before its first sample); the writer retrying failed writes for
    ``warehouse_grace`` seconds.
    """
    now = time.time() if now is None else now
    # TableManagerT does not declare it; TableManager has it
    recovered = app.tables.recovery.completed.is_set()  # type: ignore[attr-defined]
    rebalancing = bool(app.rebalancing)
    state: dict[str, Any] = {
        "ready": recovered and not rebalancing, "tables_recovered": recovered,
        "rebalancing": rebalancing, "in_recovery": bool(app.in_recovery)}
    problems = [f"stage {name} stopped ({error}): restart the worker"
                for name, error in sorted(stopped_stages(app).items())]
    if monitor is not None:
        latest = monitor.latest
        read_at = latest.at if latest is not None else since
        if read_at is not None and now - read_at > kafka_grace:
            why = f" ({monitor.error[:200]})" if monitor.error else ""
            problems.append(f"Kafka unreachable: no offsets read for {now - read_at:.0f} s{why}")
    failing_since = None if writer_stats is None else writer_stats.retrying_since
    if failing_since is not None and now - failing_since > warehouse_grace:
        problems.append(f"warehouse writes failing for {now - failing_since:.0f} s "
                        "(retried; see /status)")
    if problems:
        state["ready"] = False
        state["problems"] = problems
    return state


def stopped_stages(app: faust.App) -> dict[str, str]:
    """The stages (Faust agents) that stopped with an error: name -> the error's type.

    Faust restarts a crashed agent's actor, but the records the crashed one held are
    never acknowledged: a crash is remembered (``App.stage_crashes``, ``app.py``) until
    the worker restarts. An actor crashed right now counts too; one cancelled by a
    rebalance (Faust marks it crashed, and replaces it) does not.
    """
    found = dict(getattr(app, "stage_crashes", None) or {})
    for name, agent in dict(getattr(app, "agents", None) or {}).items():
        for actor in list(getattr(agent, "_actors", None) or ()):
            reason = getattr(actor, "crash_reason", None)
            if getattr(actor, "crashed", False) and reason is not None \
                    and not isinstance(reason, asyncio.CancelledError):
                found.setdefault(str(name), type(reason).__name__)
    return found


def register(app: faust.App, *, pipeline: Any, monitor: OffsetMonitor | None) -> Metrics:
    """Instrument ``pipeline`` and add ``/metrics`` and ``/health`` to the worker.

    The writer's sink is wrapped (insert timing, rows, failures, latency), a sensor
    counts records per topic, and the lag is read from ``monitor``'s latest sample.
    """
    metrics = Metrics()
    started = time.time()
    pipeline.writer.sink = InstrumentedSink(pipeline.writer.sink, metrics)
    app.sensors.add(MetricsSensor(metrics))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(metrics, pipeline, monitor,
                                 lambda: app.consumer.assignment(),
                                 consumed_topics(pipeline.topics)))

    @app.page("/metrics")
    class Prometheus(View):
        """The worker's metrics in Prometheus' text format."""

        async def get(self, request: Request) -> Response:
            if monitor is not None:
                monitor.watched()  # scraped: keep the lag fresh
            return self.bytes(generate_latest(registry),
                              headers={"Content-Type": CONTENT_TYPE_LATEST})

    @app.page("/health")
    class Health(View):
        """200 when ready (tables recovered, not rebalancing) and nothing broken, else 503."""

        async def get(self, request: Request) -> Response:
            state = health(app, monitor=monitor, writer_stats=pipeline.writer.stats,
                           since=started)
            return self.json(state, status=200 if state["ready"] else 503)

    return metrics
