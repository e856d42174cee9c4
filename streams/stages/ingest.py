"""Ingest stage: the agent that turns inbound records into normalized events or dead letters.

It reads all inbound channel topics, hands each record to the
:class:`~touchpoint.streams.rules.normalize.Ingestor` (decode, contract check,
normalize) and publishes the outcome: a normalized event to the one ordered log identity
resolution reads (``touchpoints.unresolved``), or a dead letter to the dead-letter
topic. No record stops it: see :func:`register` for the fallbacks.
"""

from __future__ import annotations

import logging
from typing import Any, NamedTuple, cast

import faust
from aiokafka.errors import (
    KafkaError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
)

from touchpoint.schemas.contract import Rejection
from touchpoint.streams.rules.normalize import (
    Accepted,
    Ingestor,
    IngestStats,
    Rejected,
    original_headers,
)
from touchpoint.streams.runtime.batches import FORWARD_WITHIN, batch_stream
from touchpoint.streams.runtime.consumer import only_current
from touchpoint.streams.runtime.outbox import Outbox
from touchpoint.streams.topics import TopicNames, raw_topic

__all__ = ["BATCH_RECORDS", "refused_by_kafka", "register"]

log = logging.getLogger(__name__)

#: Records one ingest batch takes at most (it waits up to ``FORWARD_WITHIN`` to fill one).
BATCH_RECORDS = 1000


def refused_by_kafka(exc: BaseException) -> bool:
    """Whether Kafka refused a record for what it is (its size), not for being unavailable."""
    return isinstance(exc, MessageSizeTooLargeError | RecordListTooLargeError
                      | RecordTooLargeError)


class _Output(NamedTuple):
    """What ingest sends for one inbound record; ``fallback`` counts the dead ends so far.

    0: the record's own output (its normalized event or dead letter); 1: an
    ``internal_error`` dead letter with its payload; 2: one without (where and why only).
    One is made for every record: a named tuple, like what the profiles stage sends
    (``rules/profile_batches.py``), takes 0.2 µs to make; a frozen dataclass's generated
    ``__init__`` took 0.7.
    """

    event: faust.EventT
    topic: str
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]] | None = None
    fallback: int = 0


def register(app: faust.App, topics: TopicNames, ingestor: Ingestor, stats: IngestStats) -> None:
    """Add the ingest agent to ``app``: every inbound topic in, normalized and dead letters out.

    No record stops it. One whose handling raises, or whose output Kafka refuses (too
    large for the topic), becomes an ``internal_error`` dead letter; one whose dead
    letter Kafka refuses too, a dead letter without its payload (the original stays at
    its position on its topic). Only Kafka itself failing stops a batch: it is then not
    acknowledged, and read again.
    """
    channel_of = topics.inbound
    source = raw_topic(app, *channel_of)
    records = batch_stream(app, source)
    outbox = Outbox(app)

    def timestamp_ms(event: faust.EventT) -> int | None:
        stamp = event.message.timestamp
        return int(stamp * 1000) if stamp else None

    def where(event: faust.EventT) -> tuple[dict[str, Any], int | None]:
        message = event.message
        return ({"source_topic": message.topic, "source_partition": message.partition,
                 "source_offset": message.offset}, timestamp_ms(event))

    def output(event: faust.EventT) -> _Output:
        message = event.message
        outcome = ingestor.process(
            channel_of[message.topic], event.key, event.value, topic=message.topic,
            partition=message.partition, offset=message.offset,
            timestamp_ms=timestamp_ms(event))
        if isinstance(outcome, Accepted):
            stats.accepted[outcome.event["channel"]] += 1
            return _Output(event, topics.unresolved, outcome.key, outcome.value)
        return dead_letter(event, outcome)

    def dead_letter(event: faust.EventT, rejected: Rejected, fallback: int = 0) -> _Output:
        stats.note_rejection(rejected.record)
        headers = original_headers(event.value) if rejected.record["payload"] else None
        return _Output(event, topics.deadletter, rejected.record["key"], rejected.value,
                       headers, fallback)

    def dead_end(event: faust.EventT, exc: BaseException, fallback: int) -> _Output:
        """The ``internal_error`` dead letter of ``event``, whose handling raised ``exc``.

        With the record's payload first (``fallback`` 1); without (2) if that could not
        be sent either.
        """
        position, timestamp_ms = where(event)
        if fallback == 1:
            rejection = Rejection("internal_error", f"ingest failed unexpectedly: {exc!r}")
            return dead_letter(event, ingestor.reject(
                rejection, event.key, event.value, position, timestamp_ms), 1)
        if fallback == 2:
            rejection = Rejection(
                "internal_error",
                f"neither its output nor its dead letter could be sent "
                f"({type(exc).__name__}): find the record at its source position")
            return dead_letter(event, ingestor.reject(
                rejection, None, None, position, timestamp_ms), 2)
        raise exc  # not even a dead letter of a hundred bytes: Kafka is failing, not the record

    def fallback(out: _Output, exc: BaseException) -> _Output:
        """The next dead end for ``out``, which could not be sent (``exc``)."""
        message = out.event.message
        log.error("%s[%d]@%d: %s could not be sent (%r)", message.topic, message.partition,
                  message.offset, "its dead letter" if out.fallback else "its output", exc)
        return dead_end(out.event, exc, out.fallback + 1)

    async def send(out: _Output) -> None:
        try:
            await outbox.send(out.topic, out.key, out.value, out.headers, tag=out)
        except KafkaError:
            raise  # Kafka failing: the batch is not acknowledged, and read again
        except Exception as exc:  # this record's: it must not stop ingest
            await send(fallback(out, exc))

    async def redeliver(failed: list[tuple[object, BaseException]]) -> None:
        """Send the records of batches Kafka refused alone: the culprits take a fallback."""
        for _, exc in failed:
            if not refused_by_kafka(exc):
                raise exc  # Kafka failing, not a record: not acknowledged, read again
        for tag, _ in failed:
            out = cast(_Output, tag)
            while True:
                await send(out)
                again = await outbox.undelivered()
                if not again:
                    break
                if not refused_by_kafka(again[0][1]):
                    raise again[0][1]
                out = fallback(out, again[0][1])

    @app.agent(source, name="touchpoint.ingest")
    async def ingest(stream: faust.StreamT[bytes]) -> None:
        # In batches, past Faust's stream (batches.py): outputs go to the producer
        # directly and are delivered before the batch is acknowledged (see outbox.py).
        async for events in records.take_acked(BATCH_RECORDS, within=FORWARD_WITHIN):
            for event in only_current(app, events):  # none of an earlier generation
                try:
                    out = output(event)
                except Exception as exc:  # a bug must not stop ingest; the record is kept
                    message = event.message
                    log.exception("unexpected error ingesting %s[%d]@%d", message.topic,
                                  message.partition, message.offset)
                    out = dead_end(event, exc, 1)
                await send(out)
            failed = await outbox.undelivered()
            if failed:
                await redeliver(failed)
