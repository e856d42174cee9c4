from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import pytest

from touchpoint.schemas.contract import (
    CHANNELS,
    MAX_AMOUNT,
    MAX_JSON_LINE_BYTES,
    MAX_RECORD_BYTES,
    RANGES,
    Rejection,
    check,
    check_size,
    normalize_email,
    normalize_phone,
    parse_json_event,
    parse_occurred_at,
    routing_key,
)
from touchpoint.schemas.registry import default_registry
from touchpoint.sinks import migrations

T0 = 1_795_000_000_000


def event(**fields: Any) -> dict[str, Any]:
    return {"event_id": "e1", "type": "page_view", "occurred_at": T0, "anonymous_id": "ck",
            **fields}


def test_a_valid_event_of_every_type_passes() -> None:
    extra = {"store": {"store_id": "S1"}, "campaign": {"campaign_id": "C1"}}
    for channel, spec in CHANNELS.items():
        for kind in spec.types:
            fields: dict[str, Any] = {**extra.get(channel, {})}
            if channel == "feedback" and kind != "complaint":
                fields["score"] = 3
            assert check(channel, event(type=kind, **fields), region="CN") is None, (channel, kind)


@pytest.mark.parametrize(("channel", "fields", "code", "reason"), [
    ("web", {"type": "teleport"}, "unknown_type", "type 'teleport' is not a web event type"),
    ("web", {"event_id": " "}, "missing_field", "event_id is missing"),
    ("web", {"occurred_at": None}, "bad_timestamp", "occurred_at is missing"),
    ("web", {"occurred_at": "yesterday"}, "bad_timestamp", "is not ISO-8601"),
    ("web", {"occurred_at": "2026-11-22T10:00:00"}, "bad_timestamp", "has no UTC offset"),
    ("web", {"occurred_at": 1_795_000_000}, "bad_timestamp", "seconds or microseconds"),
    ("web", {"occurred_at": True}, "bad_timestamp", "boolean"),
    ("web", {"anonymous_id": None}, "no_identifier", "no customer identifier"),
    ("web", {"anonymous_id": "  "}, "no_identifier", "no customer identifier"),
    ("web", {"dwell_ms": "12"}, "bad_field", "dwell_ms must be an integer, got str"),
    ("web", {"dwell_ms": -1}, "out_of_range", "dwell_ms must not be negative"),
    ("web", {"dwell_ms": 2**64 - 1}, "out_of_range",
     "dwell_ms=18446744073709551615 is out of range: 0 to 2,147,483,647"),
    ("web", {"amount": float("nan")}, "bad_field", "amount must be a finite number"),
    ("web", {"attributes": {"a": 1}}, "bad_field", "attributes must map strings to strings"),
    ("store", {"type": "visit"}, "missing_field", "store_id is required on store events"),
    ("campaign", {"type": "sent"}, "missing_field", "campaign_id is required"),
    ("campaign", {"type": "sent", "campaign_id": "C", "medium": "fax"}, "bad_field",
     "medium 'fax' is not one of"),
    ("callcenter", {"type": "call_ended", "outcome": "meh"}, "bad_field", "outcome 'meh'"),
    ("feedback", {"type": "csat"}, "missing_field", "score is required on csat feedback (1-5)"),
    ("feedback", {"type": "nps", "score": 11}, "bad_field", "score 11 is out of range for nps"),
    ("feedback", {"type": "review", "score": 0}, "bad_field", "out of range for review (1-5)"),
    ("sms", {}, "unknown_channel", "unknown channel 'sms'"),
])
def test_rejections_say_what_to_fix(channel: str, fields: dict[str, Any], code: str,
                                    reason: str) -> None:
    rejection = check(channel, event(**fields), region="CN")
    assert isinstance(rejection, Rejection)
    assert rejection.code == code
    assert reason in rejection.reason


def test_strict_refuses_unknown_fields_instead_of_dropping_them() -> None:
    rejection = check("web", event(colour="red"), region="CN", strict=True)
    assert rejection == Rejection(
        "unknown_field", "unknown field(s) colour for web: put extra data under attributes")
    assert check("web", event(colour="red"), region="CN") is None


