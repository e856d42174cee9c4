from __future__ import annotations

from typing import Any

import pytest

from touchpoint.schemas.contract import (
    CHANNELS,
    Rejection,
    check,
    normalize_email,
    normalize_phone,
    parse_occurred_at,
    routing_key,
)

T0 = 1_795_000_000_000


def event(**fields: Any) -> dict[str, Any]:
    return {"event_id": "e1", "type": "page_view", "occurred_at": T0, "anonymous_id": "ck",
            **fields}


def test_a_valid_event_of_every_type_passes() -> None:
    extra = {"store": {"store_id": "S1"}, "campaign": {"campaign_id": "C1"}}
    for channel, spec in CHANNELS.items():
        for kind in spec.types:
            fields = {**extra.get(channel, {})}
            if channel == "feedback" and kind != "complaint":
                fields["score"] = 3
            assert check(channel, event(type=kind, **fields)) is None, (channel, kind)


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
    ("web", {"dwell_ms": -1}, "bad_field", "dwell_ms must not be negative"),
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
    rejection = check(channel, event(**fields))
    assert isinstance(rejection, Rejection)
    assert rejection.code == code
    assert reason in rejection.reason


def test_strict_refuses_unknown_fields_instead_of_dropping_them() -> None:
    rejection = check("web", event(colour="red"), strict=True)
    assert rejection == Rejection(
        "unknown_field", "unknown field(s) colour for web: put extra data under attributes")
    assert check("web", event(colour="red")) is None


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
