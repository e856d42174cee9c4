"""The outbox: records batched per partition, delivered before a batch is acknowledged."""

from __future__ import annotations

import asyncio
from collections import Counter
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.record.default_records import DefaultRecordBatch

from touchpoint.streams.runtime.outbox import Outbox


class _Producer:
    """aiokafka's producer as the outbox uses it, with real batch builders."""

    def __init__(self, partitions: dict[str, int], batch_size: int = 16384,
                 fail_on: bytes | None = None) -> None:
        self.partitions = partitions
        self.batch_size = batch_size
        self.fail_on = fail_on
        # (topic, partition) -> records of each batch shipped, as (key, value, headers)
        self.batches: list[tuple[str, int, list[tuple[Any, ...]]]] = []

    def create_batch(self) -> BatchBuilder:
        return BatchBuilder(self.batch_size, 0)

    async def partitions_for(self, topic: str) -> set[int]:
        return set(range(self.partitions[topic]))

    async def send_batch(self, batch: BatchBuilder, topic: str, *,
                         partition: int) -> asyncio.Future[Any]:
        records = [(r.key, r.value, list(r.headers))
                   for r in DefaultRecordBatch(bytes(batch._build()))]
        self.batches.append((topic, partition, records))
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if any(value == self.fail_on for _, value, _ in records):
            future.set_exception(RuntimeError("broker said no"))
        else:
            # as aiokafka's batch metadata: the first record's offset
            before = sum(len(r) for t, q, r in self.batches[:-1] if (t, q) == (topic, partition))
            future.set_result(SimpleNamespace(topic=topic, partition=partition, offset=before))
        return future


class _Counting:
    def __init__(self) -> None:
        self.sent: Counter[str] = Counter()

    def on_records_sent(self, topic: str, count: int) -> None:
        self.sent[topic] += count


def _app(producer: _Producer) -> tuple[Any, _Counting]:
    sensor = _Counting()
    app = SimpleNamespace(producer=SimpleNamespace(_ensure_producer=lambda: producer),
                          sensors=[object(), sensor])
    return app, sensor


def test_records_go_in_one_batch_per_partition_keyed_as_aiokafka_would() -> None:
    producer = _Producer({"t.a": 1, "t.b": 4})
    app, sensor = _app(producer)
    outbox = Outbox(app)
    keys = [f"customer-{i}".encode() for i in range(12)]

    async def run() -> int:
        await outbox.send("t.a", b"k1", b"v1")
        await outbox.send("t.a", None, b"v2", [("h", b"x")])
        for key in keys:
            await outbox.send("t.b", key, b"v-" + key)
        return await outbox.delivered()

    assert asyncio.run(run()) == 14
    by_partition = {(topic, partition): records for topic, partition, records in producer.batches}
    assert len(by_partition) == len(producer.batches)  # one batch per partition
    assert by_partition[("t.a", 0)] == [(b"k1", b"v1", []), (None, b"v2", [("h", b"x")])]
    partitioner = DefaultPartitioner()
    for key in keys:
        partition = partitioner(key, [0, 1, 2, 3], [0, 1, 2, 3])
        assert (key, b"v-" + key, []) in by_partition[("t.b", partition)]
    assert sensor.sent == Counter({"t.a": 2, "t.b": 12})
    assert asyncio.run(outbox.delivered()) == 0  # nothing new since


def test_a_full_batch_goes_at_once_and_order_is_kept() -> None:
    producer = _Producer({"t": 1}, batch_size=300)
    app, _ = _app(producer)
    outbox = Outbox(app)
    values = [bytes([i]) * 50 for i in range(20)]

    async def run() -> tuple[int, int]:
        for value in values:
            await outbox.send("t", None, value)
        shipped_before_delivery = len(producer.batches)
        return shipped_before_delivery, await outbox.delivered()

    shipped_before, delivered = asyncio.run(run())
    assert shipped_before >= 3 and delivered == 20
    assert [v for _, _, records in producer.batches for _, v, _ in records] == values


def test_a_failed_batch_raises_and_counts_only_what_was_delivered() -> None:
    producer = _Producer({"t.good": 1, "t.bad": 1}, fail_on=b"bad")
    app, sensor = _app(producer)
    outbox = Outbox(app)

    async def run() -> int:
        await outbox.send("t.good", None, b"good")
        await outbox.send("t.bad", None, b"bad")
        return await outbox.delivered()

    with pytest.raises(RuntimeError, match="broker said no"):
        asyncio.run(run())
    assert sensor.sent == Counter({"t.good": 1})


def test_the_last_offset_delivered_per_topic_is_known_after_a_wait() -> None:
    producer = _Producer({"links": 1, "other": 2})
    app, _ = _app(producer)

    async def run() -> tuple[dict[str, int], dict[str, int]]:
        outbox = Outbox(app)
        for n in range(3):
            await outbox.send("links", b"k", b"v%d" % n)
        await outbox.delivered()
        first = dict(outbox.last_offsets)
        for n in range(2):
            await outbox.send("links", b"k", b"w%d" % n)
        await outbox.delivered()
        return first, dict(outbox.last_offsets)
    first, second = asyncio.run(run())
    assert (first, second) == ({"links": 2}, {"links": 4})
