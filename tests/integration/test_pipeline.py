"""End to end: events published to real Kafka, through a real worker, into both warehouses."""

from __future__ import annotations

import hashlib
import hmac
import struct
import time
import uuid
from datetime import UTC, datetime

import pytest
from kafka import KafkaConsumer

from touchpoint.schemas.codec import codec_for
from touchpoint.streams.rules.identity import generated_id

from .conftest import Worker

pytestmark = pytest.mark.integration

T0 = 1_795_000_000_000  # epoch ms, 2026-11-18


def _id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def _hash(value: str) -> str:
    return hmac.new(b"test-salt-of-16-chars", value.encode(), hashlib.sha256).hexdigest()


def test_valid_events_of_every_channel_become_exactly_these_rows(worker: Worker) -> None:
    run = _id("run")
    events = {
        "web": {"event_id": f"{run}-w", "type": "purchase", "occurred_at": T0,
                "anonymous_id": "ck-42", "email": "  Ann.Lee@Example.COM ", "amount": 99.5,
                "currency": "CNY", "session_id": "s1", "url": "/checkout"},
        "store": {"event_id": f"{run}-s", "type": "served",
                  "occurred_at": "2026-11-18T10:00:00+08:00", "customer_id": "C-7",
                  "store_id": "ST-03", "queue_wait_s": 840, "staff_id": "E9"},
        "callcenter": {"event_id": f"{run}-c", "type": "call_ended", "occurred_at": T0 + 1000,
                       "phone": "+86 138-0013-8000", "call_id": "K1", "queue_wait_s": 300,
                       "transfers": 2, "reason": "delivery", "outcome": "unresolved",
                       "notes": "包裹又延误了"},
        "campaign": {"event_id": f"{run}-m", "type": "opened", "occurred_at": T0 + 2000,
                     "email": "ann.lee@example.com", "campaign_id": "CMP-1",
                     "medium": "email", "variant": "B"},
        "feedback": {"event_id": f"{run}-f", "type": "csat", "occurred_at": T0 + 3000,
                     "customer_id": "C-7", "score": 2, "comment": "too slow",
                     "about_channel": "store", "store_id": "ST-03",
                     "attributes": {"survey": "post-visit"}},
    }
    for channel, event in events.items():
        worker.publisher.publish(channel, event)
    worker.publisher.flush()

    worker.wait_for(f"SELECT count() FROM touchpoint_events WHERE event_id LIKE '{run}-%'", 5)
    rows = {
        r["event_id"]: r for r in worker.query(
            "SELECT event_id, channel, type, customer_id, email_hash, phone_hash, campaign_id, "
            "store_id, amount, queue_wait_s, score, outcome, reason, category, stage, "
            "transfers, attribute_keys, attribute_values, toUnixTimestamp(occurred_at) AS ts "
            f"FROM touchpoint_events WHERE event_id LIKE '{run}-%'").dicts()
    }
    ann = _hash("ann.lee@example.com")
    phone = _hash("8613800138000")
    web, store, call = rows[f"{run}-w"], rows[f"{run}-s"], rows[f"{run}-c"]
    camp, feedback = rows[f"{run}-m"], rows[f"{run}-f"]
    assert (web["channel"], web["type"], web["amount"], web["email_hash"]) == \
        ("web", "purchase", 99.5, ann)
    # e-mail and cookie on one event are linked: one customer, the smaller generated id
    assert web["customer_id"] == min(generated_id(f"email:{ann}"),
                                     generated_id("anonymous_id:ck-42"))
    assert (web["category"], web["stage"]) == ("channel", "shopping")
    assert (store["customer_id"], store["store_id"], store["queue_wait_s"]) == ("C-7", "ST-03", 840)
    # 10:00 at +08:00 is 02:00 UTC
    assert store["ts"] == int(datetime(2026, 11, 18, 2, 0, tzinfo=UTC).timestamp())
    assert (store["category"], store["stage"]) == ("personnel", "shopping")
    assert (call["phone_hash"], call["outcome"], call["reason"], call["transfers"]) == \
        (phone, "unresolved", "delivery", 2)
    assert call["customer_id"] == generated_id(f"phone:{phone}")
    assert (camp["campaign_id"], camp["email_hash"], camp["category"]) == \
        ("CMP-1", ann, "communication")
    # If the campaign event came first it was stored under the e-mail's own id; the merge
    # that the web event caused reaches the view through customer_aliases, which the
    # store stage may write in a later batch than the events (another partition).
    worker.wait_for(f"SELECT customer_id FROM touchpoint_events WHERE event_id = '{run}-m'",
                    web["customer_id"], timeout=30)
    assert (feedback["score"], feedback["stage"], feedback["attribute_keys"],
            feedback["attribute_values"]) == (2, "satisfaction", ["survey"], ["post-visit"])


def test_pii_is_never_stored_in_clear(worker: Worker) -> None:
    run = _id("pii")
    email, phone = "Secret.Person@Example.org", "+86 139 1234 5678"
    worker.publisher.publish("web", {"event_id": run, "type": "login", "occurred_at": T0,
                                     "email": email, "phone": phone, "anonymous_id": "ck-9"})
    worker.publisher.flush()
    worker.wait_for(f"SELECT count() FROM touchpoint_events WHERE event_id = '{run}'", 1)
    row = worker.query(f"SELECT * FROM touchpoint_events WHERE event_id = '{run}'")
    text = repr(row.rows).lower()
    for clear in (email.lower(), "secret.person", "13912345678", "8613912345678"):
        assert clear not in text
    assert row.dicts()[0]["email_hash"] == _hash(email.lower())
    assert row.dicts()[0]["phone_hash"] == _hash("8613912345678")


