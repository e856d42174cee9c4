"""Ingest: inbound channel records become normalized events, or dead letters with a reason.

Per record: decode (Avro single-object, writer schema found by fingerprint), check the
contract (CONTRACT §2), normalize (e-mail and phone hashed with the PII salt, event time
in epoch ms, category and 4S stage from the contract table), then publish to
the one ordered log identity resolution reads (``touchpoints.unresolved``). Anything
that fails goes to the dead-letter topic with the original bytes, where it came from,
and why. No record stops the worker: even an unexpected error becomes a dead letter.
"""

from __future__ import annotations

import hashlib
import logging
import socket
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import faust
from aiokafka.errors import (
    KafkaError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
)

from touchpoint.exceptions import DecodeError
from touchpoint.schemas.codec import codec_for
from touchpoint.schemas.contract import (
    CHANNELS,
    Rejection,
    check,
    check_size,
    hash_pii,
    normalize_email,
    normalize_phone,
    parse_occurred_at,
)
from touchpoint.streams.rules.sentiment import score as sentiment_score
from touchpoint.streams.runtime.consumer import only_current
from touchpoint.streams.runtime.outbox import Outbox
from touchpoint.streams.stages.identity import strongest_identifier
from touchpoint.streams.topics import TopicNames, raw_topic

__all__ = ["Accepted", "IngestStats", "Ingestor", "Rejected", "register"]

log = logging.getLogger(__name__)

# Channel-specific fields carried into the normalized event (union over channels).
_EXTRA_FIELDS = tuple(dict.fromkeys(f for c in CHANNELS.values() for f in c.fields))


@dataclass(frozen=True, slots=True)
class Accepted:
    """A valid event: the normalized record to publish and its key."""

    key: bytes
    value: bytes
    event: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Rejected:
    """An invalid record: the dead-letter record to publish."""

    code: str
    reason: str
    value: bytes
    record: dict[str, Any]


@dataclass
class IngestStats:
    """Counts for /status: accepted per channel, rejected per reason code."""

    accepted: Counter[str] = field(default_factory=Counter)
    rejected: Counter[str] = field(default_factory=Counter)
    last_rejections: list[dict[str, Any]] = field(default_factory=list)

    def note_rejection(self, record: Mapping[str, Any]) -> None:
        """Remember a rejection (the newest 20, for operators)."""
        self.rejected[record["reason_code"]] += 1
        self.last_rejections.insert(0, {
            k: record[k] for k in ("source_topic", "source_partition", "source_offset",
                                   "reason_code", "reason", "rejected_at")
        })
        del self.last_rejections[20:]


class Ingestor:
    """Turns one inbound record into :class:`Accepted` or :class:`Rejected`."""

    def __init__(self, *, pii_salt: str, phone_region: str, worker: str | None = None,
                 clock: Callable[[], float] = time.time,
                 sentiment: Callable[[str | None], float | None] | None = None) -> None:
        self._salt = pii_salt.encode()
        self._region = phone_region
        self._worker = worker or socket.gethostname()
        self._clock = clock
        # Text is scored here, once, where the work spreads over every inbound partition;
        # the score travels with the event to the warehouse and the complaint detector.
        self._sentiment = sentiment or sentiment_score
        self._event_codec = codec_for("event")
        self._deadletter_codec = codec_for("deadletter")
        self._codecs = {channel: codec_for(channel) for channel in CHANNELS}

    def process(self, channel: str, key: bytes | None, value: bytes | None, *, topic: str,
                partition: int, offset: int, timestamp_ms: int | None) -> Accepted | Rejected:
        """Decode, check and normalize one record; never raises for a bad record."""
        position = {"source_topic": topic, "source_partition": partition,
                    "source_offset": offset}
        try:
            outcome = self._normalize(channel, value, position)
        except Exception as exc:  # a bug must not stop the worker; the record is kept
            log.exception("unexpected error ingesting %s[%d]@%d", topic, partition, offset)
            outcome = Rejection("internal_error", f"ingest failed unexpectedly: {exc!r}")
        if isinstance(outcome, Rejection):
            return self._reject(outcome, key, value, position, timestamp_ms)
        kind, ident = strongest_identifier(outcome)
        # built here from a record check() accepted: packed for the later stages, unchecked
        # (schemas/codec.py)
        return Accepted(f"{kind}:{ident}".encode(),
                        self._event_codec.pack(outcome), outcome)

    def _normalize(self, channel: str, value: bytes | None,
                   position: dict[str, Any]) -> dict[str, Any] | Rejection:
        if not value:
            return Rejection("undecodable", "empty record (a tombstone?): nothing to ingest")
        # The publisher's checks, in the publisher's order: size, then the contract.
        problem = check_size(len(value))  # before decoding: bounds what decoding costs
        if problem is not None:
            return problem
        try:
            # Avro only: the packed form would skip Avro's typing (schemas/codec.py).
            record = self._codecs[channel].decode(value, packed=False)
        except DecodeError as exc:
            return Rejection(exc.code, str(exc))
        problem = check(channel, record, region=self._region)
        if problem is not None:
            return problem
        occurred = parse_occurred_at(record["occurred_at"])
        assert isinstance(occurred, int)  # check() accepted it
        email_hash = phone_hash = None
        if record.get("email"):
            email = normalize_email(record["email"])
            assert email is not None  # check() accepted it
            email_hash = hash_pii(email, self._salt)
        if record.get("phone"):
            phone = normalize_phone(record["phone"], self._region)
            assert phone is not None  # check() accepted it
            phone_hash = hash_pii(phone, self._salt)
        kind = CHANNELS[channel].types[record["type"]]
        event: dict[str, Any] = {
            "event_id": record["event_id"].strip(),
            "channel": channel,
            "type": record["type"],
            "occurred_at": occurred,
            "ingested_at": int(self._clock() * 1000),
            "customer_id": _clean(record.get("customer_id")),
            "anonymous_id": _clean(record.get("anonymous_id")),
            "email_hash": email_hash,
            "phone_hash": phone_hash,
            "campaign_id": _clean(record.get("campaign_id")),
            "category": kind.category,
            "stage": kind.stage,
            "attributes": record.get("attributes") or {},
        }
        for name in _EXTRA_FIELDS:
            event[name] = record.get(name)
        text = record.get("notes") or record.get("comment")
        event["sentiment"] = self._sentiment(text) if text else None
        event.update(position)
        return event

    def _reject(self, rejection: Rejection, key: bytes | None, value: bytes | None,
                position: dict[str, Any], timestamp_ms: int | None) -> Rejected:
        """The dead letter of a record, bounded so that it always fits the dead-letter topic.

        It keeps at most :data:`DEADLETTER_PAYLOAD_BYTES` of the original value (the reason
        says when it was cut; :func:`original_headers` go with it), at most
        :data:`DEADLETTER_KEY_BYTES` of the key, and a reason of at most
        :data:`DEADLETTER_REASON_CHARS` (a reason may quote a field of the record).
        """
        payload = value or b""
        reason = bounded_reason(rejection.reason)
        if len(payload) > DEADLETTER_PAYLOAD_BYTES:
            reason += (f" (payload cut to its first {DEADLETTER_PAYLOAD_BYTES:,} of "
                       f"{len(payload):,} bytes)")
        record = {
            "payload": payload[:DEADLETTER_PAYLOAD_BYTES],
            "key": None if key is None else key[:DEADLETTER_KEY_BYTES],
            **position,
            "source_timestamp": timestamp_ms,
            "reason_code": rejection.code,
            "reason": reason,
            "rejected_at": int(self._clock() * 1000),
            "worker": self._worker,
        }
        encoded = self._deadletter_codec.encode(record)
        return Rejected(rejection.code, reason, encoded, record)


