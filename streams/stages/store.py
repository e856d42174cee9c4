"""Store: dead letters and complaint signals into the warehouse, offsets after rows.

Each stored stream goes through :class:`~touchpoint.streams.runtime.behind.Behind`: records
are written in batches (``TOUCHPOINT_SINK_BATCH_SIZE`` / ``TOUCHPOINT_SINK_FLUSH_SECONDS``),
one columnar insert each, and acknowledged only once the insert has succeeded. Dead
letters and complaint signals have agents of their own here; the events of
``<app_id>-resolved`` are stored by the profiles stage (:func:`resolved_batches`), which
reads that topic anyway. Rows the warehouse refuses for their values become dead letters
with reason ``warehouse_refused`` (:func:`deadletter_refused`). How each record becomes a
row is in :mod:`touchpoint.streams.rules.rows`; why this stores each event once is in
docs/design/delivery.md.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

import faust

from touchpoint.exceptions import DecodeError
from touchpoint.schemas.codec import codec_for, subject_of
from touchpoint.sinks.base import Batch
from touchpoint.sinks.tables import (
    COMPLAINT_SIGNALS_RAW,
    CUSTOMER_ALIASES,
    DEADLETTER_RAW,
    EVENTS_RAW,
    IDENTITY_MERGES,
)
from touchpoint.sinks.writer import RefusedHandler, RefusedRow, RetryingWriter
from touchpoint.streams.rules.rows import (
    ALIAS_COLUMNS,
    DEADLETTER_COLUMNS,
    EVENT_COLUMNS,
    MERGE_COLUMNS,
    SIGNAL_COLUMNS,
    alias_rows,
    deadletter_row,
    event_row,
    merge_row,
    original_payload,
    refused_record,
    signal_row,
)
from touchpoint.streams.runtime.behind import behind
from touchpoint.streams.runtime.outbox import Outbox
from touchpoint.streams.topics import TopicNames, raw_topic

__all__ = ["deadletter_refused", "register", "resolved_batches"]

log = logging.getLogger(__name__)


def deadletter_refused(app: faust.App, topics: TopicNames, *, worker: str | None = None,
                       noted: Callable[[Mapping[str, Any]], None] | None = None,
                       clock: Callable[[], float] = time.time) -> RefusedHandler:
    """The writer's ``refused`` hook: each refused row to the dead-letter topic, delivered.

    Returns once Kafka has every dead letter (the stage acknowledges its records after
    the write, so a refused row is never lost), raises if it has not; ``noted`` hears of
    each dead letter sent (the worker counts them with ingest's).
    """
    codec = codec_for("deadletter")
    name = worker or socket.gethostname()

    async def send(rows: Sequence[RefusedRow]) -> None:
        outbox = Outbox(app)  # one per call: several stages write at once
        records = []
        for refused in rows:
            record, headers = refused_record(refused, worker=name,
                                             rejected_at=int(clock() * 1000))
            await outbox.send(topics.deadletter, None, codec.encode(record), headers)
            records.append(record)
        await outbox.delivered()
        for record in records:
            if noted is not None:
                noted(record)

    return send


def _batch(table: str, columns: tuple[str, ...], events: Sequence[faust.EventT],
           subject: str,
           to_row: Callable[[Mapping[str, Any], int, faust.EventT], tuple[Any, ...]],
           dedup_key: Callable[[Mapping[str, Any]], Any]) -> Batch:
    codec = codec_for(subject)
    version = time.time_ns() // 1000
    rows: dict[Any, tuple[Any, ...]] = {}
    for event in events:
        try:
            record = codec.decode(event.value)
        except DecodeError:
            # Our own topic, our own encoding: this is a bug or a foreign producer. The
            # record stays in Kafka (the offset moves on, the bytes are retained there);
            # say where it is so it can be found.
            message = event.message
            log.error("cannot decode %s[%d]@%d as %s; skipped in the warehouse",
                      message.topic, message.partition, message.offset, subject)
            continue
        rows[dedup_key(record)] = to_row(record, version, event)  # last one of a key wins
    positions = [(e.message.topic, e.message.partition, e.message.offset) for e in events]
    return Batch(table, columns, list(rows.values()), Batch.token_for(table, positions))


def resolved_batches(events: Sequence[faust.EventT]) -> list[Batch]:
    """Events, merges and aliases from one batch of ``<app_id>-resolved`` records."""
    event_codec, merge_codec = codec_for("event"), codec_for("merge")
    version = time.time_ns() // 1000
    rows: dict[str, tuple[Any, ...]] = {}
    merges: dict[tuple[str, str], tuple[Any, ...]] = {}
    aliases: dict[str, tuple[Any, ...]] = {}
    for event in events:
        subject = subject_of(event.value)
        key = event.key.decode() if isinstance(event.key, bytes) else str(event.key)
        if subject == "event":
            record = getattr(event, "decoded", None)  # by the profiles stage
            if record is None:
                record = event_codec.decode(event.value)
            rows[record["event_id"]] = event_row(record, version, key)
        elif subject == "merge":
            merge = merge_codec.decode(event.value)
            merges[(merge["merged_id"], merge["into_id"])] = merge_row(merge)
            for row in alias_rows(merge):  # a later merge of the same alias wins
                aliases[row[0]] = row
        # absorb records are for the profiles stage only
    positions = [(e.message.topic, e.message.partition, e.message.offset) for e in events]
    batches = []
    for table, columns, found in ((EVENTS_RAW, EVENT_COLUMNS, rows),
                                  (IDENTITY_MERGES, MERGE_COLUMNS, merges),
                                  (CUSTOMER_ALIASES, ALIAS_COLUMNS, aliases)):
        if found:
            batches.append(Batch(table, columns, list(found.values()),
                                 Batch.token_for(table, positions)))
    return batches


def register(app: faust.App, topics: TopicNames, writer: RetryingWriter, *, batch_size: int,
             flush_seconds: float) -> None:
    """Add the storing agents to ``app``: dead letters and complaint signals.

    The events of ``<app_id>-resolved`` are stored by the profiles stage, through a
    :func:`~touchpoint.streams.runtime.behind.behind` of :func:`resolved_batches`.
    """
    deadletter = raw_topic(app, topics.deadletter)
    signals = raw_topic(app, topics.signals)

    def storing(topic: faust.TopicT, name: str,
                to_batches: Callable[[Sequence[faust.EventT]], list[Batch]]) -> None:
        stored = behind(app, writer, to_batches, name=name, batch_size=batch_size,
                        flush_seconds=flush_seconds)

        @app.agent(topic, name=name)
        async def store(stream: faust.StreamT[bytes]) -> None:
            async with stored.running(cast(faust.Stream[bytes], stream)):
                async for event in stream.events():
                    await stored.add(event)

    storing(deadletter, "touchpoint.store_deadletter", lambda events: [_batch(
        DEADLETTER_RAW, DEADLETTER_COLUMNS, events, "deadletter",
        lambda r, v, e: deadletter_row(r, v, original_payload(e.message.headers)),
        lambda r: (r["source_topic"], r["source_partition"], r["source_offset"]))])
    storing(signals, "touchpoint.store_signals", lambda events: [_batch(
        COMPLAINT_SIGNALS_RAW, SIGNAL_COLUMNS, events, "complaint_signal",
        lambda r, v, e: signal_row(r, v), lambda r: (r["signal_id"], r.get("revision")))])
