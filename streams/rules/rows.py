"""Warehouse rows: how an event, a dead letter, a signal or a merge becomes a row.

Pure, no Kafka and no Faust: each function takes a decoded record and returns one row,
its values in the order of its table's columns (the ``*_COLUMNS`` tuples, which follow
``sinks/migrations/``). The store stage (``streams/stages/store.py``) and the profiles
stage batch these rows and write them; :func:`refused_record` turns a row the
warehouse refused back into a dead letter.

A dead letter's own row holds only bounded text and in-range numbers
(:func:`deadletter_row`), so it is never refused itself.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

from touchpoint.exceptions import DecodeError, SchemaError
from touchpoint.schemas.codec import codec_for
from touchpoint.sinks.writer import RefusedRow, bounded
from touchpoint.streams.rules.identity import provisional_customer_id
from touchpoint.streams.rules.normalize import (
    DEADLETTER_PAYLOAD_BYTES,
    DEADLETTER_REASON_CHARS,
    PAYLOAD_BYTES_HEADER,
    PAYLOAD_SHA256_HEADER,
    original_headers,
)

__all__ = [
    "ALIAS_COLUMNS",
    "DEADLETTER_COLUMNS",
    "EVENT_COLUMNS",
    "MERGE_COLUMNS",
    "SIGNAL_COLUMNS",
    "alias_rows",
    "deadletter_row",
    "event_row",
    "merge_row",
    "original_payload",
    "refused_record",
    "signal_row",
]

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


def event_row(event: dict[str, Any], version: int,
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


def merge_row(merge: Mapping[str, Any]) -> tuple[Any, ...]:
    """One ``identity_merges`` row, values in :data:`MERGE_COLUMNS` order."""
    return tuple(merge[c] for c in MERGE_COLUMNS)


def alias_rows(merge: Mapping[str, Any]) -> list[tuple[Any, ...]]:
    """The ``customer_aliases`` rows of a merge: the merged id and its aliases, now its.

    The version is the merge's record time, so a later merge of the same alias wins.
    """
    return [(alias, merge["into_id"], merge["recorded_at"])
            for alias in (merge["merged_id"], *merge["aliases"])]


def signal_row(record: Mapping[str, Any], version: int) -> tuple[Any, ...]:
    """One ``complaint_signals_raw`` row; the record's revision orders its states."""
    return (*(record[c] for c in SIGNAL_COLUMNS[:-1]), record.get("revision") or version)


def deadletter_row(record: Mapping[str, Any], version: int,
                   original: tuple[int, str] | None = None) -> tuple[Any, ...]:
    """One ``deadletter_raw`` row: where, why, and a fingerprint of the payload (not the payload).

    The event id and type are read from the payload when it decodes at all, so operators
    can find the sender's event; e-mail and phone in it are never copied. ``original`` is
    the size and SHA-256 of a payload the dead letter keeps only the start of
    (:func:`original_payload`).

    Whatever a producer put on the topic, the row fits its columns (text bounded,
    numbers and times within their types' ranges): a refused dead-letter row would stop
    their storage, as it cannot be dead-lettered in turn.
    """
    payload: bytes = record["payload"]
    event_id, event_type = _peek_ids(record["source_topic"], record["reason_code"], payload)
    size, digest = original or (len(payload), hashlib.sha256(payload).hexdigest())
    timestamp = record.get("source_timestamp")
    return (
        _clamp(record["rejected_at"], 0, _DATETIME_MAX_MS), bounded(record["source_topic"], 256),
        _clamp(record["source_partition"], 0, 2**16 - 1),
        _clamp(record["source_offset"], 0, 2**64 - 1),
        None if timestamp is None else _clamp(timestamp, 0, _DATETIME_MAX_MS),
        bounded(record["reason_code"], 64), bounded(record["reason"], _REASON_CHARS),
        bounded(event_id, 256), bounded(event_type, 256), _clamp(size, 0, 2**32 - 1),
        bounded(digest, 64), bounded(record["worker"], 256), version,
    )


#: The latest time a ``DateTime`` holds (2106-02-07), in epoch milliseconds.
_DATETIME_MAX_MS = (2**32 - 1) * 1000
#: Our reasons are bounded, and a note on a cut payload may follow; room for both.
_REASON_CHARS = 2 * DEADLETTER_REASON_CHARS


def _clamp(value: int, low: int, high: int) -> int:
    return min(max(value, low), high)


def original_payload(headers: Iterable[tuple[str, bytes]] | Mapping[str, bytes] | None
                     ) -> tuple[int, str] | None:
    """Size and SHA-256 of a cut payload, from its dead letter's headers (None: not cut)."""
    found = dict(headers.items() if isinstance(headers, Mapping) else headers or ())
    size, digest = found.get(PAYLOAD_BYTES_HEADER), found.get(PAYLOAD_SHA256_HEADER)
    if size is None or digest is None:
        return None
    try:
        return int(size), bytes(digest).decode("ascii")
    except (TypeError, ValueError):
        return None


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
    reason = bounded(f"the warehouse refused this row of {refused.table}: "
                            f"{refused.reason}")
    if len(body) > DEADLETTER_PAYLOAD_BYTES:
        reason += (f" (payload cut to its first {DEADLETTER_PAYLOAD_BYTES:,} of "
                   f"{len(body):,} bytes)")
    record = {
        "payload": body[:DEADLETTER_PAYLOAD_BYTES], "key": None,
        "source_topic": bounded(topic, 249), "source_partition": partition,
        "source_offset": offset, "source_timestamp": None,
        "reason_code": "warehouse_refused", "reason": reason, "rejected_at": rejected_at,
        "worker": worker,
    }
    return record, original_headers(body)


def _fits(value: object, bits: int) -> bool:
    """Whether ``value`` is an integer from 0 to ``2**bits - 1`` (Avro int: 31, long: 63)."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**bits


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
