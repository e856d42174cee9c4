"""The collector's Kafka sender: acknowledged or KafkaUnavailable, and fast during an outage."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka.errors import KafkaTimeoutError

from touchpoint.collector.batch import Record
from touchpoint.collector.sender import KafkaSender
from touchpoint.exceptions import KafkaUnavailable


class Cluster:
    def __init__(self) -> None:
        self.reachable = True

    def topics(self) -> set[str]:
        return {"touchpoints.web"}


class Client:
    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.asked = 0

    async def force_metadata_update(self) -> bool:
        self.asked += 1
        return self.cluster.reachable


class FlakyProducer:
    """Stands in for aiokafka's producer: acknowledges, or times out like an unreachable one."""

    def __init__(self) -> None:
        self.client = Client(Cluster())
        self.sent: list[tuple[str, bytes, bytes | None]] = []
        self.acks = True

    async def send(self, topic: str, value: bytes, *, key: bytes | None) -> Any:
        self.sent.append((topic, value, key))
        future = asyncio.get_running_loop().create_future()
        if self.acks:
            future.set_result(None)
        else:
            future.set_exception(KafkaTimeoutError())
        return future

    async def stop(self) -> None:
        pass


RECORDS = [Record("touchpoints.web", b"anonymous_id:a", b"v1"),
           Record("touchpoints.web", b"", b"v2")]


def test_acknowledged_records_return_and_failures_raise_then_fail_fast() -> None:
    producer = FlakyProducer()
    now = [100.0]
    sender = KafkaSender(bootstrap_servers=["unused:1"], topics=["touchpoints.web"],
                         producer=producer, clock=lambda: now[0])

    async def scenario() -> None:
        await sender.start()
        await sender.send(RECORDS)
        assert producer.sent == [("touchpoints.web", b"v1", b"anonymous_id:a"),
                                 ("touchpoints.web", b"v2", None)]
        producer.acks = False
        producer.client.cluster.reachable = False
        with pytest.raises(KafkaUnavailable, match="did not acknowledge"):
            await sender.send(RECORDS)
        # the cluster is asked, and the request refused without waiting for another send
        with pytest.raises(KafkaUnavailable, match="still not reachable"):
            await sender.send(RECORDS)
        assert (len(producer.sent), producer.client.asked) == (4, 1)
        assert not await sender.ready()  # answered from the last second's look
        producer.acks = True
        producer.client.cluster.reachable = True
        now[0] += 1.0  # readiness is asked at most once a second
        await sender.send(RECORDS[:1])
        await sender.send(RECORDS[:1])  # no longer asks first
        assert (len(producer.sent), producer.client.asked) == (6, 2)
        await sender.stop()

    asyncio.run(scenario())
