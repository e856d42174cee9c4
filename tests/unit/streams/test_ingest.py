from __future__ import annotations

import hashlib
import hmac
from typing import Any

import pytest

from touchpoint.schemas.codec import codec_for
from touchpoint.streams.ingest import Accepted, Ingestor, Rejected

T0 = 1_795_000_000_000
NOW = 1_795_000_100.5


@pytest.fixture
def ingestor() -> Ingestor:
    return Ingestor(pii_salt="salt", phone_region="CN", worker="w1", clock=lambda: NOW)


def process(ingestor: Ingestor, channel: str, value: bytes | None,
            key: bytes | None = b"k") -> Accepted | Rejected:
    return ingestor.process(channel, key, value, topic=f"touchpoints.{channel}", partition=2,
                            offset=41, timestamp_ms=T0 + 5)


def encoded(channel: str, **fields: Any) -> bytes:
    return codec_for(channel).encode({"attributes": {}, **fields})


def test_a_valid_event_is_normalized(ingestor: Ingestor) -> None:
    outcome = process(ingestor, "callcenter", encoded(
        "callcenter", event_id=" e1 ", type="call_ended", occurred_at="2026-11-18T10:00:00+08:00",
        phone="138 0013 8000", email=" A@B.CN", customer_id="C9", queue_wait_s=30,
        outcome="resolved", attributes={"queue": "vip"}))
    assert isinstance(outcome, Accepted)
    ev = outcome.event
    salt = b"salt"
    assert ev["phone_hash"] == hmac.new(salt, b"8613800138000", hashlib.sha256).hexdigest()
    assert ev["email_hash"] == hmac.new(salt, b"a@b.cn", hashlib.sha256).hexdigest()
    assert (ev["event_id"], ev["channel"], ev["occurred_at"], ev["ingested_at"]) == \
        ("e1", "callcenter", 1_794_967_200_000, 1_795_000_100_500)
    assert (ev["category"], ev["stage"], ev["queue_wait_s"], ev["attributes"]) == \
        ("personnel", "satisfaction", 30, {"queue": "vip"})
    assert (ev["source_topic"], ev["source_partition"], ev["source_offset"]) == \
        ("touchpoints.callcenter", 2, 41)
    assert "email" not in ev and "phone" not in ev
    assert outcome.key == b"customer_id:C9"
    assert codec_for("event").decode(outcome.value) == ev


@pytest.mark.parametrize(("value", "code"), [
    (b"", "undecodable"),
    (None, "undecodable"),
    (b'{"event_id": 1}', "undecodable"),
    (b"\xc3\x01" + b"\x00" * 8 + b"\x00", "unknown_schema"),
])
def test_undecodable_bytes_are_rejected_with_the_original_payload(
        ingestor: Ingestor, value: bytes | None, code: str) -> None:
    outcome = process(ingestor, "web", value)
    assert isinstance(outcome, Rejected)
    assert outcome.code == code
    record = codec_for("deadletter").decode(outcome.value)
    assert record == {
        "payload": value or b"", "key": b"k", "source_topic": "touchpoints.web",
        "source_partition": 2, "source_offset": 41, "source_timestamp": T0 + 5,
        "reason_code": code, "reason": outcome.reason, "rejected_at": 1_795_000_100_500,
        "worker": "w1",
    }


@pytest.mark.parametrize(("fields", "code", "reason"), [
    ({"type": "teleport"}, "unknown_type", "type 'teleport' is not a web event type"),
    ({"anonymous_id": None}, "no_identifier", "no customer identifier"),
    ({"occurred_at": "noon"}, "bad_timestamp", "occurred_at='noon' is not ISO-8601"),
    ({"email": "nobody"}, "bad_field", "email is not an e-mail address"),
    ({"phone": "12"}, "bad_field", "phone is not a phone number"),
])
def test_contract_breaks_are_rejected_with_reasons(ingestor: Ingestor, fields: dict[str, Any],
                                                   code: str, reason: str) -> None:
    base = {"event_id": "e1", "type": "page_view", "occurred_at": T0, "anonymous_id": "ck"}
    outcome = process(ingestor, "web", encoded("web", **{**base, **fields}))
    assert isinstance(outcome, Rejected)
    assert (outcome.code, reason in outcome.reason) == (code, True)


def test_pii_never_appears_in_reasons(ingestor: Ingestor) -> None:
    outcome = process(ingestor, "web", encoded(
        "web", event_id="e1", type="page_view", occurred_at=T0, email="secret@nowhere"))
    assert isinstance(outcome, Rejected)
    assert "secret" not in outcome.reason


def test_a_record_from_another_channel_is_rejected(ingestor: Ingestor) -> None:
    value = encoded("store", event_id="e1", type="visit", occurred_at=T0, store_id="S",
                    customer_id="C")
    outcome = process(ingestor, "web", value)
    assert isinstance(outcome, Rejected)
    assert outcome.code == "wrong_subject"


def test_an_unexpected_error_becomes_a_dead_letter_not_a_crash(
        ingestor: Ingestor, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("bug")
    monkeypatch.setattr("touchpoint.streams.ingest.check", boom)
    outcome = process(ingestor, "web", encoded(
        "web", event_id="e1", type="page_view", occurred_at=T0, anonymous_id="ck"))
    assert isinstance(outcome, Rejected)
    assert (outcome.code, outcome.reason) == (
        "internal_error", "ingest failed unexpectedly: RuntimeError('bug')")