def _clean(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    return value or None


#: Records one ingest batch takes at most, and how long it waits to fill one (seconds).
BATCH_RECORDS = 1000
BATCH_WITHIN = 0.02

#: A dead letter always fits the dead-letter topic (the broker takes 1 MB a record batch
#: by default, and a reason may quote a field of any size): of the original record it
#: keeps at most this much of the value and of the key, and a reason this long at most.
DEADLETTER_PAYLOAD_BYTES = 256 * 1024
DEADLETTER_KEY_BYTES = 16 * 1024
DEADLETTER_REASON_CHARS = 1000
#: Headers of a dead letter whose payload was cut: the original value's size and SHA-256
#: (hex), which the deadletter table records (``store.py``).
PAYLOAD_BYTES_HEADER = "touchpoint-payload-bytes"
PAYLOAD_SHA256_HEADER = "touchpoint-payload-sha256"


def bounded_reason(reason: str, limit: int = DEADLETTER_REASON_CHARS) -> str:
    """``reason`` cut to ``limit`` characters, the last one an ellipsis when cut."""
    return reason if len(reason) <= limit else reason[:limit - 1] + "…"


def original_headers(value: bytes | None) -> list[tuple[str, bytes]] | None:
    """The size and digest of a value longer than a dead letter keeps, as record headers."""
    if value is None or len(value) <= DEADLETTER_PAYLOAD_BYTES:
        return None
    return [(PAYLOAD_BYTES_HEADER, str(len(value)).encode()),
            (PAYLOAD_SHA256_HEADER, hashlib.sha256(value).hexdigest().encode())]


def refused_by_kafka(exc: BaseException) -> bool:
    """Whether Kafka refused a record for what it is (its size), not for being unavailable."""
    return isinstance(exc, MessageSizeTooLargeError | RecordListTooLargeError
                      | RecordTooLargeError)


@dataclass(frozen=True, slots=True)
class _Output:
    """What ingest sends for one inbound record; ``fallback`` counts the dead ends so far.

    0: the record's own output (its normalized event or dead letter); 1: an
    ``internal_error`` dead letter with its payload; 2: one without (where and why only).
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
    outbox = Outbox(app)

    def where(event: faust.EventT) -> tuple[dict[str, Any], int | None]:
        message = event.message
        return ({"source_topic": message.topic, "source_partition": message.partition,
                 "source_offset": message.offset},
                int(message.timestamp * 1000) if message.timestamp else None)

    def output(event: faust.EventT) -> _Output:
        message = event.message
        _, timestamp_ms = where(event)
        outcome = ingestor.process(
            channel_of[message.topic], event.key, event.value, topic=message.topic,
            partition=message.partition, offset=message.offset, timestamp_ms=timestamp_ms)
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
            return dead_letter(event, ingestor._reject(
                rejection, event.key, event.value, position, timestamp_ms), 1)
        if fallback == 2:
            rejection = Rejection(
                "internal_error",
                f"neither its output nor its dead letter could be sent "
                f"({type(exc).__name__}): find the record at its source position")
            return dead_letter(event, ingestor._reject(
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
        # In batches: outputs go to the producer directly and are delivered before the
        # batch is acknowledged (see outbox.py).
        batches = cast(faust.Stream[bytes], stream).take_events(BATCH_RECORDS,
                                                                within=BATCH_WITHIN)
        async for events in batches:
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
