"""Store: normalized events and dead letters into the warehouse, offsets after rows.

Records go to the warehouse in batches (up to ``TOUCHPOINT_SINK_BATCH_SIZE`` records or
``TOUCHPOINT_SINK_FLUSH_SECONDS``, whichever comes first), one columnar insert each, and
are acknowledged only once the insert has succeeded; Faust commits acknowledged offsets
only. Delivery is therefore at-least-once, and the tables make it exactly-once for
readers (see ``sinks/migrations/0001_touchpoint_events.sql``).

Every stored stream goes through :class:`Behind`. Dead letters and complaint signals
have agents of their own here; the events of ``<app_id>-resolved`` are stored by the
profiles stage, which reads that topic anyway, rather than by a second agent that would
take every event through Faust's delivery a second time.

Rows the warehouse refuses for their values become dead letters too
(:func:`deadletter_refused`, the writer's ``refused`` hook), with reason code
``warehouse_refused``; a dead letter's own row holds only bounded text and in-range
numbers (:func:`deadletter_row`), so it is never refused itself.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, cast

import faust

from touchpoint.exceptions import DecodeError, SchemaError
from touchpoint.schemas.codec import codec_for, subject_of
from touchpoint.sinks.base import Batch
from touchpoint.sinks.writer import RefusedHandler, RefusedRow, RetryingWriter
from touchpoint.streams.runtime.outbox import Outbox
from touchpoint.streams.stages.identity import provisional_customer_id
from touchpoint.streams.stages.ingest import (
    DEADLETTER_PAYLOAD_BYTES,
    DEADLETTER_REASON_CHARS,
    PAYLOAD_BYTES_HEADER,
    PAYLOAD_SHA256_HEADER,
    bounded_reason,
    original_headers,
)
from touchpoint.streams.topics import TopicNames, raw_topic

__all__ = [
    "DEADLETTER_COLUMNS",
    "EVENT_COLUMNS",
    "SIGNAL_COLUMNS",
    "Behind",
    "behind",
    "deadletter_refused",
    "deadletter_row",
    "event_row",
    "refused_record",
    "register",
    "resolved_batches",
    "signal_row",
]

log = logging.getLogger(__name__)

# Columns of touchpoint_events_raw taken from the normalized event as they are.
_STRING_FIELDS = (
    "campaign_id", "store_id", "currency", "outcome", "reason", "session_id", "url",
    "referrer", "ad_id", "error_code", "staff_id", "call_id", "agent_id", "notes", "medium",
    "variant", "comment", "about_channel", "case_id", "anonymous_id", "email_hash",
    "phone_hash",
)
_NULLABLE_FIELDS = ("amount", "queue_wait_s", "score", "dwell_ms", "items", "talk_s",
                    "transfers")
EVENT_COLUMNS: tuple[str, ...] = (
    "event_id", "occurred_at", "channel", "type", "customer_id", *_STRING_FIELDS,
    *_NULLABLE_FIELDS, "sentiment", "category", "stage", "attribute_keys", "attribute_values",
    "source_topic", "source_partition", "source_offset", "ingested_at", "_version",
)
DEADLETTER_COLUMNS: tuple[str, ...] = (
    "rejected_at", "source_topic", "source_partition", "source_offset", "source_timestamp",
    "reason_code", "reason", "event_id", "event_type", "payload_bytes", "payload_sha256",
    "worker", "_version",
)


SIGNAL_COLUMNS: tuple[str, ...] = (
    "signal_id", "customer_id", "detected_at", "first_evidence_at", "severity", "score",
    "reasons", "evidence_event_ids", "channels", "status", "escalated_at", "due_at",
    "emitted_at", "revision",
)
MERGE_COLUMNS: tuple[str, ...] = (
    "merged_id", "into_id", "merged_at", "event_id", "identifiers", "aliases", "recorded_at")
ALIAS_COLUMNS: tuple[str, ...] = ("alias", "customer_id", "version")


def event_row(event: Mapping[str, Any], version: int,
              customer_id: str | None = None) -> tuple[Any, ...]:
    """One ``touchpoint_events_raw`` row, values in :data:`EVENT_COLUMNS` order.

    ``customer_id`` is the resolved customer (the key on ``<app_id>-resolved``).
    """
    attributes = event.get("attributes") or {}
    keys = sorted(attributes)
    return (
        event["event_id"], event["occurred_at"], event["channel"], event["type"],
        customer_id or provisional_customer_id(event),
        *(event.get(name) or "" for name in _STRING_FIELDS),
        *(event.get(name) for name in _NULLABLE_FIELDS),
        event.get("sentiment"),  # scored at ingest; None without text
        event["category"], event["stage"], keys, [attributes[k] for k in keys],
        event["source_topic"], event["source_partition"], event["source_offset"],
        event["ingested_at"], version,
    )


def deadletter_row(record: Mapping[str, Any], version: int,
                   original: tuple[int, str] | None = None) -> tuple[Any, ...]:
    """One ``deadletter_raw`` row: where, why, and a fingerprint of the payload (not the payload).

    The event id and type are read from the payload when it decodes at all, so operators
    can find the sender's event; e-mail and phone in it are never copied. ``original`` is
    the size and SHA-256 of a payload the dead letter keeps only the start of.

    Whatever a producer put on the topic, the row fits its columns (text bounded,
    numbers and times within their types' ranges): a refused dead-letter row would stop
    their storage, as it cannot be dead-lettered in turn.
    """
    payload: bytes = record["payload"]
    event_id, event_type = _peek_ids(record["source_topic"], record["reason_code"], payload)
    size, digest = original or (len(payload), hashlib.sha256(payload).hexdigest())
    timestamp = record.get("source_timestamp")
    return (
        _clamp(record["rejected_at"], 0, _DATETIME_MAX_MS), _text(record["source_topic"], 256),
        _clamp(record["source_partition"], 0, 2**16 - 1),
        _clamp(record["source_offset"], 0, 2**64 - 1),
        None if timestamp is None else _clamp(timestamp, 0, _DATETIME_MAX_MS),
        _text(record["reason_code"], 64), _text(record["reason"], _REASON_CHARS),
        _text(event_id, 256), _text(event_type, 256), _clamp(size, 0, 2**32 - 1),
        _text(digest, 64), _text(record["worker"], 256), version,
    )


#: The latest time a ``DateTime`` holds (2106-02-07), in epoch milliseconds.
_DATETIME_MAX_MS = (2**32 - 1) * 1000
#: Our reasons are bounded, and a note on a cut payload may follow; room for both.
_REASON_CHARS = 2 * DEADLETTER_REASON_CHARS


def _clamp(value: int, low: int, high: int) -> int:
    return min(max(value, low), high)


def _text(value: str, limit: int) -> str:
    return bounded_reason(value, limit)


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


def refused_record(refused: RefusedRow, *, worker: str, rejected_at: int
                   ) -> tuple[dict[str, Any], list[tuple[str, bytes]] | None]:
    """The dead letter of a refused row, and its headers: the row as JSON, and the reason.

    The payload is the row as a JSON object of column -> value (cut like an inbound
    record's); the source position is the row's own when it has one (events), else a
    stand-in made from the table and the row, the same every time the row is refused.
    """
    values = refused.values()
    # ASCII: a string the warehouse refused may not even be UTF-8 (a lone surrogate)
    body = json.dumps(values, ensure_ascii=True, default=repr).encode()
    topic, partition, offset = (values.get("source_topic"), values.get("source_partition"),
                                values.get("source_offset"))
    if not (isinstance(topic, str) and _fits(partition, 31) and _fits(offset, 63)):
        topic, partition = f"warehouse.{refused.table}", 0
        offset = int.from_bytes(hashlib.sha256(body).digest()[:8]) >> 1
    reason = bounded_reason(f"the warehouse refused this row of {refused.table}: "
                            f"{refused.reason}")
    if len(body) > DEADLETTER_PAYLOAD_BYTES:
        reason += (f" (payload cut to its first {DEADLETTER_PAYLOAD_BYTES:,} of "
                   f"{len(body):,} bytes)")
    record = {
        "payload": body[:DEADLETTER_PAYLOAD_BYTES], "key": None,
        "source_topic": bounded_reason(topic, 249), "source_partition": partition,
        "source_offset": offset, "source_timestamp": None,
        "reason_code": "warehouse_refused", "reason": reason, "rejected_at": rejected_at,
        "worker": worker,
    }
    return record, original_headers(body)


def _fits(value: object, bits: int) -> bool:
    """Whether ``value`` is an integer from 0 to ``2**bits - 1`` (Avro int: 31, long: 63)."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**bits


def _original(headers: Iterable[tuple[str, bytes]] | Mapping[str, bytes] | None
              ) -> tuple[int, str] | None:
    """Size and SHA-256 of a cut payload, from its dead letter's headers."""
    found = dict(headers.items() if isinstance(headers, Mapping) else headers or ())
    size, digest = found.get(PAYLOAD_BYTES_HEADER), found.get(PAYLOAD_SHA256_HEADER)
    if size is None or digest is None:
        return None
    try:
        return int(size), bytes(digest).decode("ascii")
    except (TypeError, ValueError):
        return None


def signal_row(record: Mapping[str, Any], version: int) -> tuple[Any, ...]:
    """One ``complaint_signals_raw`` row; the record's revision orders its states."""
    return (*(record[c] for c in SIGNAL_COLUMNS[:-1]), record.get("revision") or version)


def _peek_ids(topic: str, reason_code: str, payload: bytes) -> tuple[str, str]:
    try:
        if reason_code == "warehouse_refused":  # a row, as JSON (refused_record)
            decoded = json.loads(payload)
            if not isinstance(decoded, dict):
                return "", ""
        else:
            decoded = codec_for(topic.rsplit(".", 1)[-1]).decode(payload)
    except (DecodeError, SchemaError, KeyError, ValueError, RecursionError):
        return "", ""  # not a channel's topic (a foreign producer's), or not its record
    return str(decoded.get("event_id") or ""), str(decoded.get("type") or "")


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
            record = event_codec.decode(event.value)
            rows[record["event_id"]] = event_row(record, version, key)
        elif subject == "merge":
            merge = merge_codec.decode(event.value)
            merges[(merge["merged_id"], merge["into_id"])] = tuple(
                merge[c] for c in MERGE_COLUMNS)
            # version: the merge's record time, so a later merge of the same alias wins
            for alias in (merge["merged_id"], *merge["aliases"]):
                aliases[alias] = (alias, merge["into_id"], merge["recorded_at"])
        # absorb records are for the profiles stage only
    positions = [(e.message.topic, e.message.partition, e.message.offset) for e in events]
    batches = []
    for table, columns, found in (("touchpoint_events_raw", EVENT_COLUMNS, rows),
                                  ("identity_merges", MERGE_COLUMNS, merges),
                                  ("customer_aliases", ALIAS_COLUMNS, aliases)):
        if found:
            batches.append(Batch(table, columns, list(found.values()),
                                 Batch.token_for(table, positions)))
    return batches


class Behind:
    """A stage's records stored behind it, in batches, each acknowledged once stored.

    The stage that reads a topic hands every record it is done with to :meth:`add`. A
    batch goes to the warehouse when it holds ``batch_size`` records, or when its first
    record is ``flush_seconds`` old (:meth:`flush_due`, called from a timer). Batches are
    written one at a time, in order, by the task :meth:`running` starts, while the stage
    goes on with the next records; a stage two batches ahead of the warehouse waits, so
    a warehouse outage pauses it. The records are acknowledged, on the stage's stream,
    once their rows are stored, and only then.
    """

    def __init__(self, writer: RetryingWriter,
                 to_batches: Callable[[Sequence[faust.EventT]], list[Batch]], *,
                 batch_size: int, flush_seconds: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.writer = writer
        self.to_batches = to_batches
        self.batch_size = batch_size
        self.flush_seconds = flush_seconds
        self.clock = clock
        self._pending: list[faust.EventT] = []
        self._since = 0.0
        self._batches: asyncio.Queue[list[faust.EventT]] | None = None
        self._task: asyncio.Future[None] | None = None

    @asynccontextmanager
    async def running(self, stream: faust.StreamT[Any]) -> AsyncIterator[None]:
        """Write batches and acknowledge their records on ``stream`` until the block ends.

        The stream stops acknowledging records itself as it moves on. (Faust's own
        acknowledgement, in its compiled stream iterator, would also bypass the consumer's
        generation check, ``streams/runtime/consumer.py``.)
        """
        concrete = cast(faust.Stream[Any], stream)
        concrete.enable_acks = False
        self._batches = asyncio.Queue(maxsize=1)
        self._pending = []
        self._task = task = asyncio.ensure_future(self._write(concrete, self._batches))
        try:
            yield
        finally:
            task.cancel()  # a batch not written stays unacknowledged: read again
            self._batches, self._task = None, None
            self._pending = []

    async def add(self, event: faust.EventT) -> None:
        """Store ``event`` with the next batch; wait if two batches are waiting already."""
        if not self._pending:
            self._since = self.clock()
        self._pending.append(event)
        if len(self._pending) >= self.batch_size:
            await self._hand_over()

    async def flush_due(self) -> None:
        """Send the records gathered so far if the first is ``flush_seconds`` old."""
        if self._pending and self.clock() - self._since >= self.flush_seconds:
            await self._hand_over()

    async def _hand_over(self) -> None:
        batches, task = self._batches, self._task
        if batches is None or task is None:
            return  # not running (stopping): the records are read again
        events, self._pending = self._pending, []
        if not task.done() and not batches.full():
            batches.put_nowait(events)
            return
        # Wait for room, or for the writing task to end: it ends only by an error (a bug,
        # not an outage, which the writer retries), raised here so that it stops the
        # stage as it would have stopped a store agent, instead of the stage waiting on.
        put = asyncio.ensure_future(batches.put(events))
        await asyncio.wait({put, task}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            put.cancel()
            task.result()

    async def _write(self, stream: faust.Stream[Any],
                     batches: asyncio.Queue[list[faust.EventT]]) -> None:
        while True:
            events = await batches.get()
            for batch in self.to_batches(events):
                await self.writer.write(batch)  # returns only once stored
            for event in events:
                # A record fetched before a rebalance is not counted by the consumer
                # (streams/runtime/consumer.py): its new owner reads and stores it again.
                await stream.ack(event)


def behind(app: faust.App, writer: RetryingWriter,
           to_batches: Callable[[Sequence[faust.EventT]], list[Batch]], *, name: str,
           batch_size: int, flush_seconds: float) -> Behind:
    """A :class:`Behind` writing ``to_batches`` of its records, its timer added to ``app``."""
    stored = Behind(writer, to_batches, batch_size=batch_size, flush_seconds=flush_seconds)

    @app.timer(interval=flush_seconds / 4, name=f"{name}.flush")
    async def flush_when_quiet() -> None:
        await stored.flush_due()

    return stored


def register(app: faust.App, topics: TopicNames, writer: RetryingWriter, *, batch_size: int,
             flush_seconds: float) -> None:
    """Add the storing agents to ``app``: dead letters and complaint signals.

    The events of ``<app_id>-resolved`` are stored by the profiles stage (:func:`behind`).
    """
    deadletter = raw_topic(app, topics.deadletter)
    signals = raw_topic(app, topics.signals)

    def storing(topic: faust.TopicT, name: str,
                to_batches: Callable[[Sequence[faust.EventT]], list[Batch]]) -> None:
        stored = behind(app, writer, to_batches, name=name, batch_size=batch_size,
                        flush_seconds=flush_seconds)

        @app.agent(topic, name=name)
        async def store(stream: faust.StreamT[bytes]) -> None:
            async with stored.running(stream):
                async for event in stream.events():
                    await stored.add(event)

    storing(deadletter, "touchpoint.store_deadletter", lambda events: [_batch(
        "deadletter_raw", DEADLETTER_COLUMNS, events, "deadletter",
        lambda r, v, e: deadletter_row(r, v, _original(e.message.headers)),
        lambda r: (r["source_topic"], r["source_partition"], r["source_offset"]))])
    storing(signals, "touchpoint.store_signals", lambda events: [_batch(
        "complaint_signals_raw", SIGNAL_COLUMNS, events, "complaint_signal",
        lambda r, v, e: signal_row(r, v), lambda r: (r["signal_id"], r.get("revision")))])
