"""Kafka's view of the pipeline: its topics' end offsets and the group's committed offsets.

Every worker of a group reads the same figures from the broker, so the dashboard and
``/metrics`` built on them show the whole group (arrival rates, consumer lag, members),
not one worker's share. kafka-python's clients block, so :class:`OffsetMonitor` runs
them in a thread of its own, once a second, and keeps the last minutes of samples.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from mode import Service

from touchpoint.settings import Settings
from touchpoint.streams.topics import TopicNames

__all__ = ["OffsetMonitor", "OffsetSample", "consumed_topics", "partition_lag", "rates"]

log = logging.getLogger(__name__)

TP = tuple[str, int]


class _FaustMetadataNoise(logging.Filter):
    """Drops kafka-python's warning that it cannot parse Faust's member metadata.

    Faust's assignor adds its own data to each member's subscription; describing the
    group (to count its members) makes kafka-python warn about it on every call.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Unable to decode member_")


_NOISE = _FaustMetadataNoise()


@dataclass(frozen=True)
class OffsetSample:
    """One look at the broker: offsets per (topic, partition), at wall-clock ``at``."""

    at: float
    end: Mapping[TP, int]
    start: Mapping[TP, int] = field(default_factory=dict)
    committed: Mapping[TP, int] = field(default_factory=dict)
    members: int | None = None


def consumed_topics(topics: TopicNames) -> list[str]:
    """The topics the workers' group consumes and commits (table changelogs aside)."""
    return [*topics.inbound, topics.deadletter, topics.unresolved, topics.links,
            topics.resolved, topics.signals]


def partition_lag(sample: OffsetSample, topics: Iterable[str] | None = None
                  ) -> list[dict[str, Any]]:
    """Lag of the group on every partition: end offset minus committed offset.

    A partition the group never committed on is read from its beginning
    (``auto.offset.reset = earliest``), so its lag is everything retained.
    """
    wanted = None if topics is None else set(topics)
    rows = []
    for (topic, partition), end in sorted(sample.end.items()):
        if wanted is not None and topic not in wanted:
            continue
        committed = sample.committed.get((topic, partition))
        base = committed if committed is not None else sample.start.get((topic, partition), 0)
        rows.append({"topic": topic, "partition": partition, "end": end,
                     "committed": committed, "lag": max(end - base, 0)})
    return rows


def rates(samples: Sequence[OffsetSample], topics: Iterable[str]
          ) -> tuple[list[float], dict[str, list[float]]]:
    """Records per second arriving on each topic between consecutive samples.

    Returns the sample times (wall-clock seconds, the end of each interval) and one
    series per topic. A topic whose offsets went back (it was recreated) counts 0.
    """
    names = list(topics)
    times: list[float] = []
    series: dict[str, list[float]] = {name: [] for name in names}
    previous: dict[str, int] | None = None
    previous_at = 0.0
    for sample in samples:
        totals = dict.fromkeys(names, 0)
        for (topic, _), end in sample.end.items():
            if topic in totals:
                totals[topic] += end
        if previous is not None and sample.at > previous_at:
            elapsed = sample.at - previous_at
            times.append(sample.at)
            for name in names:
                series[name].append(round(max(totals[name] - previous[name], 0) / elapsed, 2))
        previous, previous_at = totals, sample.at
    return times, series


def reachable(servers: Sequence[str], timeout: float = 2.0) -> str:
    """The first of ``servers`` (``host:port``) that accepts a TCP connection.

    Raises :class:`ConnectionError` naming them when none does.
    """
    failures = []
    for server in servers:
        host, _, port = server.rpartition(":")
        try:
            with socket.create_connection((host.strip("[]") or server, int(port or 9092)),
                                          timeout=timeout):
                return server
        except (OSError, ValueError) as exc:
            failures.append(f"{server}: {exc}")
    raise ConnectionError("no Kafka broker answers (" + "; ".join(failures) + ")")


