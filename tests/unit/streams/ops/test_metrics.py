from __future__ import annotations

import gc
from collections import Counter
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from touchpoint.exceptions import WarehouseUnavailable
from touchpoint.sinks.base import Batch, Sink
from touchpoint.sinks.writer import WriterStats
from touchpoint.streams.ops.lag import OffsetSample
from touchpoint.streams.ops.metrics import (
    BulkHistogram,
    InstrumentedSink,
    Metrics,
    MetricsSensor,
    _Collector,
    health,
)
from touchpoint.streams.rules.normalize import IngestStats
from touchpoint.streams.rules.rows import EVENT_COLUMNS, SIGNAL_COLUMNS
from touchpoint.streams.runtime import memory
from touchpoint.streams.topics import TopicNames


def test_bulk_histogram_buckets_are_cumulative_and_le_inclusive() -> None:
    histogram = BulkHistogram((1, 5))
    histogram.observe_many([0.5, 1.0, 3, 5, 7, -2])
    buckets, total = histogram.snapshot()
    assert buckets == [("1.0", 3.0), ("5.0", 5.0), ("+Inf", 6.0)]
    assert total == 16.5  # the negative value counts as 0


def test_bulk_histogram_needs_ascending_bounds() -> None:
    with pytest.raises(ValueError, match="ascending"):
        BulkHistogram((5, 1))


class Store(Sink):
    def __init__(self, fail: Exception | None = None) -> None:
        self.fail = fail
        self.closed = self.flushed = False

    def write(self, batch: Batch) -> None:
        if self.fail:
            raise self.fail

    def flush(self) -> None:
        self.flushed = True

    def close(self) -> None:
        self.closed = True


def _event_row(occurred_ms: int, ingested_ms: int) -> tuple[Any, ...]:
    row: list[Any] = [None] * len(EVENT_COLUMNS)
    row[EVENT_COLUMNS.index("occurred_at")] = occurred_ms
    row[EVENT_COLUMNS.index("ingested_at")] = ingested_ms
    return tuple(row)


def _signal_row(severity: str, status: str) -> tuple[Any, ...]:
    row: list[Any] = [None] * len(SIGNAL_COLUMNS)
    row[SIGNAL_COLUMNS.index("severity")] = severity
    row[SIGNAL_COLUMNS.index("status")] = status
    return tuple(row)


def test_the_sink_wrapper_measures_latency_batches_and_signals() -> None:
    metrics = Metrics()
    sink = InstrumentedSink(Store(), metrics, clock=lambda: 1000.0)
    events = [_event_row(999_990, 999_999), _event_row(400_000, 999_500)]
    sink.write(Batch("touchpoint_events_raw", EVENT_COLUMNS, events, "t"))
    sink.write(Batch("complaint_signals_raw", SIGNAL_COLUMNS,
                     [_signal_row("high", "open"), _signal_row("high", "open"),
                      _signal_row("watch", "resolved")], "t"))
    event_buckets, event_sum = metrics.event_to_stored.snapshot()
    assert event_sum == pytest.approx(0.01 + 600)  # stored at 1000 s: 10 ms and 10 min late
    assert (dict(event_buckets)["0.05"], dict(event_buckets)["300.0"],
            dict(event_buckets)["900.0"]) == (1, 1, 2)
    ingest_sum = metrics.ingest_to_stored.snapshot()[1]
    assert ingest_sum == pytest.approx(0.001 + 0.5)
    rows, took, failures, states = metrics.sink_figures()
    assert rows["touchpoint_events_raw"].snapshot() == (
        [(b, 0.0) for b in ("1.0",)] + [(b, 1.0) for b in (
            "10.0", "50.0", "100.0", "250.0", "500.0", "1000.0", "2500.0", "5000.0",
            "10000.0", "50000.0", "+Inf")], 2.0)
    assert set(took) == {"touchpoint_events_raw", "complaint_signals_raw"}
    assert failures == {}
    assert states == {("high", "open"): 2, ("watch", "resolved"): 1}


def test_the_sink_wrapper_counts_failures_and_passes_them_on() -> None:
    metrics = Metrics()
    sink = InstrumentedSink(Store(WarehouseUnavailable("down")), metrics)
    with pytest.raises(WarehouseUnavailable):
        sink.write(Batch("deadletter_raw", ("a",), [(1,)], "t"))
    assert metrics.sink_figures()[2] == {("deadletter_raw", "WarehouseUnavailable"): 1}
    assert metrics.sink_figures()[0] == {}
    sink.flush()
    sink.close()
    assert sink.sink.flushed and sink.sink.closed  # type: ignore[attr-defined]