def test_occurred_at_forms() -> None:
    assert parse_occurred_at(T0) == T0
    assert parse_occurred_at("2026-11-18T02:00:00Z") == 1_794_967_200_000
    assert parse_occurred_at("2026-11-18T10:00:00.250+08:00") == 1_794_967_200_250


def test_normalization() -> None:
    assert normalize_email("  Ann.Lee@Example.COM ") == "ann.lee@example.com"
    assert normalize_email("not-an-email") is None
    assert normalize_phone("+86 138-0013-8000", "CN") == "8613800138000"
    assert normalize_phone("13800138000", "CN") == "8613800138000"
    assert normalize_phone("(415) 555-0100", "US") == "14155550100"
    assert normalize_phone("12", "CN") is None


def test_routing_key_uses_the_strongest_identifier_and_never_clear_pii() -> None:
    both = routing_key({"customer_id": "C1", "email": "a@b.cn"}, "CN")
    assert both == b"customer_id:C1"
    email_key = routing_key({"email": " A@B.cn ", "anonymous_id": "x"}, "CN")
    assert email_key.startswith(b"email#") and b"a@b.cn" not in email_key
    assert email_key == routing_key({"email": "a@b.cn"}, "CN")  # normalized first
    assert routing_key({"phone": "+86 13800138000"}, "CN") == routing_key(
        {"phone": "138 0013 8000"}, "CN")
    assert routing_key({"anonymous_id": "ck-1"}, "CN") == b"anonymous_id:ck-1"


# --- limits (docs/contract.md, "Limits") ------------------------------------------------------

BASES: dict[str, dict[str, Any]] = {
    "web": {"type": "page_view"},
    "store": {"type": "purchase", "store_id": "S1"},
    "callcenter": {"type": "call_ended"},
    "campaign": {"type": "sent", "campaign_id": "C1"},
    "feedback": {"type": "complaint"},
}


def limit_event(channel: str, fields: dict[str, Any]) -> dict[str, Any]:
    """A valid event of ``channel`` with ``fields`` changed."""
    return event(**{**BASES[channel], **fields})


