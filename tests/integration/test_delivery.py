"""Delivery under failure: warehouse outages and killed workers lose and double nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka import KafkaConsumer, TopicPartition

from touchpoint.schemas.codec import codec_for, subject_of

from .conftest import KAFKA, REPO, Worker, WorkerFactory, free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

T0 = 1_795_000_000_000


def _events(run: str, n: int) -> list[dict[str, object]]:
    return [{"event_id": f"{run}-{i}", "type": "page_view", "occurred_at": T0 + i,
             "anonymous_id": f"ck-{i % 97}", "url": f"/p/{i % 13}"} for i in range(n)]


@pytest.fixture
def own_clickhouse(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """A ClickHouse server of this test's own, so stopping it disturbs no other test."""
    env = {**os.environ, "TOUCHPOINT_HOME": str(tmp_path / "ch"),
           "CLICKHOUSE_TCP_PORT": str(free_port()), "CLICKHOUSE_HTTP_PORT": str(free_port())}
    script = str(REPO / "deploy" / "local" / "clickhouse.sh")
    started = subprocess.run(["bash", script, "start"], env=env, capture_output=True,
                             text=True, check=False)
    assert started.returncode == 0, started.stdout + started.stderr
    try:
        yield script, env
    finally:
        subprocess.run(["bash", script, "stop"], env=env, capture_output=True, check=False)


def test_a_warehouse_outage_pauses_the_worker_and_loses_nothing(
        worker_factory: WorkerFactory, own_clickhouse: tuple[str, dict[str, str]]) -> None:
    script, ch_env = own_clickhouse
    url = f"clickhouse://127.0.0.1:{ch_env['CLICKHOUSE_TCP_PORT']}/tp_outage"
    worker = worker_factory("clickhouse", TOUCHPOINT_CLICKHOUSE_URL=url,
                            TOUCHPOINT_SINK_MAX_BACKOFF_SECONDS="1")
    run = f"out-{uuid.uuid4().hex[:8]}"
    events = _events(run, 300)
    for event in events[:100]:
        worker.publisher.publish("web", event)
    worker.publisher.flush()
    worker.wait_for(f"SELECT count() FROM touchpoint_events WHERE event_id LIKE '{run}-%'", 100)

    subprocess.run(["bash", script, "stop"], env=ch_env, check=True, capture_output=True)
    for event in events[100:]:
        worker.publisher.publish("web", event)
    worker.publisher.flush()
    deadline = time.monotonic() + 30
    while not (worker.status() or {}).get("sink", {}).get("retrying_since"):
        assert time.monotonic() < deadline, f"worker never noticed the outage: {worker.status()}"
        time.sleep(0.2)
    assert worker.process is not None and worker.process.poll() is None, "worker died"
    time.sleep(3)  # a few retry rounds while the server is down
    assert worker.process.poll() is None, f"worker died during the outage:\n{worker.log_tail()}"

    subprocess.run(["bash", script, "start"], env=ch_env, check=True, capture_output=True)
    worker.wait_for(f"SELECT count() FROM touchpoint_events WHERE event_id LIKE '{run}-%'", 300)
    assert worker.scalar(
        f"SELECT count(DISTINCT event_id) FROM touchpoint_events WHERE event_id LIKE '{run}-%'"
    ) == 300
    status = worker.status() or {}
    assert status["sink"]["retries"] >= 1
    assert status["sink"]["retrying_since"] is None


def _event_ids_in(topic: str) -> dict[str, list[tuple[int, int]]]:
    """Every event id on ``topic`` (inbound or normalized records), with its positions."""
    consumer = KafkaConsumer(bootstrap_servers=KAFKA, enable_auto_commit=False)
    try:
        partitions = [TopicPartition(topic, p)
                      for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        ends = consumer.end_offsets(partitions)
        found: dict[str, list[tuple[int, int]]] = {}
        while any(consumer.position(tp) < ends[tp] for tp in partitions):
            for tp, records in consumer.poll(timeout_ms=1000).items():
                for record in records:
                    subject = subject_of(record.value)
                    if subject in ("event", "web"):
                        event_id = codec_for(subject).decode(record.value)["event_id"]
                        found.setdefault(event_id, []).append((tp.partition, record.offset))
        return found
    finally:
        consumer.close()


def _where_are_they(worker: Worker, run: str, events: list[dict[str, object]]) -> str:
    """Which stage lost the events the warehouse lacks: a failure message."""
    stored = {row[0] for row in worker.query(
        f"SELECT event_id FROM touchpoint_events WHERE event_id LIKE '{run}-%'").rows}
    raw = {row[0] for row in worker.query(
        f"SELECT DISTINCT event_id FROM touchpoint_events_raw WHERE event_id LIKE '{run}-%'"
    ).rows}
    missing = sorted({str(e["event_id"]) for e in events} - stored)
    topics = worker.topics
    inbound, unresolved, resolved = (_event_ids_in(topics.channel("web")),
                                     _event_ids_in(topics.unresolved),
                                     _event_ids_in(topics.resolved))
    lines = [f"{m}: raw={m in raw} inbound={inbound.get(m)} unresolved={unresolved.get(m)} "
             f"resolved={resolved.get(m)}" for m in missing[:20]]
    return (f"{len(missing)} of {len(events)} events missing after the restart\n"
            + "\n".join(lines) + f"\nstatus: {worker.status()}\n{worker.log_tail()}")


@pytest.mark.parametrize("backend", ["chdb", "clickhouse"])
def test_a_killed_worker_restarts_and_every_event_is_stored_once(
        worker_factory: WorkerFactory, backend: str) -> None:
    worker = worker_factory(backend, TOUCHPOINT_SINK_BATCH_SIZE="200")
    run = f"kill-{uuid.uuid4().hex[:8]}"
    events = _events(run, 6000)
    for event in events:
        worker.publisher.publish("web", event)
    worker.publisher.flush()
    # Kill without warning once some, but not all, rows are stored.
    deadline = time.monotonic() + 60
    while True:
        stored = (worker.status() or {}).get("sink", {}).get("rows", {}).get(
            "touchpoint_events_raw", 0)
        if stored >= 200:
            break
        assert time.monotonic() < deadline, "nothing stored within 60 s"
        time.sleep(0.05)
    worker.stop(signal.SIGKILL)
    assert stored < len(events), "the worker finished before it could be killed"

    worker.start()
    # Wait while the count grows: a slow machine only takes longer, while a lost event
    # stalls the count below the total and fails with where each missing event got to.
    count_sql = f"SELECT count() FROM touchpoint_events WHERE event_id LIKE '{run}-%'"
    count, last_growth = 0, time.monotonic()
    while (now_stored := worker.scalar(count_sql)) != len(events):
        assert now_stored <= len(events), f"{now_stored} rows for {len(events)} events"
        if now_stored > count:
            count, last_growth = now_stored, time.monotonic()
        elif time.monotonic() - last_growth > 60:
            pytest.fail(_where_are_they(worker, run, events), pytrace=False)
        time.sleep(0.3)
    assert worker.scalar(
        f"SELECT count(DISTINCT event_id) FROM touchpoint_events WHERE event_id LIKE '{run}-%'"
    ) == len(events)
    assert worker.scalar(
        f"SELECT uniqExact(source_offset, source_partition) FROM touchpoint_events "
        f"WHERE event_id LIKE '{run}-%'") == len(events)
