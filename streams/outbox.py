"""Outbox: what a stage sends for one batch of records, delivered before the batch is acknowledged.

Faust's ``topic.send()`` costs about a third of a millisecond per record in Python
before aiokafka sees it (channel, future and callback objects), and a stage that awaits
it for every record spends more time there than in its own work (``bench/``: a bare
Faust hop ran 955 records/s with ``send``, 1,441/s batched through this path). The
stages that can work in batches (ingest, identity: their tables have one partition, so
Faust's changelog partition does not depend on which record is current) hand their
records to the producer directly and wait once per batch until Kafka has all of them.
Only then does the batch's stream acknowledge its input, so an acknowledged record's
outputs are always in Kafka (stronger than a plain ``send``, which is acknowledged
before delivery).
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable
from typing import Any

import faust
from faust.streams import _current_event

__all__ = ["Outbox", "make_current"]


class Outbox:
    """Records sent through the app's producer; :meth:`delivered` waits for all of them.

    The app's sensors hear of every record as they do for ``topic.send()`` (sent, then
    acknowledged or failed), so ``/metrics`` counts these records too.
    """

    def __init__(self, app: faust.App) -> None:
        self._app = app
        self._pending: list[tuple[Awaitable[Any], Any]] = []

    async def send(self, topic: str, key: bytes | None, value: bytes | None,
                   headers: list[tuple[str, bytes]] | None = None) -> None:
        """Hand one record to the producer (batched by it; not yet delivered)."""
        producer = self._app.producer
        state = self._app.sensors.on_send_initiated(
            producer, topic, None, len(key or b""), len(value or b""))  # type: ignore[arg-type]
        future = await producer.send(topic, key, value, partition=None, timestamp=None,
                                     headers=headers)
        self._pending.append((future, state))

    async def delivered(self) -> int:
        """Wait until every record sent since the last call is in Kafka; return how many.

        A failed delivery (after the producer's own retries) raises: the batch is then
        not acknowledged and is processed again by the partition's next owner.
        """
        pending, self._pending = self._pending, []
        if not pending:
            return 0
        results = await asyncio.gather(*(future for future, _ in pending),
                                       return_exceptions=True)
        producer, sensors = self._app.producer, self._app.sensors
        failure: BaseException | None = None
        for (_, state), result in zip(pending, results, strict=True):
            if isinstance(result, BaseException):
                sensors.on_send_error(producer, result, state)
                failure = failure or result
            else:
                sensors.on_send_completed(producer, state, result)
        if failure is not None:
            raise failure
        return len(pending)


def make_current(event: faust.EventT) -> None:
    """Make ``event`` "the current event" for table writes in this task only.

    A table write sends its changelog record to the partition of Faust's current event,
    a context variable. ``take_events`` fills its batches in a task of its own, so the
    task working on a batch has none. Only the context variable is set here, not the
    stream's ``current_event`` attribute (``Stream._set_current_event`` sets both): the
    batch-filling task reads that attribute for the record it is adding, and would take
    the record set here instead, adding one record twice and losing another.
    """
    _current_event.set(weakref.ref(event))
