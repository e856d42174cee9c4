"""Poison records and rows: none stops ingest or storage, and /health tells a broken worker.

On the real broker and both warehouse engines: records whose dead letters would not fit
the dead-letter topic are dead-lettered (cut) while the events around them are stored;
rows the warehouse refuses for their values are found and handed to the dead-letter hook
while the rest of their batch is stored; and /health fails when Kafka cannot be read.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from touchpoint.schemas.codec import codec_for
from touchpoint.sinks.base import Batch, WarehouseSink
from touchpoint.sinks.clickhouse import Warehouse
from touchpoint.sinks.writer import RefusedRow, RetryingWriter
from touchpoint.streams.rules.normalize import Ingestor, Rejected
from touchpoint.streams.rules.rows import (
    DEADLETTER_COLUMNS,
    EVENT_COLUMNS,
    deadletter_row,
    event_row,
    refused_record,
)

from .conftest import BACKENDS, KAFKA, WorkerFactory, free_port, migrated_warehouse

pytestmark = pytest.mark.integration

T0 = 1_795_000_000_000


def _web(event_id: str, **fields: Any) -> bytes:
    return codec_for("web").encode({"event_id": event_id, "type": "page_view",
                                    "occurred_at": T0, "anonymous_id": "ck", "attributes": {},
                                    **fields})


@pytest.mark.parametrize("backend", BACKENDS)
def test_records_whose_dead_letters_would_not_fit_do_not_stop_ingest(
        worker_factory: WorkerFactory, backend: str) -> None:
    worker = worker_factory(backend)
    run = f"poison-{uuid.uuid4().hex[:8]}"
    # One key for all: one partition, so the good events come after the poison ones.
    key = b"k" * 5_000
    poison = [
        b"\xff" * 1_040_000,  # near the broker's 1 MB: its dead letter, key twice, is over
        _web(f"{run}-nul", type="\x00" * 300_000),  # echoed in a reason: 1.2 MB
        _web(f"{run}-wide", type="x" * 600_000),
    ]
    good = [_web(f"{run}-{i}") for i in range(3)]
    for value in (good[0], poison[0], good[1], poison[1], poison[2], good[2]):
        worker.publisher.send_raw("web", value, key)
    worker.publisher.flush()

    worker.wait_for(f"SELECT count() FROM touchpoint_events WHERE event_id LIKE '{run}-%'", 3,
                    timeout=90)
    topic = worker.topics.channel("web")
    worker.wait_for(f"SELECT count() FROM deadletter WHERE source_topic = '{topic}'", 3)
    rows = worker.query(
        "SELECT reason_code, payload_bytes, payload_sha256 FROM deadletter "
        f"WHERE source_topic = '{topic}' ORDER BY source_offset").rows
    # what ingest says of each, whatever the contract's rules are by then
    ingestor = Ingestor(pii_salt="test-salt-of-16-chars", phone_region="CN")
    expected = []
    for value in poison:
        outcome = ingestor.process("web", key, value, topic=topic, partition=0, offset=0,
                                   timestamp_ms=None)
        assert isinstance(outcome, Rejected)
        expected.append((outcome.code, len(value), hashlib.sha256(value).hexdigest()))
    assert rows == expected
    assert worker.process is not None and worker.process.poll() is None, worker.log_tail()
    status, body = worker.get("/health")
    assert (status, json.loads(body)) == (200, {"ready": True, "tables_recovered": True,
                                                "rebalancing": False, "in_recovery": False})


# --- rows the warehouse refuses, on the real engines --------------------------------------

@pytest.fixture(scope="module", params=BACKENDS)
def warehouse(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
              clickhouse_server: str) -> Iterator[Warehouse]:
    """A migrated warehouse of this module's own, on each engine."""
    with migrated_warehouse(request.param, tmp_path_factory.mktemp("chdb"), "tp_poison") as found:
        yield found


def _event(event_id: str, offset: int, **fields: Any) -> tuple[Any, ...]:
    event = {"event_id": event_id, "channel": "callcenter", "type": "call_ended",
             "occurred_at": T0, "ingested_at": T0 + 9, "customer_id": "C1",
             "category": "personnel", "stage": "satisfaction", "attributes": {},
             "source_topic": "touchpoints.callcenter", "source_partition": 0,
             "source_offset": offset, **fields}
    return event_row(event, 1)


