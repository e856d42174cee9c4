"""Outbox: what a stage sends for one batch of records, delivered before the batch is acknowledged.

:class:`Outbox` puts a stage's output records into aiokafka batches directly, bypassing
Faust's per-record ``topic.send()``, and waits once per batch of input until Kafka has
them all; :func:`make_current` lets a task working on a batch write to tables. Why, and
what it bypasses in Faust: ``docs/design/runtime.md``.
"""

from __future__ import annotations

import asyncio
import random
import weakref
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any, cast

import faust
from faust.streams import _current_event

from touchpoint.streams.runtime.partition import key_partition

__all__ = ["Outbox", "aiokafka_producer", "make_current", "sent_counters"]


class Outbox:
    """Records sent in batches per partition; :meth:`delivered` waits for all of them.

    Records go into one aiokafka ``BatchBuilder`` per partition, and a builder goes to
    the producer when it is full or when :meth:`delivered` is called: one future per
    batch, not one per record (with aiokafka's per-record send, partitioner and future,
    and Faust's sensor calls, sending cost more than ingest's own work). The partition
    is aiokafka's default (murmur2 of the key, as for ``send``; ``partition.py``).

    The app's sensors that count sent records per topic (``on_records_sent``, see
    ``metrics.py``) hear of these records once per delivered batch.

    A record may carry a ``tag``: :meth:`undelivered` names the tags of the records that
    did not reach Kafka, so a stage can tell which of its inputs to deal with.
    """

    def __init__(self, app: faust.App) -> None:
        self._app = app
        self._open: dict[tuple[str, int], Any] = {}  # (topic, partition) -> BatchBuilder
        self._tags: dict[tuple[str, int], list[object]] = {}  # the open batches' records' tags
        # topic, records, future, their tags
        self._shipped: list[tuple[str, int, Awaitable[Any], list[object]]] = []
        self._partitions: dict[str, list[int]] = {}
        #: The highest offset of the records delivered by the last wait, per topic.
        self.last_offsets: dict[str, int] = {}

    async def send(self, topic: str, key: bytes | None, value: bytes | None,
                   headers: list[tuple[str, bytes]] | None = None, *,
                   tag: object = None) -> None:
        """Add one record to its partition's batch (not yet delivered)."""
        producer = aiokafka_producer(self._app)
        known = self._partitions.get(topic)
        if known is None:
            # Topics are created with their partitions before a worker starts and never
            # repartitioned under it (topics.py), so the list is read once.
            known = self._partitions[topic] = sorted(await producer.partitions_for(topic))
        # inline, not a coroutine of its own: a send is made for nearly every record
        if len(known) == 1:
            tp = (topic, known[0])
        elif key is None:
            tp = (topic, random.choice(known))
        else:
            tp = (topic, key_partition(key, known))
        builder = self._open.get(tp)
        if builder is None:
            builder = self._open[tp] = producer.create_batch()
            self._tags[tp] = []
        if builder.append(timestamp=None, key=key, value=value, headers=headers) is None:
            await self._ship(producer, tp)  # full: it goes now, the record starts the next
            builder = self._open[tp] = producer.create_batch()
            self._tags[tp] = []
            builder.append(timestamp=None, key=key, value=value, headers=headers)
        self._tags[tp].append(tag)

    async def delivered(self) -> int:
        """Wait until every record sent since the last call is in Kafka; return how many.

        A failed delivery (after the producer's own retries) raises: the batch is then
        not acknowledged and is processed again by the partition's next owner.
        """
        count, failures = await self._wait()
        if failures:
            raise failures[0][1]
        return count

    async def undelivered(self) -> list[tuple[object, BaseException]]:
        """Wait like :meth:`delivered`; return the tag and error of each record not delivered.

        Kafka takes or refuses a batch as a whole, so every record of a refused batch is
        named, each with its batch's error.
        """
        _, failures = await self._wait()
        return failures

    async def _wait(self) -> tuple[int, list[tuple[object, BaseException]]]:
        if self._open:
            producer = aiokafka_producer(self._app)
            for tp in list(self._open):
                await self._ship(producer, tp)
        shipped, self._shipped = self._shipped, []
        if not shipped:
            return 0, []
        results = await asyncio.gather(*(future for _, _, future, _ in shipped),
                                       return_exceptions=True)
        sent: Counter[str] = Counter()
        failures: list[tuple[object, BaseException]] = []
        self.last_offsets = {}
        for (topic, count, _, tags), result in zip(shipped, results, strict=True):
            if isinstance(result, BaseException):
                failures += [(tag, result) for tag in tags]
            else:
                sent[topic] += count
                first = getattr(result, "offset", None)  # a batch's metadata: its first
                if first is not None:
                    last = first + count - 1
                    self.last_offsets[topic] = max(self.last_offsets.get(topic, last), last)
        for counter in sent_counters(self._app):
            for topic, count in sent.items():
                counter(topic, count)
        return sum(count for _, count, _, _ in shipped), failures

    async def _ship(self, producer: Any, tp: tuple[str, int]) -> None:
        builder = self._open[tp]
        count = builder.record_count()  # before shipping: the producer may add to it
        topic, partition = tp
        future = await producer.send_batch(builder, topic, partition=partition)
        # only once shipped: a batch that could not be is not forgotten (sent at the next call)
        del self._open[tp]
        self._shipped.append((topic, count, future, self._tags.pop(tp)))


def aiokafka_producer(app: faust.App) -> Any:
    """The app's aiokafka producer, under Faust's (batches are aiokafka's API)."""
    return cast(Any, app.producer)._ensure_producer()


def sent_counters(app: faust.App) -> list[Callable[[str, int], None]]:
    """The sensors counting records sent in batches (``on_records_sent``, ``metrics.py``)."""
    return [sensor.on_records_sent for sensor in app.sensors
            if hasattr(sensor, "on_records_sent")]


def make_current(event: faust.EventT) -> None:
    """Make ``event`` "the current event" for table writes in this task only.

    A table write sends its changelog record to the partition of Faust's current event,
    a context variable, which a stage taking batches (``batches.py``) does not have. Only
    the context variable is set here, not a stream's ``current_event`` attribute
    (``Stream._set_current_event`` sets both), which a Faust stream's batch-filling task
    reads for the record it is adding.
    """
    _current_event.set(weakref.ref(event))
