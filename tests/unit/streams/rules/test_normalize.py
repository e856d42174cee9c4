from __future__ import annotations

import hashlib
import hmac
from typing import Any

import pytest

from touchpoint.schemas.codec import codec_for
from touchpoint.schemas.contract import CHANNELS, COMMON_FIELDS, MAX_RECORD_BYTES
from touchpoint.streams.rules.normalize import Accepted, Ingestor, Rejected

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


@pytest.mark.python_source
def test_an_unexpected_error_becomes_a_dead_letter_not_a_crash(
        ingestor: Ingestor, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("bug")
    monkeypatch.setattr("touchpoint.streams.rules.normalize.check", boom)
    outcome = process(ingestor, "web", encoded(
        "web", event_id="e1", type="page_view", occurred_at=T0, anonymous_id="ck"))
    assert isinstance(outcome, Rejected)
    assert (outcome.code, outcome.reason) == (
        "internal_error", "ingest failed unexpectedly: RuntimeError('bug')")


# --- limits on inbound records -----------------------------------------------------------------


from ...avro_wire import varint  # noqa: E402 - with the tests that write by hand


def inbound(channel: str, event: dict[str, Any]) -> bytes:
    """The Avro bytes a producer could send for ``event``, unchecked.

    fastavro writes only what an Avro int holds in an ``int`` field; one integer field
    past that is written by hand, as a varint of any size can carry it.
    """
    codec = codec_for(channel)
    record = {name: event.get(name) for name in (*COMMON_FIELDS, *CHANNELS[channel].fields)}
    record["attributes"] = event.get("attributes") or {}
    wide = [name for name, value in record.items() if name != "occurred_at"
            and isinstance(value, int) and not -(2**31) <= value < 2**31]
    if not wide:
        return codec.encode(record, check=False)
    assert len(wide) == 1, wide
    name = wide[0]
    one = codec.encode({**record, name: 1}, check=False)
    two = codec.encode({**record, name: 2}, check=False)
    at = next(i for i, (a, b) in enumerate(zip(one, two, strict=True)) if a != b)
    return one[:at] + varint(event[name]) + one[at + 1:]


def test_varint_matches_the_avro_encoder() -> None:
    for value in (0, 1, -1, 63, -64, 64, 2**31 - 1, -(2**31), 2**40, -(2**63), 2**63 - 1):
        one = codec_for("event").encode(
            {"event_id": "e", "channel": "web", "type": "t", "occurred_at": 1,
             "ingested_at": 1, "category": "c", "stage": "s", "attributes": {},
             "source_topic": "t", "source_partition": 0, "source_offset": value}, check=False)
        assert one.endswith(varint(value)), value


INBOUND_BASE = {"event_id": "e1", "occurred_at": T0, "anonymous_id": "ck", "store_id": "S1"}
TYPES = {"web": "page_view", "callcenter": "call_ended", "feedback": "complaint",
         "store": "visit"}


@pytest.mark.parametrize(("channel", "field", "value", "says"), [
    ("web", "dwell_ms", 2**31, "dwell_ms=2147483648 is out of range: 0 to 2,147,483,647"),
    ("callcenter", "queue_wait_s", 2**40, "queue_wait_s=1099511627776 is out of range"),
    ("callcenter", "transfers", -(2**31) - 1, "transfers must not be negative, got -2147483649"),
    ("feedback", "score", 2**63 - 1, "score=9223372036854775807 is out of range"),
], ids=["2**31", "2**40", "-2**31-1", "2**63-1"])
def test_integers_past_an_avro_int_are_refused_by_the_range_table(
        ingestor: Ingestor, channel: str, field: str, value: int, says: str) -> None:
    data = inbound(channel, {**INBOUND_BASE, "type": TYPES[channel], field: value})
    assert codec_for(channel).decode(data)[field] == value  # the varint carried it
    outcome = process(ingestor, channel, data)
    assert isinstance(outcome, Rejected)
    assert (outcome.code, says in outcome.reason) == ("out_of_range", True), outcome.reason


@pytest.mark.parametrize(("channel", "field", "value"), [
    ("web", "dwell_ms", 2**64 - 1),
    ("feedback", "score", -(2**70)),
    ("store", "items", 2**20_000),
    ("store", "items", 2**70 + 5),  # fastavro's compiled reader would read 5
], ids=["2**64-1", "-2**70", "2**20000", "2**70+5"])
def test_integers_wider_than_64_bits_are_not_avro(ingestor: Ingestor, channel: str, field: str,
                                                  value: int) -> None:
    data = inbound(channel, {**INBOUND_BASE, "type": TYPES[channel], field: value})
    outcome = process(ingestor, channel, data)
    assert isinstance(outcome, Rejected)
    assert outcome.code == "undecodable"
    assert outcome.reason.startswith(f"'{field}' of a '{channel}' v1 record is an integer "
                                     "wider than 64 bits"), outcome.reason


def test_text_with_long_runs_of_high_bytes_still_decodes(ingestor: Ingestor) -> None:
    # Chinese in UTF-8 is all bytes >= 0x80: the body is walked, and found fine.
    outcome = process(ingestor, "callcenter", encoded(
        "callcenter", event_id="e1", type="call_ended", occurred_at=T0, anonymous_id="ck",
        notes="客户多次来电投诉物流延误" * 20, talk_s=2**31 - 1, attributes={"键": "值" * 30}))
    assert isinstance(outcome, Accepted)
    assert outcome.event["talk_s"] == 2**31 - 1


def test_the_internal_packed_form_is_refused_on_an_inbound_topic(ingestor: Ingestor) -> None:
    # Packed (JSON) records skip Avro's typing: a dict for a string, a float for an int.
    record = {"event_id": "e1", "type": "page_view", "occurred_at": T0, "anonymous_id": "ck",
              "attributes": {}}
    for packed in (codec_for("web").pack(record),
                   codec_for("web").pack({**record, "dwell_ms": 1.5, "url": {"a": 1}})):
        outcome = process(ingestor, "web", packed)
        assert isinstance(outcome, Rejected)
        assert outcome.code == "undecodable"
        assert "internal packed form (marker C3 4A)" in outcome.reason
        assert "single-object encoding (marker C3 01)" in outcome.reason
    assert isinstance(process(ingestor, "web", encoded("web", **record)), Accepted)


def test_a_record_too_large_is_refused_before_it_is_decoded(ingestor: Ingestor) -> None:
    value = b"\xc3\x01" + b"\xff" * MAX_RECORD_BYTES  # would be undecodable, if decoded
    outcome = process(ingestor, "web", value)
    assert isinstance(outcome, Rejected)
    assert (outcome.code, outcome.reason.startswith("record is 65,538 bytes, more than the "
                                                    "65,536")) == ("too_large", True)
    assert codec_for("deadletter").decode(outcome.value)["payload"] == value  # kept whole


# --- poison records: dead letters that always fit -------------------------------------------

#: What one dead letter (value and key) may take: well under the broker's default 1 MB.
DEADLETTER_LIMIT = 300 * 1024


@pytest.mark.parametrize("field", ["x" * 600_000, "\x00" * 300_000], ids=["600KB", "NUL"])
def test_a_dead_letter_fits_the_topic_whatever_its_reason_quotes(ingestor: Ingestor,
                                                                 field: str) -> None:
    from touchpoint.schemas.contract import Rejection

    value = encoded("web", event_id="e1", type=field, occurred_at=T0, anonymous_id="ck")
    reason = f"type {field!r} is not a web event type"  # a reason quoting the field
    assert len(reason) + len(value) > 1_100_000
    key = b"k" * 100_000
    rejected = ingestor.reject(Rejection("unknown_type", reason), key, value,
                               {"source_topic": "touchpoints.web", "source_partition": 2,
                                "source_offset": 41}, T0)
    assert len(rejected.value) + len(rejected.record["key"]) < DEADLETTER_LIMIT
    record = codec_for("deadletter").decode(rejected.value)
    assert record["payload"] == value[:256 * 1024] and record["key"] == key[:16 * 1024]
    assert record["reason"] == rejected.reason
    assert rejected.reason == (f"{reason[:999]}… (payload cut to its first 262,144 of "
                               f"{len(value):,} bytes)")
    # and whatever ingest itself says of such a record
    outcome = process(ingestor, "web", value, key=key)
    assert isinstance(outcome, Rejected)
    assert len(outcome.value) + len(outcome.record["key"]) < DEADLETTER_LIMIT