class OffsetMonitor(Service):
    """Samples end and committed offsets of ``topics`` for consumer group ``group``.

    Every ``interval`` seconds while someone watches (the dashboard or a Prometheus
    scrape called :meth:`watched` within ``watch_seconds``), every ``idle_interval``
    otherwise, so an unwatched worker spends next to nothing on it. ``client_options``
    go to kafka-python's clients as they are (security settings).
    """

    def __init__(self, *, bootstrap: Sequence[str], group: str, topics: Sequence[str],
                 interval: float = 1.0, idle_interval: float = 10.0,
                 watch_seconds: float = 60.0, history_seconds: float = 300.0,
                 client_options: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        if interval <= 0 or idle_interval < interval:
            raise ValueError("interval must be more than 0 seconds, idle_interval at least that")
        self.bootstrap = list(bootstrap)
        self.group = group
        self.topics = list(topics)
        self.interval = interval
        self.idle_interval = idle_interval
        self.watch_seconds = watch_seconds
        self._watched_at = -float("inf")
        self.samples: deque[OffsetSample] = deque(
            maxlen=max(2, int(history_seconds / interval) + 1))
        self.error: str | None = None
        self._options = dict(client_options or {})
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="offsets")
        self._consumer: Any = None
        self._admin: Any = None
        self._partitions: dict[str, list[int]] = {}
        self._partitions_at = 0.0
        self._members: int | None = None
        self._members_at = 0.0
        logging.getLogger("kafka.admin._groups").addFilter(_NOISE)  # once: same object
        super().__init__(**kwargs)

    @classmethod
    def for_workers(cls, settings: Settings, **kwargs: Any) -> OffsetMonitor:
        """A monitor of the workers' group (``TOUCHPOINT_APP_ID``) and the topics it reads."""
        return cls(bootstrap=settings.kafka_servers, group=settings.app_id,
                   topics=consumed_topics(TopicNames.of(settings)), **kwargs)

    @property
    def latest(self) -> OffsetSample | None:
        """The newest sample, if any."""
        return self.samples[-1] if self.samples else None

    def fresh(self, max_age: float) -> bool:
        """Whether the newest sample is at most ``max_age`` seconds old."""
        latest = self.latest
        return latest is not None and time.time() - latest.at <= max_age

    def watched(self) -> None:
        """Someone looks at the figures: sample every ``interval`` for a while."""
        self._watched_at = time.monotonic()

    def due(self, now: float) -> bool:
        """Whether a sample is due at monotonic time ``now``."""
        latest = self.latest
        if latest is None:
            return True
        every = self.interval if now - self._watched_at <= self.watch_seconds \
            else self.idle_interval
        return time.time() - latest.at >= every * 0.9

    @Service.task
    async def _sampling(self) -> None:
        async for _ in self.itertimer(self.interval, name="offsets.sample"):
            if self.due(time.monotonic()):
                await self.refresh()

    async def refresh(self) -> OffsetSample | None:
        """Take one sample now (off the event loop); ``None`` and :attr:`error` if it failed."""
        loop = asyncio.get_running_loop()
        try:
            sample = await loop.run_in_executor(self._executor, self.sample)
        except Exception as exc:  # any client failure: report it, try again next tick
            if self.error is None:
                log.warning("cannot read offsets from Kafka: %s", exc)
            self.error = f"{type(exc).__name__}: {exc}"
            await loop.run_in_executor(self._executor, self.close_clients)
            return None
        self.error = None
        self.samples.append(sample)
        return sample

    def sample(self) -> OffsetSample:
        """Read offsets from the broker (blocking)."""
        from kafka import TopicPartition

        consumer, admin = self._clients()
        now = time.time()
        # Partitions change rarely: list them every 30 s, and at every sample while a
        # topic has none listed yet (the client's metadata may not have had it at first).
        if now - self._partitions_at > 30 or len(self._partitions) < len(self.topics):
            self._partitions = {}
            for topic in self.topics:
                found = consumer.partitions_for_topic(topic)
                if found:
                    self._partitions[topic] = sorted(found)
            self._partitions_at = now
        tps = [TopicPartition(t, p) for t, parts in self._partitions.items() for p in parts]
        end = {(tp.topic, tp.partition): int(o) for tp, o in consumer.end_offsets(tps).items()}
        start = {(tp.topic, tp.partition): int(o)
                 for tp, o in consumer.beginning_offsets(tps).items()}
        committed = {(tp.topic, tp.partition): int(meta.offset)
                     for tp, meta in self._committed(admin).items()
                     if meta is not None and meta.offset is not None and meta.offset >= 0}
        if now - self._members_at > 5 or not self._members:  # none yet: look every time
            self._members = self._count_members(admin)
            self._members_at = now
        return OffsetSample(at=time.time(), end=end, start=start, committed=committed,
                            members=self._members)

    def _clients(self) -> tuple[Any, Any]:
        from kafka import KafkaAdminClient, KafkaConsumer

        if self._consumer is None or self._admin is None:
            # kafka-python 3 starts a client's IO thread before it bootstraps and leaves it
            # running when the constructor fails: a sample every few seconds while Kafka is
            # down would leave a thread and sockets behind each time. Reach a broker first.
            reachable(self.bootstrap)
        if self._consumer is None:
            self._consumer = KafkaConsumer(
                bootstrap_servers=self.bootstrap, group_id=None, enable_auto_commit=False,
                client_id=f"{self.group}-offsets", request_timeout_ms=10000,
                **self._options)
        if self._admin is None:
            self._admin = KafkaAdminClient(
                bootstrap_servers=self.bootstrap, client_id=f"{self.group}-offsets-admin",
                request_timeout_ms=10000, **self._options)
        return self._consumer, self._admin

    def _committed(self, admin: Any) -> Mapping[Any, Any]:
        from kafka.errors import KafkaError

        try:
            found: Mapping[Any, Any] = admin.list_group_offsets(self.group).get(self.group, {})
            return found
        except KafkaError as exc:  # no group yet (nothing committed), or it is moving
            log.debug("no committed offsets for %s: %s", self.group, exc)
            return {}

    def _count_members(self, admin: Any) -> int | None:
        from kafka.errors import KafkaError

        try:
            group = admin.describe_groups([self.group]).get(self.group) or {}
            return len(group.get("members") or [])
        except (KafkaError, IndexError, AttributeError) as exc:
            log.debug("cannot describe group %s: %s", self.group, exc)
            return None

    def close_clients(self) -> None:
        """Close the Kafka clients (made again at the next sample)."""
        for client in (self._consumer, self._admin):
            if client is not None:
                try:
                    client.close()
                except Exception:  # closing a broken client: nothing more to do
                    log.debug("closing a Kafka client failed", exc_info=True)
        self._consumer = self._admin = None
        self._partitions = {}

    async def on_stop(self) -> None:
        """Close the clients and the thread."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self.close_clients)
        self._executor.shutdown(wait=False)