# Events past one limit, as a channel system could publish them (each fits Avro's types, so
# ingest can receive it too): (id, channel, changed fields, code, what the reason says).
# The publisher and ingest must refuse each with exactly this code (tests/unit/test_publish.py).
LIMIT_BREAKS: list[tuple[str, str, dict[str, Any], str, str]] = [
    ("transfers-past-int16", "callcenter", {"transfers": 40_000}, "out_of_range",
     "transfers=40000 is out of range: 0 to 32,767 (warehouse Int16)"),
    ("complaint-score-past-int16", "feedback", {"score": 100_000}, "out_of_range",
     "score=100000 is out of range: -32,768 to 32,767 (warehouse Int16)"),
    ("nps-score-below-int16", "feedback", {"type": "nps", "score": -40_000}, "out_of_range",
     "score=-40000 is out of range"),
    ("queue-wait-2**40", "callcenter", {"queue_wait_s": 2**40}, "out_of_range",
     "queue_wait_s=1099511627776 is out of range: 0 to 2,147,483,647 (Avro int; warehouse "
     "Int32)"),
    ("dwell-2**63-1", "web", {"dwell_ms": 2**63 - 1}, "out_of_range",
     "dwell_ms=9223372036854775807 is out of range: 0 to 2,147,483,647 (Avro int"),
    ("dwell-int32-max+1", "web", {"dwell_ms": 2**31}, "out_of_range", "dwell_ms=2147483648"),
    ("talk-negative", "callcenter", {"talk_s": -3}, "out_of_range",
     "talk_s must not be negative, got -3"),
    ("items-negative", "store", {"items": -1}, "out_of_range", "items must not be negative"),
    ("amount-negative", "store", {"amount": -5.0}, "out_of_range",
     "amount must not be negative, got -5.0"),
    ("amount-huge", "web", {"type": "purchase", "amount": 1e13}, "out_of_range",
     "amount=10000000000000.0 is out of range: 0 to 1,000,000,000,000"),
    ("amount-infinite", "web", {"amount": float("inf")}, "bad_field",
     "amount must be a finite number"),
    ("note-900-kb", "callcenter", {"notes": "x" * 900_000}, "too_large",
     "record is 900,"),
    ("note-chinese-10001", "callcenter", {"notes": "很" * 10_001}, "too_long",
     "notes is 10,001 characters, more than 10,000"),
    ("comment-10001", "feedback", {"comment": "a" * 10_001}, "too_long",
     "comment is 10,001 characters"),
    ("url-4097", "web", {"url": "https://shop.example.com/?q=" + "a" * 4_069}, "too_long",
     "url is 4,097 characters, more than 4,096"),
    ("referrer-4097", "web", {"referrer": "r" * 4_097}, "too_long", "referrer is 4,097"),
    ("session-id-257", "web", {"session_id": "s" * 257}, "too_long",
     "session_id is 257 characters, more than 256"),
    ("customer-id-257", "web", {"customer_id": "c" * 257}, "too_long", "customer_id is 257"),
    ("event-id-257", "web", {"event_id": "e" * 257}, "too_long", "event_id is 257"),
    ("attributes-65-keys", "web", {"attributes": {f"k{i}": "v" for i in range(65)}},
     "too_long", "attributes has 65 keys, more than 64"),
    ("attribute-key-129", "web", {"attributes": {"k" * 129: "v"}}, "too_long",
     "an attributes key is 129 characters, more than 128"),
    ("attribute-value-1025", "web", {"attributes": {"k": "v" * 1_025}}, "too_long",
     "attributes['k'] is 1,025 characters, more than 1,024"),
    ("attributes-past-64-kib", "web",
     {"attributes": {f"k{i:02}": "v" * 1_024 for i in range(64)}}, "too_large", "record is"),
    ("email-not-an-address", "web", {"email": "not-an-email-address"}, "bad_field",
     "email is not an e-mail address"),
    ("phone-not-a-number", "web", {"phone": "call me maybe"}, "bad_field",
     "phone is not a phone number (numbers without a country code are read as CN"),
]
LIMIT_IDS = [case[0] for case in LIMIT_BREAKS]


@pytest.mark.parametrize(("channel", "fields", "code", "says"),
                         [case[1:] for case in LIMIT_BREAKS if case[3] != "too_large"],
                         ids=[case[0] for case in LIMIT_BREAKS if case[3] != "too_large"])
def test_check_refuses_every_value_past_a_limit(channel: str, fields: dict[str, Any], code: str,
                                                says: str) -> None:
    rejection = check(channel, limit_event(channel, fields), region="CN", strict=True)
    assert isinstance(rejection, Rejection)
    assert (rejection.code, says in rejection.reason) == (code, True), rejection.reason


def test_values_at_the_limits_pass() -> None:
    at_limits = {
        "web": {"type": "purchase", "dwell_ms": 2**31 - 1, "amount": MAX_AMOUNT,
                "url": "u" * 4_096, "referrer": "r" * 4_096, "session_id": "s" * 256,
                "attributes": {f"{i:0128}": "v" * 1_024 for i in range(8)}},
        "store": {"queue_wait_s": 2**31 - 1, "items": 2**31 - 1, "amount": 0},
        "callcenter": {"transfers": 32_767, "talk_s": 0, "notes": "很" * 10_000},
        "feedback": {"score": -32_768, "comment": "c" * 10_000},
    }
    for channel, fields in at_limits.items():
        assert check(channel, limit_event(channel, fields), region="CN") is None, channel
    many = {f"k{i}": "v" for i in range(64)}
    assert check("web", event(attributes=many), region="CN") is None


def test_the_record_size_limit() -> None:
    assert check_size(MAX_RECORD_BYTES) is None
    rejection = check_size(MAX_RECORD_BYTES + 1)
    assert rejection == Rejection(
        "too_large", "record is 65,537 bytes, more than the 65,536 an event may take: shorten "
        "its free text (notes and comment up to 10,000 characters) or attributes, and keep "
        "documents and transcripts in your system")