def test_rows_the_warehouse_refuses_are_handed_over_and_the_rest_stored(
        warehouse: Warehouse) -> None:
    run = f"refused-{uuid.uuid4().hex[:8]}"
    rows = [_event(f"{run}-{i}", i, transfers=40_000 if i in (3, 6) else 2) for i in range(8)]
    handed: list[RefusedRow] = []

    async def hook(refused: Sequence[RefusedRow]) -> None:
        handed.extend(refused)

    writer = RetryingWriter(WarehouseSink(warehouse), initial_backoff=0.01, max_backoff=0.02,
                            refused=hook)
    batch = Batch("touchpoint_events_raw", EVENT_COLUMNS, rows,
                  Batch.token_for("touchpoint_events_raw", [("t", 0, i) for i in range(8)]))
    asyncio.run(asyncio.wait_for(writer.write(batch), 60))
    stored = warehouse.query(
        f"SELECT event_id FROM {warehouse.database}.touchpoint_events_raw "
        f"WHERE event_id LIKE '{run}-%' ORDER BY event_id").rows
    assert stored == [(f"{run}-{i}",) for i in (0, 1, 2, 4, 5, 7)]
    assert [r.row for r in handed] == [rows[3], rows[6]]
    assert all("transfers" in r.reason for r in handed), [r.reason for r in handed]
    assert dict(writer.stats.refused) == {"touchpoint_events_raw": 2}
    # their dead letters, once back from the topic, are stored in turn
    records = [refused_record(r, worker="w", rejected_at=T0)[0] for r in handed]
    warehouse.insert("deadletter_raw", DEADLETTER_COLUMNS,
                     [deadletter_row(codec_for("deadletter").decode(
                         codec_for("deadletter").encode(r)), 1) for r in records])
    found = warehouse.query(
        f"SELECT source_offset, reason_code, event_id FROM {warehouse.database}.deadletter "
        f"WHERE event_id LIKE '{run}-%' ORDER BY source_offset").rows
    assert found == [(3, "warehouse_refused", f"{run}-3"), (6, "warehouse_refused", f"{run}-6")]


def test_a_dead_letter_row_is_never_refused_whatever_its_record_holds(
        warehouse: Warehouse) -> None:
    topic = f"poison.{uuid.uuid4().hex[:8]}"
    record = {"payload": b"\x00" * 1000, "key": None, "source_topic": topic,
              "source_partition": -1, "source_offset": -(2**63), "source_timestamp": 2**63 - 1,
              "reason_code": "x" * 10_000, "reason": "\x00\ud7ff" * 100_000,
              "rejected_at": int(time.time() * 1000), "worker": "w" * 100_000}
    # (what a producer could put on the dead-letter topic: it is valid Avro; rejected_at is
    # recent because the table's TTL drops old dead letters, a time clamped to 1970 at once)
    decoded = codec_for("deadletter").decode(codec_for("deadletter").encode(record))
    warehouse.insert("deadletter_raw", DEADLETTER_COLUMNS, [deadletter_row(decoded, 1)])
    assert warehouse.query(
        f"SELECT source_partition, source_offset, lengthUTF8(reason_code), lengthUTF8(worker) "
        f"FROM {warehouse.database}.deadletter WHERE source_topic = '{topic}'").rows == [
        (0, 0, 64, 256)]


# --- /health when Kafka cannot be read ---------------------------------------------------------

#: The worker's own signal, its offset monitor sampling the broker for real, and /health's
#: verdict on it; in a process of its own (kafka-python leaves the threads and sockets of
#: a client that never connected behind).
_HEALTH_PROBE = """
import asyncio, json, sys, time
from types import SimpleNamespace

from touchpoint.streams.ops.lag import OffsetMonitor
from touchpoint.streams.ops.metrics import health

monitor = OffsetMonitor(bootstrap=[sys.argv[1]], group="poison-probe", topics=[])
sample = asyncio.run(monitor.refresh())
monitor.close_clients()
now = time.time()
completed = SimpleNamespace(is_set=lambda: True)
app = SimpleNamespace(tables=SimpleNamespace(recovery=SimpleNamespace(completed=completed)),
                      rebalancing=False, in_recovery=False)
state = health(app, monitor=monitor, since=now - 60, now=now)  # started a minute ago
print(json.dumps({"sampled": sample is not None, "error": monitor.error, "health": state}))
"""


@pytest.mark.parametrize("reachable", [True, False])
def test_health_fails_while_kafka_cannot_be_read(kafka: str, reachable: bool) -> None:
    bootstrap = KAFKA if reachable else f"127.0.0.1:{free_port()}"  # nothing listens there
    probe = subprocess.run([sys.executable, "-W", "ignore::ResourceWarning", "-c",
                            _HEALTH_PROBE, bootstrap],
                           capture_output=True, text=True, timeout=120, check=False)
    assert probe.returncode == 0, probe.stderr[-3000:]
    found = json.loads(probe.stdout.splitlines()[-1])
    ready = {"ready": True, "tables_recovered": True, "rebalancing": False,
             "in_recovery": False}
    if reachable:
        assert found == {"sampled": True, "error": None, "health": ready}
    else:
        assert found["sampled"] is False and found["error"]
        assert found["health"] == {**ready, "ready": False, "problems": [
            f"Kafka unreachable: no offsets read for 60 s ({found['error']})"]}
