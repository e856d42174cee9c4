"""Ingest: inbound channel records become normalized events, or dead letters with a reason.

Per record: decode (Avro single-object, writer schema found by fingerprint), check the
contract (CONTRACT §2), normalize (e-mail and phone hashed with the PII salt, event time
in epoch ms, category and 4S stage from the contract table), then publish to
the one ordered log identity resolution reads (``touchpoints.unresolved``). Anything
that fails goes to the dead-letter topic with the original bytes, where it came from,
and why. No record stops the worker: even an unexpected error becomes a dead letter.
"""

from __future__ import annotations

import logging
import socket
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import faust

from touchpoint.exceptions import DecodeError
from touchpoint.schemas.codec import codec_for
from touchpoint.schemas.contract import (
    CHANNELS,
    Rejection,
    check,
    hash_pii,
    normalize_email,
    normalize_phone,
    parse_occurred_at,
)
from touchpoint.streams.consumer import only_current
from touchpoint.streams.identity import strongest_identifier
from touchpoint.streams.outbox import Outbox
from touchpoint.streams.sentiment import score as sentiment_score
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
        try:
            record = self._codecs[channel].decode(value)
        except DecodeError as exc:
            return Rejection(exc.code, str(exc))
        problem = check(channel, record)
        if problem is not None:
            return problem
        occurred = parse_occurred_at(record["occurred_at"])
        assert isinstance(occurred, int)  # check() accepted it
        email_hash = phone_hash = None
        if record.get("email"):
            email = normalize_email(record["email"])
            if email is None:
                return Rejection("bad_field", "email is not an e-mail address (name@domain)")
            email_hash = hash_pii(email, self._salt)
        if record.get("phone"):
            phone = normalize_phone(record["phone"], self._region)
            if phone is None:
                return Rejection(
                    "bad_field",
                    f"phone is not a phone number (numbers without a country code are read "
                    f"as {self._region}; set TOUCHPOINT_PHONE_REGION)",
                )
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
        record = {
            "payload": value or b"",
            "key": key,
            **position,
            "source_timestamp": timestamp_ms,
            "reason_code": rejection.code,
            "reason": rejection.reason,
            "rejected_at": int(self._clock() * 1000),
            "worker": self._worker,
        }
        encoded = self._deadletter_codec.encode(record)
        return Rejected(rejection.code, rejection.reason, encoded, record)


def _clean(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    return value or None


#: Records one ingest batch takes at most, and how long it waits to fill one (seconds).
BATCH_RECORDS = 1000
BATCH_WITHIN = 0.02


def register(app: faust.App, topics: TopicNames, ingestor: Ingestor, stats: IngestStats) -> None:
    """Add the ingest agent to ``app``: every inbound topic in, normalized and dead letters out."""
    channel_of = topics.inbound
    source = raw_topic(app, *channel_of)
    outbox = Outbox(app)

    @app.agent(source, name="touchpoint.ingest")
    async def ingest(stream: faust.StreamT[bytes]) -> None:
        # In batches: outputs go to the producer directly and are delivered before the
        # batch is acknowledged (see outbox.py).
        batches = cast(faust.Stream[bytes], stream).take_events(BATCH_RECORDS,
                                                                within=BATCH_WITHIN)
        async for events in batches:
            for event in only_current(app, events):  # none of an earlier generation
                message = event.message
                outcome = ingestor.process(
                    channel_of[message.topic], event.key, event.value, topic=message.topic,
                    partition=message.partition, offset=message.offset,
                    timestamp_ms=int(message.timestamp * 1000) if message.timestamp else None,
                )
                if isinstance(outcome, Accepted):
                    stats.accepted[outcome.event["channel"]] += 1
                    await outbox.send(topics.unresolved, outcome.key, outcome.value)
                else:
                    stats.note_rejection(outcome.record)
                    await outbox.send(topics.deadletter, event.key, outcome.value)
            await outbox.delivered()