def test_e_mail_and_phone_must_be_ones_ingest_can_normalize() -> None:
    assert check("web", event(email=" Ann@Example.COM ", phone="138 0013 8000"),
                 region="CN") is None
    rejection = check("web", event(phone="12"), region="US")
    assert rejection is not None and rejection.code == "bad_field"
    assert "read as US; set TOUCHPOINT_PHONE_REGION" in rejection.reason
    assert check("web", event(email=""), region="CN") is None  # empty: not sent


def test_the_range_table_fits_the_warehouse_columns_and_the_avro_types() -> None:
    # Parsed from the sources, so a column or schema change that the table misses fails here.
    sql = (Path(migrations.__file__).parent / "0001_touchpoint_events.sql").read_text()
    columns = dict(re.findall(r"^\s+(\w+) Nullable\((\w+)\),?$", sql, re.MULTILINE))
    bits = {"Int16": 16, "Int32": 32, "Int64": 64}
    numeric = {name for spec in CHANNELS.values()
               for name, kind in spec.fields.items() if kind in (int, float)}
    assert numeric == set(RANGES)
    for name, bounds in RANGES.items():
        column = columns[name]
        if column == "Float64":
            assert math.isfinite(bounds.high), name
        else:
            width = bits[column]
            assert -(2 ** (width - 1)) <= bounds.low <= bounds.high < 2 ** (width - 1), name
    for channel, spec in CHANNELS.items():
        for field in default_registry().latest(channel).schema["fields"]:
            if field["name"] in spec.fields and "int" in field["type"]:
                bounds = RANGES[field["name"]]
                assert -(2**31) <= bounds.low <= bounds.high < 2**31, (channel, field["name"])


@pytest.mark.parametrize("fields", [
    {"type": "t" * 100_000},
    {"occurred_at": "2026-" * 100_000},
    {"occurred_at": 10**5000},
    {"dwell_ms": 2**20_000},
    {"x" * 100_000: 1},
    {"attributes": {"k" * 100_000: "v"}},
    {"attributes": {"k": "v" * 100_000}},
    {"url": "u" * 100_000},
], ids=["type", "occurred_at-text", "occurred_at-int", "dwell_ms", "field-name", "attr-key",
        "attr-value", "url"])
def test_reasons_never_repeat_more_than_a_clip_of_the_input(fields: dict[str, Any]) -> None:
    rejection = check("web", event(**fields), region="CN", strict=True)
    assert rejection is not None
    assert len(rejection.reason) < 300, rejection.reason


@pytest.mark.parametrize(("line", "code", "says"), [
    ("[" * 5_000 + "]" * 5_000, "too_deep", "more than 32 deep"),
    ('{"attributes": ' * 33 + "{}" + "}" * 33, "too_deep", "more than 32 deep"),
    ("[" * 32 + "]" * 32, "bad_json", "a line must be one JSON object"),  # deep enough
    (b'{"event_id": "\xff"}', "bad_json", "line is not UTF-8 (byte 0xff at position 14)"),
    ('{"score": ' + "9" * 5_000 + "}", "bad_json", "not JSON we can read"),
    ('{"event_id": ', "bad_json", "not JSON: Expecting value at column 13"),
    (b" " * (MAX_JSON_LINE_BYTES + 1), "too_large", "line is 1,048,577 bytes or more"),
], ids=["5000-deep", "33-deep-objects", "32-deep", "not-utf8", "huge-number", "not-json",
        "huge-line"])
def test_json_lines_past_the_limits_are_refused_before_parsing(line: str | bytes, code: str,
                                                                says: str) -> None:
    rejection = parse_json_event(line)
    assert isinstance(rejection, Rejection)
    assert (rejection.code, says in rejection.reason) == (code, True), rejection.reason


def test_brackets_in_text_are_not_nesting() -> None:
    line = '\ufeff{"notes": "' + "[{" * 100 + '\\"]", "attributes": {"k": "}}"}}'
    assert parse_json_event(line) == {"notes": "[{" * 100 + '"]', "attributes": {"k": "}}"}}
    assert parse_json_event(line.encode()) == parse_json_event(line)
