"""Normalize: one inbound channel record becomes a normalized event, or a dead letter.

Per record, :class:`Ingestor` decodes (Avro single-object, writer schema found by
fingerprint), checks the contract (CONTRACT §2) and normalizes (e-mail and phone hashed
with the PII salt, event time in epoch ms, category and 4S stage from the contract
table, text scored for sentiment). A record that fails becomes a dead letter with the
original bytes, where it came from and why, bounded so that it always fits the
dead-letter topic; even an unexpected error becomes one. The ingest agent that reads the
inbound topics and publishes the outcomes is ``streams/stages/ingest.py``.
"""

from __future__ import annotations

import hashlib
import logging
import socket
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

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
from touchpoint.sinks.writer import REASON_CHARS, bounded
from touchpoint.streams.rules.identity import strongest_identifier
from touchpoint.streams.rules.sentiment import score as sentiment_score

__all__ = [
    "DEADLETTER_KEY_BYTES",
    "DEADLETTER_PAYLOAD_BYTES",
    "DEADLETTER_REASON_CHARS",
    "PAYLOAD_BYTES_HEADER",
    "PAYLOAD_SHA256_HEADER",
    "Accepted",
    "IngestStats",
    "Ingestor",
    "Rejected",
    "original_headers",
]

log = logging.getLogger(__name__)

#: A dead letter always fits the dead-letter topic (the broker takes 1 MB a record batch
#: by default, and a reason may quote a field of any size): of the original record it
#: keeps at most this much of the value and of the key, and a reason this long at most.
DEADLETTER_PAYLOAD_BYTES = 256 * 1024
DEADLETTER_KEY_BYTES = 16 * 1024
DEADLETTER_REASON_CHARS = REASON_CHARS
#: Headers of a dead letter whose payload was cut: the original value's size and SHA-256
#: (hex), which the store stage records in the deadletter table.
PAYLOAD_BYTES_HEADER = "touchpoint-payload-bytes"
PAYLOAD_SHA256_HEADER = "touchpoint-payload-sha256"

# Channel-specific fields carried into the normalized event (union over channels).
_EXTRA_FIELDS = tuple(dict.fromkeys(f for c in CHANNELS.values() for f in c.fields))


@dataclass(init=False, slots=True)
class Accepted:
    """A valid event: the normalized record to publish and its key."""

    key: bytes
    value: bytes
    event: dict[str, Any]

    # Written out so that mypyc compiles it: one is made for every event; not frozen,
    # which only a generated ``__init__`` can set (docs/design/compiled.md).
    def __init__(self, key: bytes, value: bytes, event: dict[str, Any]) -> None:
        self.key = key
        self.value = value
        self.event = event


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
            return self.reject(outcome, key, value, position, timestamp_ms)
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

    def reject(self, rejection: Rejection, key: bytes | None, value: bytes | None,
               position: dict[str, Any], timestamp_ms: int | None) -> Rejected:
        """The dead letter of a record, bounded so that it always fits the dead-letter topic.

        It keeps at most :data:`DEADLETTER_PAYLOAD_BYTES` of the original value (the reason
        says when it was cut; :func:`original_headers` go with it), at most
        :data:`DEADLETTER_KEY_BYTES` of the key, and a reason of at most
        :data:`DEADLETTER_REASON_CHARS` (a reason may quote a field of the record).
        """
        payload = value or b""
        reason = bounded(rejection.reason)
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


def original_headers(value: bytes | None) -> list[tuple[str, bytes]] | None:
    """The size and digest of a value longer than a dead letter keeps, as record headers."""
    if value is None or len(value) <= DEADLETTER_PAYLOAD_BYTES:
        return None
    return [(PAYLOAD_BYTES_HEADER, str(len(value)).encode()),
            (PAYLOAD_SHA256_HEADER, hashlib.sha256(value).hexdigest().encode())]
