from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any

from kafka import TopicPartition

from touchpoint.settings import load_settings
from touchpoint.streams.ops.lag import (
    OffsetMonitor,
    OffsetSample,
    consumed_topics,
    partition_lag,
    rates,
)
from touchpoint.streams.topics import TopicNames


def test_lag_is_end_minus_committed_or_everything_retained() -> None:
    sample = OffsetSample(at=1.0, end={("a", 0): 10, ("a", 1): 7, ("b", 0): 5},
                          start={("a", 1): 2, ("b", 0): 0}, committed={("a", 0): 4})
    assert partition_lag(sample) == [
        {"topic": "a", "partition": 0, "end": 10, "committed": 4, "lag": 6},
        {"topic": "a", "partition": 1, "end": 7, "committed": None, "lag": 5},
        {"topic": "b", "partition": 0, "end": 5, "committed": None, "lag": 5},
    ]
    assert [r["topic"] for r in partition_lag(sample, ["b"])] == ["b"]


def test_lag_never_goes_negative() -> None:
    sample = OffsetSample(at=1.0, end={("a", 0): 3}, committed={("a", 0): 5})
    assert partition_lag(sample)[0]["lag"] == 0


def test_rates_per_topic_between_samples() -> None:
    samples = [
        OffsetSample(at=10.0, end={("a", 0): 0, ("a", 1): 0, ("b", 0): 0}),
        OffsetSample(at=12.0, end={("a", 0): 10, ("a", 1): 10, ("b", 0): 1}),
        OffsetSample(at=13.0, end={("a", 0): 10, ("a", 1): 13, ("b", 0): 0}),  # b recreated
    ]
    times, series = rates(samples, ["a", "b", "c"])
    assert times == [12.0, 13.0]
    assert series == {"a": [10.0, 3.0], "b": [0.5, 0.0], "c": [0.0, 0.0]}


def test_rates_need_two_samples() -> None:
    assert rates([OffsetSample(at=1.0, end={("a", 0): 5})], ["a"]) == ([], {"a": []})


def test_the_group_consumes_every_stage_topic_but_the_changelogs() -> None:
    topics = TopicNames("p.")
    assert consumed_topics(topics) == [
        "p.touchpoints.web", "p.touchpoints.store", "p.touchpoints.callcenter",
        "p.touchpoints.campaign", "p.touchpoints.feedback", "p.touchpoints.deadletter",
        "p.touchpoints.unresolved", "p.touchpoint-links", "p.touchpoint-resolved",
        "p.signals.complaints"]


class FakeConsumer:
    def __init__(self) -> None:
        self.closed = False

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        return {0, 1} if topic == "t.a" else None  # t.b does not exist (yet)

    def end_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: 100 + tp.partition for tp in tps}

    def beginning_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: 3 for tp in tps}

    def close(self) -> None:
        self.closed = True


class Admin3:
    """kafka-python 3's admin: offsets and descriptions keyed by group."""

    def list_group_offsets(self, group: str) -> dict[str, Any]:
        return {group: {TopicPartition("t.a", 0): SimpleNamespace(offset=90),
                        TopicPartition("t.a", 1): SimpleNamespace(offset=-1)}}

    def describe_groups(self, groups: list[str]) -> dict[str, Any]:
        return {groups[0]: {"members": [{"member_id": "m1"}, {"member_id": "m2"}]}}

    def close(self) -> None:
        pass


def _monitor(admin: Any) -> OffsetMonitor:
    monitor = OffsetMonitor(bootstrap=["k:9092"], group="g", topics=["t.a", "t.b"])
    consumer = FakeConsumer()
    monitor._clients = lambda: (consumer, admin)  # type: ignore[method-assign]
    return monitor


def test_a_sample_reads_ends_starts_commits_and_members() -> None:
    sample = _monitor(Admin3()).sample()
    assert sample.end == {("t.a", 0): 100, ("t.a", 1): 101}
    assert sample.start == {("t.a", 0): 3, ("t.a", 1): 3}
    assert sample.committed == {("t.a", 0): 90}  # -1: nothing committed
    assert sample.members == 2
    assert [r["lag"] for r in partition_lag(sample)] == [10, 98]


def test_refresh_keeps_samples_and_reports_failures() -> None:
    monitor = _monitor(Admin3())

    async def twice() -> None:
        assert await monitor.refresh() is not None
        monitor.sample = lambda: (_ for _ in ()).throw(OSError("broker gone"))  # type: ignore[method-assign]
        assert await monitor.refresh() is None

    asyncio.run(twice())
    assert len(monitor.samples) == 1 and monitor.latest is monitor.samples[0]
    assert monitor.error == "OSError: broker gone"
    assert monitor.fresh(60) and not monitor.fresh(-1)


def test_for_workers_watches_the_app_group() -> None:
    settings = load_settings({"TOUCHPOINT_APP_ID": "ops", "TOUCHPOINT_TOPIC_PREFIX": "x.",
                              "TOUCHPOINT_KAFKA_BOOTSTRAP": "k1:9092,k2:9092",
                              "TOUCHPOINT_PII_SALT": "unit-test-salt-0123"})
    monitor = OffsetMonitor.for_workers(settings)
    assert (monitor.group, monitor.bootstrap) == ("ops", ["k1:9092", "k2:9092"])
    assert monitor.topics == consumed_topics(TopicNames("x.", "ops"))
    assert {"x.touchpoints.unresolved", "x.ops-resolved", "x.touchpoints.web"} <= \
        set(monitor.topics)


def test_sampling_is_frequent_only_while_someone_watches() -> None:
    monitor = OffsetMonitor(bootstrap=["k:9092"], group="g", topics=["t"], interval=1,
                            idle_interval=10, watch_seconds=60)
    now = time.monotonic()
    assert monitor.due(now)  # nothing sampled yet
    monitor.samples.append(OffsetSample(at=time.time() - 2, end={}))
    assert not monitor.due(now)  # unwatched: every 10 s
    monitor.watched()
    assert monitor.due(time.monotonic())
    monitor.samples.append(OffsetSample(at=time.time(), end={}))
    assert not monitor.due(time.monotonic())


def test_a_topic_missing_from_the_first_listing_joins_at_the_next_sample() -> None:
    monitor = OffsetMonitor(bootstrap=["k:9092"], group="g", topics=["t.a", "t.b"])
    consumer = FakeConsumer()
    monitor._clients = lambda: (consumer, Admin3())  # type: ignore[method-assign]
    assert {tp for tp in monitor.sample().end} == {("t.a", 0), ("t.a", 1)}
    consumer.partitions_for_topic = lambda topic: {0, 1}  # type: ignore[method-assign]
    # within the 30 s refresh: listed again because t.b had no partitions
    assert {tp for tp in monitor.sample().end} == {("t.a", 0), ("t.a", 1), ("t.b", 0),
                                                   ("t.b", 1)}


def test_no_client_is_made_while_no_broker_answers() -> None:
    """kafka-python 3 leaves an IO thread behind for each client whose bootstrap fails."""
    import socket
    import threading

    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # bound, not listening: connections are refused
        monitor = OffsetMonitor(bootstrap=[f"127.0.0.1:{port}"], group="g", topics=["t"])
        threads = threading.active_count()

        async def three_times() -> None:
            for _ in range(3):
                assert await monitor.refresh() is None

        asyncio.run(three_times())
    assert monitor.error is not None and "no Kafka broker answers" in monitor.error
    assert threading.active_count() <= threads + 1  # the monitor's own executor thread
