"""Request bodies and each event's verdict (touchpoint/collector/batch.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from touchpoint.collector.batch import MAX_BATCH_EVENTS, MAX_BODY_BYTES, Batch, judge, read_body
from touchpoint.publish import encode_event
from touchpoint.schemas.contract import Rejection
from touchpoint.streams.topics import TopicNames

T0 = 1_795_000_000_000


def web(**fields: Any) -> dict[str, Any]:
    return {"channel": "web", "event_id": "e1", "type": "page_view", "occurred_at": T0,
            "anonymous_id": "ck-1", **fields}


@pytest.mark.parametrize(("body", "code", "says"), [
    (b"", "bad_json", "not JSON: Expecting value"),
    (b"\xff\xfe{}", "bad_json", "body is not UTF-8 (byte 0xff at position 0)"),
    (b"[" * 40 + b"]" * 40, "too_deep", "body nests arrays or objects more than 32 deep"),
    (b"[]", "bad_json", "the body must be one JSON object"),
    (b'"events"', "bad_json", "the body must be one JSON object"),
    (b'{"events": {}}', "bad_json", "events must be a JSON array"),
    (b'{"events": []}', "bad_json", "events is empty"),
    (json.dumps({"events": [{}] * (MAX_BATCH_EVENTS + 1)}).encode(), "too_large",
     "501 events in one request, more than 500: split the batch"),
    (b'{"write_key": 7, "events": [{}]}', "bad_json", "write_key must be a string"),
    (b" " * (MAX_BODY_BYTES + 1), "too_large", "body is 2,097,153 bytes or more"),
    (b'{"n": 1' + b"0" * 5000 + b"}", "bad_json", "not JSON we can read"),
])
def test_bodies_that_cannot_be_read_say_why(body: bytes, code: str, says: str) -> None:
    refused = read_body(body)
    assert isinstance(refused, Rejection)
    assert (refused.code, says in refused.reason) == (code, True), refused.reason


def test_a_batch_a_single_event_and_a_key_in_the_body() -> None:
    assert read_body(json.dumps({"events": [web(), 5]}).encode()) == Batch([web(), 5], None)
    assert read_body(json.dumps({"write_key": "k", **web()}).encode()) == Batch([web()], "k")
    assert read_body(json.dumps({"write_key": "k", "events": [web()]}).encode()) == Batch(
        [web()], "k")


def test_each_event_gets_its_own_verdict() -> None:
    topics = TopicNames("p.")
    events: list[Any] = [
        web(), "page_view", web(channel=None), web(channel="fax"), web(channel=["web"]),
        web(channel="store", store_id="S1", type="visit"), web(email="not-an-email-address"),
        web(event_id="e8", phone="call me maybe"), web(event_id="e9", shoe_size=42),
    ]
    verdicts = judge(events, channels=("web", "campaign"), region="CN", topics=topics)
    assert [v.as_json() for v in verdicts] == [
        {"index": 0, "event_id": "e1", "status": "accepted"},
        {"index": 1, "event_id": None, "status": "refused", "code": "bad_event",
         "reason": "an event must be a JSON object of field names to values, not a string"},
        {"index": 2, "event_id": "e1", "status": "refused", "code": "unknown_channel",
         "reason": "channel is missing: name the event's channel, one of web, store, "
                   "callcenter, campaign, feedback"},
        {"index": 3, "event_id": "e1", "status": "refused", "code": "unknown_channel",
         "reason": "channel is 'fax': name the event's channel, one of web, store, callcenter, "
                   "campaign, feedback"},
        {"index": 4, "event_id": "e1", "status": "refused", "code": "unknown_channel",
         "reason": "channel is an array, not a name: name the event's channel, one of web, "
                   "store, callcenter, campaign, feedback"},
        {"index": 5, "event_id": "e1", "status": "refused", "code": "channel_not_allowed",
         "reason": "this write key may not send store events (it may send web, campaign)"},
        {"index": 6, "event_id": "e1", "status": "refused", "code": "bad_field",
         "reason": "email is not an e-mail address (name@domain)"},
        {"index": 7, "event_id": "e8", "status": "refused", "code": "bad_field",
         "reason": "phone is not a phone number (numbers without a country code are read as "
                   "CN; set TOUCHPOINT_PHONE_REGION)"},
        {"index": 8, "event_id": "e9", "status": "refused", "code": "unknown_field",
         "reason": "unknown field(s) shoe_size for web: put extra data under attributes"},
    ]
    accepted = verdicts[0].record
    assert accepted is not None
    fields = {k: v for k, v in web().items() if k != "channel"}
    value, key = encode_event("web", fields, region="CN")
    assert (accepted.topic, accepted.key, accepted.value) == ("p.touchpoints.web", key, value)
    assert key == b"anonymous_id:ck-1"
