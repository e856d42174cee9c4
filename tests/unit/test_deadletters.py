"""Dead letters: ids, filters, the original event back from the bytes, corrections."""

from __future__ import annotations

from typing import Any

import pytest

from touchpoint.deadletters import (
    DeadLetter,
    Selection,
    correct,
    merge_patch,
    original_event,
    parse_id,
    parse_patch,
    parse_set,
)
from touchpoint.schemas.contract import Rejection
from touchpoint.sinks.writer import RefusedRow
from touchpoint.streams.rules.normalize import Ingestor, Rejected
from touchpoint.streams.rules.rows import refused_record
from touchpoint.streams.topics import TopicNames

from .streams.rules.test_normalize import inbound

T0 = 1_795_000_000_000
TOPICS = TopicNames("p.")


def dead_letter(channel: str, event: dict[str, Any] | bytes, *, offset: int = 7,
                rejected_at: float = 1_795_000_000.0, topics: TopicNames = TOPICS) -> DeadLetter:
    """The dead letter ingest makes of ``event`` read at ``offset`` of the channel's topic."""
    value = event if isinstance(event, bytes) else inbound(channel, event)
    outcome = Ingestor(pii_salt="s" * 16, phone_region="CN", worker="w1",
                       clock=lambda: rejected_at).process(
        channel, b"k", value, topic=topics.channel(channel), partition=2, offset=offset,
        timestamp_ms=None)
    assert isinstance(outcome, Rejected), outcome
    return DeadLetter.from_record(outcome.record)


def store_visit(**fields: Any) -> dict[str, Any]:
    return {"event_id": "v1", "type": "visit", "occurred_at": T0, "customer_id": "C1", **fields}


def test_a_dead_letter_is_named_by_its_source_position() -> None:
    letter = dead_letter("store", store_visit())  # no store_id
    assert letter.id == "p.touchpoints.store/2/7"
    assert letter.reason_code == "missing_field"
    assert parse_id(" p.touchpoints.store/02/7 ") == "p.touchpoints.store/2/7"
    for bad in ("p.touchpoints.store", "p.touchpoints.store/2", "t/x/1", "t/1/-1", "/1/2"):
        with pytest.raises(ValueError, match="TOPIC/PARTITION/OFFSET"):
            parse_id(bad)


def test_every_filter_given_must_match() -> None:
    store = dead_letter("store", store_visit(), offset=1, rejected_at=1_000.0)
    web = dead_letter("web", {"event_id": "w", "type": "nap", "occurred_at": T0,
                              "anonymous_id": "a"}, offset=2, rejected_at=2_000.0)
    both = [store, web]

    def chosen(**given: Any) -> list[str]:
        return [d.reason_code for d in both if Selection(TOPICS, **given).matches(d)]

    assert chosen() == ["missing_field", "unknown_type"]
    assert chosen(channels=frozenset({"web"})) == ["unknown_type"]
    assert chosen(reasons=frozenset({"missing_field", "bad_field"})) == ["missing_field"]
    assert chosen(reasons=frozenset({"missing_field"}), channels=frozenset({"web"})) == []
    assert chosen(since_ms=1_500_000) == ["unknown_type"]
    assert chosen(until_ms=2_000_000) == ["missing_field"]  # until is exclusive
    assert chosen(ids=frozenset({web.id})) == ["unknown_type"]
    # the channel is the topic under this prefix: another prefix's topic is no channel's
    assert not Selection(TopicNames("q."), channels=frozenset({"store"})).matches(store)


def test_the_original_event_comes_back_from_the_avro_bytes() -> None:
    letter = dead_letter("store", store_visit(attributes={"till": "3"}))
    found = original_event(letter, TOPICS)
    assert not isinstance(found, Rejection)
    channel, event = found
    assert channel == "store"
    assert {k: v for k, v in event.items() if v is not None} == {
        "event_id": "v1", "type": "visit", "occurred_at": T0, "customer_id": "C1",
        "attributes": {"till": "3"}}


def test_a_json_payload_is_taken_as_the_event_it_meant() -> None:
    letter = dead_letter("web", b'{"event_id": "j1", "type": "page_view", "occurred_at": '
                                b'1795000000000, "anonymous_id": "ck"}')
    assert letter.reason_code == "undecodable"
    assert original_event(letter, TOPICS) == ("web", {
        "event_id": "j1", "type": "page_view", "occurred_at": T0, "anonymous_id": "ck"})


def test_what_cannot_be_replayed_says_why() -> None:
    garbage = original_event(dead_letter("web", b"\x00\x01garbage"), TOPICS)
    assert isinstance(garbage, Rejection) and garbage.code == "undecodable"
    foreign = original_event(dead_letter("web", b"\x00", topics=TopicNames("other.")), TOPICS)
    assert isinstance(foreign, Rejection) and foreign.code == "not_replayable"
    assert "other.touchpoints.web is not an inbound topic" in foreign.reason
    record, headers = refused_record(
        RefusedRow("touchpoint_events_raw", ("event_id",), ("e1",), "out of range"),
        worker="w", rejected_at=1)
    refused = original_event(DeadLetter.from_record(record, headers or ()), TOPICS)
    assert isinstance(refused, Rejection) and "a row the warehouse refused" in refused.reason
    # a payload longer than a dead letter keeps: its record has the original's size header
    record, headers = refused_record(
        RefusedRow("touchpoint_events_raw", ("notes",), ("x" * 300_000,), "too long"),
        worker="w", rejected_at=1)
    assert headers is not None
    cut = DeadLetter.from_record({**record, "source_topic": TOPICS.channel("web"),
                                  "reason_code": "undecodable"}, headers)
    assert cut.cut
    found = original_event(cut, TOPICS)
    assert isinstance(found, Rejection) and "only the start of the record was kept" in found.reason


def test_corrections_patch_first_then_set() -> None:
    event = {"event_id": "v1", "type": "visit", "occurred_at": T0, "customer_id": "C1",
             "store_id": None, "score": None, "attributes": {"a": "1", "b": "2"}}
    fixed = correct(event, sets=[("store_id", "SH-01"), ("attributes.c", "3")],
                    patch={"score": 4, "customer_id": None, "attributes": {"a": None}})
    assert fixed == {"event_id": "v1", "type": "visit", "occurred_at": T0, "store_id": "SH-01",
                     "score": 4, "attributes": {"b": "2", "c": "3"}}
    assert event["customer_id"] == "C1"  # the dead letter's own record is left alone
    assert merge_patch({"a": {"b": 1}}, {"a": {"c": 2}}) == {"a": {"b": 1, "c": 2}}
    assert merge_patch({"a": 1}, ["x"]) == ["x"]


def test_corrections_given_wrong_are_refused_with_the_fix() -> None:
    assert parse_set("store_id=SH=01") == ("store_id", "SH=01")
    assert parse_set("comment=") == ("comment", "")
    for bad in ("store_id", "=x", " =x"):
        with pytest.raises(ValueError, match="write FIELD=VALUE"):
            parse_set(bad)
    assert parse_patch('{"score": 4}') == {"score": 4}
    with pytest.raises(ValueError, match="not JSON"):
        parse_patch("{score: 4}")
    with pytest.raises(ValueError, match="one JSON object"):
        parse_patch("[1]")


def test_text_from_the_topic_is_shown_escaped_never_obeyed() -> None:
    from touchpoint.commands import deadletters as command

    assert command._safe("bad_field: 价格 is not a number") == "bad_field: 价格 is not a number"
    assert command._safe("ok\x1b[2J\x9b31m") == "ok\\x1b[2J\\x9b31m"
