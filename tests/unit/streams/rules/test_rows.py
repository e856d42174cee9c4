"""Warehouse rows: every column filled, dead letters bounded, refused rows dead-lettered."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from typing import Any

from touchpoint.schemas.codec import codec_for
from touchpoint.sinks.writer import RefusedRow
from touchpoint.streams.rules.rows import (
    ALIAS_COLUMNS,
    DEADLETTER_COLUMNS,
    EVENT_COLUMNS,
    MERGE_COLUMNS,
    alias_rows,
    deadletter_row,
    event_row,
    merge_row,
    refused_record,
)

T0 = 1_795_000_000_000


def normalized(**fields: object) -> dict[str, object]:
    base: dict[str, object] = {
        "event_id": "e1", "channel": "store", "type": "served", "occurred_at": T0,
        "ingested_at": T0 + 9, "customer_id": "C1", "anonymous_id": None, "email_hash": None,
        "phone_hash": None, "campaign_id": None, "category": "personnel", "stage": "shopping",
        "attributes": {"b": "2", "a": "1"}, "store_id": "S1", "queue_wait_s": 600,
        "source_topic": "touchpoints.store", "source_partition": 1, "source_offset": 7,
    }
    base.update(fields)
    return base


def test_event_row_matches_the_columns() -> None:
    row = dict(zip(EVENT_COLUMNS, event_row(normalized(), 123), strict=True))
    assert (row["event_id"], row["customer_id"], row["store_id"], row["queue_wait_s"]) == \
        ("e1", "C1", "S1", 600)
    assert (row["campaign_id"], row["amount"], row["sentiment"]) == ("", None, None)
    assert (row["attribute_keys"], row["attribute_values"]) == (["a", "b"], ["1", "2"])
    assert (row["occurred_at"], row["ingested_at"], row["_version"]) == (T0, T0 + 9, 123)


def test_deadletter_row_keeps_a_fingerprint_not_the_payload() -> None:
    payload = codec_for("web").encode({
        "event_id": "e7", "type": "teleport", "occurred_at": T0, "email": "x@y.cn",
        "attributes": {}})
    record = {"payload": payload, "key": None, "source_topic": "p.touchpoints.web",
              "source_partition": 0, "source_offset": 3, "source_timestamp": None,
              "reason_code": "unknown_type", "reason": "r", "rejected_at": T0, "worker": "w"}
    row = dict(zip(DEADLETTER_COLUMNS, deadletter_row(record, 5), strict=True))
    assert (row["event_id"], row["event_type"], row["payload_bytes"]) == \
        ("e7", "teleport", len(payload))
    assert row["payload_sha256"] == hashlib.sha256(payload).hexdigest()
    assert "x@y.cn" not in repr(row)
    garbage = dict(record, payload=b"garbage")
    row = dict(zip(DEADLETTER_COLUMNS, deadletter_row(garbage, 5), strict=True))
    assert (row["event_id"], row["event_type"]) == ("", "")


# --- dead letters: bounded rows, and rows the warehouse refused ------------------------------

def _deadletter(**fields: Any) -> dict[str, Any]:
    record = {"payload": b"garbage", "key": None, "source_topic": "p.touchpoints.web",
              "source_partition": 0, "source_offset": 3, "source_timestamp": None,
              "reason_code": "undecodable", "reason": "r", "rejected_at": T0, "worker": "w"}
    record.update(fields)
    return record


def test_a_deadletter_row_always_fits_its_columns() -> None:
    # what a foreign producer could put on the topic in valid Avro
    record = _deadletter(source_partition=-1, source_offset=-5, source_timestamp=2**62,
                         rejected_at=-(2**40), reason="\x00" * 300_000,
                         reason_code="c" * 10_000, worker="w" * 10_000)
    row = dict(zip(DEADLETTER_COLUMNS, deadletter_row(record, 5), strict=True))
    assert (row["source_partition"], row["source_offset"]) == (0, 0)
    assert (row["rejected_at"], row["source_timestamp"]) == (0, (2**32 - 1) * 1000)
    assert (len(row["reason"]), len(row["reason_code"]), len(row["worker"])) == (2000, 64, 256)
    big = dict(zip(DEADLETTER_COLUMNS, deadletter_row(_deadletter(source_partition=70_000), 5),
                   strict=True))
    assert big["source_partition"] == 2**16 - 1


def test_a_cut_payload_is_recorded_with_its_original_size_and_digest() -> None:
    record = _deadletter(payload=b"x" * 1000)
    row = dict(zip(DEADLETTER_COLUMNS,
                   deadletter_row(record, 5, (600_000, "ab" * 32)), strict=True))
    assert (row["payload_bytes"], row["payload_sha256"]) == (600_000, "ab" * 32)


def _refused(row: tuple[Any, ...], columns: tuple[str, ...] = EVENT_COLUMNS,
             table: str = "touchpoint_events_raw", reason: str = "Code: 53. too big"
             ) -> RefusedRow:
    return RefusedRow(table, columns, row, reason)


def test_a_refused_event_row_becomes_a_dead_letter_at_its_source_position() -> None:
    row = event_row(normalized(transfers=40_000), 123)
    record, headers = refused_record(_refused(row), worker="w1", rejected_at=T0)
    assert headers is None
    assert codec_for("deadletter").decode(codec_for("deadletter").encode(record)) == record
    assert (record["source_topic"], record["source_partition"], record["source_offset"]) == \
        ("touchpoints.store", 1, 7)
    assert (record["reason_code"], record["reason"], record["worker"], record["key"]) == (
        "warehouse_refused",
        "the warehouse refused this row of touchpoint_events_raw: Code: 53. too big", "w1",
        None)
    payload = json.loads(record["payload"])
    assert payload == dict(zip(EVENT_COLUMNS, json.loads(json.dumps(row)), strict=True))
    assert payload["transfers"] == 40_000
    stored = dict(zip(DEADLETTER_COLUMNS, deadletter_row(record, 5), strict=True))
    assert (stored["event_id"], stored["event_type"]) == ("e1", "served")


def test_a_refused_row_without_a_position_gets_the_same_stand_in_every_time() -> None:
    refused = _refused(("C1", 2**70), ("customer_id", "spend"), "customer_profiles_raw")
    record, _ = refused_record(refused, worker="w", rejected_at=T0)
    again, _ = refused_record(refused, worker="w", rejected_at=T0 + 1)
    other, _ = refused_record(_refused(("C2", 2**70), ("customer_id", "spend"),
                                       "customer_profiles_raw"), worker="w", rejected_at=T0)
    assert (record["source_topic"], record["source_partition"]) == \
        ("warehouse.customer_profiles_raw", 0)
    assert record["source_offset"] == again["source_offset"] != other["source_offset"]
    assert 0 <= record["source_offset"] < 2**63
    assert json.loads(record["payload"]) == {"customer_id": "C1", "spend": 2**70}


def test_a_huge_refused_row_is_cut_with_its_original_size() -> None:
    row = event_row(normalized(notes="\x00" * 300_000, transfers=40_000), 1)
    refused = _refused(row, reason="Code: 27. " + "\x00" * 300_000)
    record, headers = refused_record(refused, worker="w", rejected_at=T0)
    body_size = len(json.dumps(refused.values()).encode())  # NUL: six characters in JSON
    assert body_size > 1_800_000
    assert len(record["payload"]) == 256 * 1024
    assert record["reason"].endswith(f"… (payload cut to its first 262,144 of {body_size:,} bytes)")
    assert len(codec_for("deadletter").encode(record)) < 300 * 1024
    assert dict(headers or []) == {
        "touchpoint-payload-bytes": str(body_size).encode(),
        "touchpoint-payload-sha256":
            hashlib.sha256(json.dumps(refused.values()).encode()).hexdigest().encode()}


def test_a_merge_gives_its_row_and_one_alias_row_per_id_it_folds_in() -> None:
    merge = {"merged_id": "u-1", "into_id": "C1", "merged_at": T0, "event_id": "e9",
             "identifiers": ["email:x"], "aliases": ["u-0"], "recorded_at": T0 + 5}
    assert merge_row(merge) == ("u-1", "C1", T0, "e9", ["email:x"], ["u-0"], T0 + 5)
    assert len(merge_row(merge)) == len(MERGE_COLUMNS)
    assert alias_rows(merge) == [("u-1", "C1", T0 + 5), ("u-0", "C1", T0 + 5)]
    assert all(len(row) == len(ALIAS_COLUMNS) for row in alias_rows(merge))


def test_row_building_needs_neither_faust_nor_kafka() -> None:
    code = ("import sys, touchpoint.streams.rules.rows, touchpoint.streams.rules.minute_rows; "
            "print(sorted({'faust', 'aiokafka', 'mode'} & set(sys.modules)))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == "[]"