def test_a_resent_event_is_one_row(worker: Worker) -> None:
    run = _id("dup")
    event = {"event_id": run, "type": "visit", "occurred_at": T0, "customer_id": "C-1",
             "store_id": "ST-01"}
    stored_before = _stored_rows(worker)
    # Each copy is stored in its own insert (in-batch duplicates are collapsed earlier,
    # which would not test the table): wait for the sink after each send.
    for copy in range(1, 4):
        worker.publisher.publish("store", event)
        worker.publisher.flush()
        _wait_stored(worker, stored_before + copy)
    assert worker.scalar(f"SELECT count() FROM touchpoint_events WHERE event_id = '{run}'") == 1
    raw = worker.scalar(f"SELECT count() FROM touchpoint_events_raw WHERE event_id = '{run}'")
    # three inserts reached the raw table; a background merge may already have collapsed them
    assert 1 <= raw <= 3


def _stored_rows(worker: Worker) -> int:
    status = worker.status() or {}
    return int(status.get("sink", {}).get("rows", {}).get("touchpoint_events_raw", 0))


def _wait_stored(worker: Worker, rows: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while _stored_rows(worker) < rows:
        if time.monotonic() > deadline:
            pytest.fail(f"sink stored {_stored_rows(worker)} rows, expected {rows}")
        time.sleep(0.1)
    assert _stored_rows(worker) == rows


def _single_object(fingerprint: bytes, body: bytes) -> bytes:
    return b"\xc3\x01" + fingerprint + body


BAD_RECORDS = {
    # reason_code: (channel, how the bytes are made)
    "undecodable": ("web", lambda: b'{"event_id": "json-not-avro"}'),
    "unknown_schema": ("web", lambda: _single_object(struct.pack("<q", 1234567), b"\x00")),
    "unknown_type": ("web", lambda: codec_for("web").encode(_record(
        event_id=_id("bad"), type="teleport", occurred_at=T0, anonymous_id="ck"))),
    "no_identifier": ("store", lambda: codec_for("store").encode(_record(
        event_id=_id("bad"), type="visit", occurred_at=T0, store_id="ST-1"))),
    "bad_timestamp": ("callcenter", lambda: codec_for("callcenter").encode(_record(
        event_id=_id("bad"), type="call_ended", occurred_at="yesterday at noon",
        customer_id="C-1"))),
    "missing_field": ("store", lambda: codec_for("store").encode(_record(
        event_id=_id("bad"), type="visit", occurred_at=T0, customer_id="C-1"))),
}


def _record(**fields: object) -> dict[str, object]:
    """An inbound record as a buggy producer might write it, bypassing the checks."""
    return {"attributes": {}, **fields}


def test_bad_records_go_to_the_deadletter_topic_and_table_with_reasons(worker: Worker) -> None:
    sent: dict[str, tuple[str, bytes]] = {}
    for code, (channel, make) in BAD_RECORDS.items():
        value = make()
        sent[code] = (channel, value)
        worker.publisher.send_raw(channel, value, key=code.encode())
    worker.publisher.flush()

    digests = {hashlib.sha256(v).hexdigest(): code for code, (_, v) in sent.items()}
    in_list = ", ".join(f"'{d}'" for d in digests)
    worker.wait_for(f"SELECT count() FROM deadletter WHERE payload_sha256 IN ({in_list})",
                    len(BAD_RECORDS))
    rows = worker.query(
        "SELECT payload_sha256, reason_code, reason, source_topic, payload_bytes "
        f"FROM deadletter WHERE payload_sha256 IN ({in_list})").dicts()
    by_code = {digests[r["payload_sha256"]]: r for r in rows}
    assert {code: r["reason_code"] for code, r in by_code.items()} == \
        {code: code for code in BAD_RECORDS}
    for code, row in by_code.items():
        channel, value = sent[code]
        assert row["source_topic"] == worker.topics.channel(channel)
        assert row["payload_bytes"] == len(value)
        assert row["reason"]  # a sentence; the exact texts are unit-tested
    assert "teleport" in by_code["unknown_type"]["reason"]
    assert "not the Avro single-object marker" in by_code["undecodable"]["reason"] or \
        "marker" in by_code["undecodable"]["reason"]

    # The topic keeps the original bytes, where they came from, and why.
    consumer = KafkaConsumer(worker.topics.deadletter,
                             bootstrap_servers=worker.settings.kafka_servers,
                             auto_offset_reset="earliest", consumer_timeout_ms=10000,
                             group_id=None)
    found = {}
    codec = codec_for("deadletter")
    for message in consumer:
        record = codec.decode(message.value)
        for code, (_, value) in sent.items():
            if record["payload"] == value:
                found[code] = record
        if len(found) == len(sent):
            break
    consumer.close()
    assert set(found) == set(sent)
    for code, record in found.items():
        assert record["reason_code"] == code
        assert record["source_topic"] == worker.topics.channel(sent[code][0])
        assert record["key"] == code.encode()
        assert record["source_offset"] >= 0


def test_nothing_valid_is_lost_next_to_bad_records(worker: Worker) -> None:
    run = _id("mix")
    for i in range(50):
        worker.publisher.publish("web", {"event_id": f"{run}-{i}", "type": "page_view",
                                         "occurred_at": T0 + i, "anonymous_id": f"ck-{i % 7}"})
        worker.publisher.send_raw("web", b"garbage-%d" % i)
    worker.publisher.flush()
    worker.wait_for(f"SELECT count() FROM touchpoint_events WHERE event_id LIKE '{run}-%'", 50)