def test_the_sensor_counts_records_per_topic() -> None:
    metrics = Metrics()
    sensor = MetricsSensor(metrics)
    for _ in range(3):
        sensor.on_message_in(SimpleNamespace(topic="a"), 1, None)
    sensor.on_send_completed(None, None, SimpleNamespace(topic="b"))
    sensor.on_records_sent("b", 4)  # a batch delivered through the outbox
    assert (metrics.messages_in, metrics.messages_out) == (Counter(a=3), Counter(b=5))


def _scrape(metrics: Metrics, monitor: Any = None,
            assigned: list[tuple[str, int]] | None = None) -> dict[str, float]:
    ingest = IngestStats(accepted=Counter(web=5, store=2),
                         rejected=Counter(undecodable=1, bad_field=2))
    writer = SimpleNamespace(stats=WriterStats(rows=Counter(touchpoint_events_raw=7),
                                               retries=3))
    pipeline = SimpleNamespace(ingest_stats=ingest, writer=writer, topics=TopicNames(),
                               identity_stats={"resolved": 7},
                               profile_stats={"applied": 6, "repeats": 1})
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(metrics, pipeline, monitor, lambda: [
        SimpleNamespace(topic=t, partition=p) for t, p in (assigned or [])],
        ["touchpoints.web", "touchpoints.resolved"]))
    samples = {}
    for line in generate_latest(registry).decode().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def test_a_scrape_shows_the_worker_counters() -> None:
    metrics = Metrics()
    metrics.messages_in["touchpoints.web"] = 9
    samples = _scrape(metrics)
    assert samples['touchpoint_messages_in_total{topic="touchpoints.web"}'] == 9
    assert samples['touchpoint_events_ingested_total{channel="web"}'] == 5
    assert samples['touchpoint_deadletters_total{reason="bad_field"}'] == 2
    assert samples['touchpoint_sink_rows_total{table="touchpoint_events_raw"}'] == 7
    assert samples["touchpoint_sink_retries_total"] == 3
    assert samples["touchpoint_sink_retrying_seconds"] == 0
    assert samples['touchpoint_identity_records_total{outcome="resolved"}'] == 7
    assert samples['touchpoint_profiles_records_total{outcome="repeats"}'] == 1
    assert samples['touchpoint_event_to_stored_seconds_bucket{le="+Inf"}'] == 0
    assert not any(k.startswith("touchpoint_consumer_lag{") for k in samples)


def test_a_scrape_shows_garbage_collector_pauses() -> None:
    memory.pauses()  # measured from here on (a worker starts it with its metrics)
    gc.collect(2)
    samples = _scrape(Metrics())
    assert samples['touchpoint_gc_collections_total{generation="2"}'] >= 1
    assert samples['touchpoint_gc_pause_seconds_total{generation="2"}'] > 0


def test_lag_is_reported_for_the_partitions_this_worker_owns() -> None:
    sample = OffsetSample(at=0.0, end={("touchpoints.web", 0): 10, ("touchpoints.web", 1): 4,
                                       ("touchpoints.resolved", 0): 3, ("other", 0): 50},
                          committed={("touchpoints.web", 0): 7})
    monitor = SimpleNamespace(latest=sample)
    samples = _scrape(Metrics(), monitor, assigned=[("touchpoints.web", 0),
                                                    ("touchpoints.resolved", 0), ("other", 0)])
    lag = {k: v for k, v in samples.items() if k.startswith("touchpoint_consumer_lag{")}
    assert lag == {'touchpoint_consumer_lag{partition="0",topic="touchpoints.web"}': 3,
                   'touchpoint_consumer_lag{partition="0",topic="touchpoints.resolved"}': 3}
    assert samples["touchpoint_kafka_offsets_age_seconds"] > 0


def _app(recovered: bool, rebalancing: bool) -> Any:
    completed = SimpleNamespace(is_set=lambda: recovered)
    return SimpleNamespace(tables=SimpleNamespace(recovery=SimpleNamespace(completed=completed)),
                           rebalancing=rebalancing, in_recovery=not recovered)


@pytest.mark.parametrize(("recovered", "rebalancing", "ready"), [
    (False, False, False), (False, True, False), (True, True, False), (True, False, True)])
def test_ready_only_after_recovery_and_outside_rebalances(recovered: bool, rebalancing: bool,
                                                          ready: bool) -> None:
    state = health(_app(recovered, rebalancing))
    assert state["ready"] is ready
    assert (state["tables_recovered"], state["rebalancing"]) == (recovered, rebalancing)
