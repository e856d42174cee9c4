from __future__ import annotations

import hashlib

from touchpoint.schemas.codec import codec_for
from touchpoint.sinks.base import Batch
from touchpoint.streams.store import DEADLETTER_COLUMNS, EVENT_COLUMNS, deadletter_row, event_row

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


def test_batch_token_is_the_same_for_the_same_records_in_any_order() -> None:
    a = Batch.token_for("t", [("x", 0, 1), ("x", 1, 5)])
    assert a == Batch.token_for("t", [("x", 1, 5), ("x", 0, 1)])
    assert a != Batch.token_for("t", [("x", 0, 1)])
    assert a != Batch.token_for("other", [("x", 0, 1), ("x", 1, 5)])
