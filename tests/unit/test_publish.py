"""Publishing: the publisher refuses what ingest would, and every input line gets a verdict."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

from touchpoint.exceptions import ContractError, PublishError
from touchpoint.publish import LineError, Publisher, encode_event, publish_lines, read_lines
from touchpoint.schemas.codec import codec_for
from touchpoint.streams.rules.normalize import Accepted, Ingestor, Rejected

from .streams.rules.test_normalize import inbound
from .test_contract import LIMIT_BREAKS, LIMIT_IDS, T0, limit_event


class FakeFuture:
    def add_errback(self, callback: Any) -> None:
        pass


class FakeProducer:
    """Stands in for kafka-python's producer: keeps what was sent."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes]] = []

    def send(self, topic: str, *, key: bytes | None, value: bytes) -> FakeFuture:
        self.sent.append((topic, key, value))
        return FakeFuture()

    def flush(self, timeout: float | None = None) -> None:
        pass

    def close(self) -> None:
        pass


@pytest.fixture
def producer() -> FakeProducer:
    return FakeProducer()


@pytest.fixture
def publisher(producer: FakeProducer) -> Publisher:
    return Publisher(bootstrap_servers=["unused:9092"], phone_region="CN", producer=producer)


@pytest.fixture
def ingestor() -> Ingestor:
    return Ingestor(pii_salt="salt", phone_region="CN", worker="w1", clock=lambda: 1.0)


def publisher_verdict(publisher: Publisher, channel: str, event: dict[str, Any]) -> tuple[str, str]:
    try:
        publisher.encode(channel, event)
    except ContractError as exc:
        return exc.code, str(exc)
    return "accepted", ""


def ingest_verdict(ingestor: Ingestor, channel: str, event: dict[str, Any]) -> tuple[str, str]:
    outcome = ingestor.process(channel, b"k", inbound(channel, event),
                               topic=f"touchpoints.{channel}", partition=0, offset=1,
                               timestamp_ms=None)
    if isinstance(outcome, Accepted):
        return "accepted", ""
    return outcome.code, outcome.reason


@pytest.mark.parametrize(("channel", "fields", "code", "says"),
                         [case[1:] for case in LIMIT_BREAKS], ids=LIMIT_IDS)
def test_the_publisher_refuses_every_value_past_a_limit(
        publisher: Publisher, producer: FakeProducer, channel: str, fields: dict[str, Any],
        code: str, says: str) -> None:
    with pytest.raises(ContractError) as caught:
        publisher.publish(channel, limit_event(channel, fields))
    assert (caught.value.code, says in str(caught.value)) == (code, True), str(caught.value)
    assert producer.sent == []


@pytest.mark.parametrize(("channel", "fields", "code", "says"),
                         [case[1:] for case in LIMIT_BREAKS], ids=LIMIT_IDS)
def test_ingest_refuses_every_value_past_a_limit(ingestor: Ingestor, channel: str,
                                                 fields: dict[str, Any], code: str,
                                                 says: str) -> None:
    outcome = ingestor.process(channel, b"k", inbound(channel, limit_event(channel, fields)),
                               topic=f"touchpoints.{channel}", partition=0, offset=1,
                               timestamp_ms=None)
    assert isinstance(outcome, Rejected)
    assert (outcome.code, says in outcome.reason) == (code, True), outcome.reason


# Besides the limits: events within them, and older rules, so agreement is not only on refusals.
AGREEMENT_EXTRA: list[tuple[str, dict[str, Any]]] = [
    ("web", {"email": " Ann@Example.COM ", "phone": "138 0013 8000", "dwell_ms": 2**31 - 1}),
    ("callcenter", {"transfers": 32_767, "notes": "很" * 10_000, "phone": "+86 13800138000"}),
    ("feedback", {"type": "nps", "score": 10, "comment": "c" * 10_000}),
    ("store", {"amount": 0.0, "items": 3, "queue_wait_s": 0}),
    ("web", {"type": "teleport"}),
    ("web", {"anonymous_id": None}),
    ("web", {"occurred_at": "noon"}),
    ("store", {"store_id": None}),
    ("feedback", {"type": "nps", "score": 11}),
    ("campaign", {"medium": "fax"}),
    ("web", {"phone": "12"}),
]


def test_the_publisher_and_ingest_give_the_same_verdict_on_every_event(
        publisher: Publisher, ingestor: Ingestor) -> None:
    events = [(channel, limit_event(channel, fields)) for _, channel, fields, _, _ in LIMIT_BREAKS]
    events += [(channel, limit_event(channel, fields)) for channel, fields in AGREEMENT_EXTRA]
    published = [publisher_verdict(publisher, channel, event) for channel, event in events]
    ingested = [ingest_verdict(ingestor, channel, event) for channel, event in events]
    codes = [code for code, _ in published]
    assert codes == [code for code, _ in ingested]
    # The same sentence; a dead letter may add that it keeps only part of a huge payload.
    assert [i.startswith(p) and (i == p or i[len(p):].startswith(" (payload cut"))
            for (_, p), (_, i) in zip(published, ingested, strict=True)] == [True] * len(events)
    assert codes[:len(LIMIT_BREAKS)] == [case[3] for case in LIMIT_BREAKS]
    assert codes[len(LIMIT_BREAKS):] == [
        "accepted", "accepted", "accepted", "accepted", "unknown_type", "no_identifier",
        "bad_timestamp", "missing_field", "bad_field", "bad_field", "bad_field"]


def test_encode_event_is_what_the_publisher_sends(publisher: Publisher,
                                                  producer: FakeProducer) -> None:
    event = limit_event("web", {"customer_id": "C1"})
    publisher.publish("web", event)
    assert producer.sent == [("touchpoints.web", b"customer_id:C1",
                              encode_event("web", event, region="CN")[0])]
    with pytest.raises(ContractError) as caught:
        encode_event("web", ["not", "an", "event"], region="CN")  # type: ignore[arg-type]
    assert caught.value.code == "bad_event"
    with pytest.raises(ContractError) as caught:
        encode_event("web", limit_event("web", {"attributes": "a=b"}), region="CN")
    assert (caught.value.code, str(caught.value)) == (
        "bad_field", "attributes must map strings to strings")


# --- publish_lines: every line gets a verdict ---------------------------------------------------

def line(event_id: str, **fields: Any) -> str:
    return json.dumps({"event_id": event_id, "type": "page_view", "occurred_at": T0,
                       "anonymous_id": f"ck-{event_id}", **fields}) + "\n"


DEEP = "[" * 5_000 + "]" * 5_000 + "\n"


def test_a_5000_deep_line_is_refused_and_the_lines_around_it_published(
        publisher: Publisher, producer: FakeProducer) -> None:
    lines = [line("a"), DEEP, line("b")]
    dry = publish_lines(None, "web", lines, region="CN")
    report = publish_lines(publisher, "web", lines)
    for result in (dry, report):
        assert (result.accepted, result.rejected) == (2, 1)
        assert result.errors == [LineError(2, "too_deep", (
            "line nests arrays or objects more than 32 deep: an event is one object of "
            "fields, attributes one object inside it"))]
    assert [codec_for("web").decode(value)["event_id"] for _, _, value in producer.sent] == [
        "a", "b"]


def test_whatever_goes_wrong_with_one_line_is_that_lines_verdict(
        publisher: Publisher, producer: FakeProducer, monkeypatch: pytest.MonkeyPatch) -> None:
    real = Publisher.encode

    def encode(self: Publisher, channel: str, event: dict[str, Any]) -> tuple[bytes, bytes]:
        if event["event_id"] == "bug":
            raise RecursionError("maximum recursion depth exceeded")
        return real(self, channel, event)

    monkeypatch.setattr(Publisher, "encode", encode)
    lines: list[str | bytes] = [
        line("a"),
        line("bug"),
        b'{"event_id": "\xff"}\n',
        '{"dwell_ms": ' + "9" * 5_000 + "}\n",
        "[1, 2]\n",
        line("big", dwell_ms=2**31),
        line("b"),
    ]
    report = publish_lines(publisher, "web", lines)
    assert report.accepted == 2
    assert [(e.line, e.code) for e in report.errors] == [
        (2, "internal_error"), (3, "bad_json"), (4, "bad_json"), (5, "bad_json"),
        (6, "out_of_range")]
    assert report.errors[0].reason == "could not be checked (RecursionError): please report it"
    assert len(producer.sent) == 2


def test_kafka_refusing_the_events_ends_the_run(publisher: Publisher,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    def send_raw(*args: Any) -> None:
        raise PublishError("Kafka did not take the event: timed out")

    monkeypatch.setattr(publisher, "send_raw", send_raw)
    with pytest.raises(PublishError):
        publish_lines(publisher, "web", [line("a")])


def test_a_dry_run_needs_the_phone_region() -> None:
    with pytest.raises(ValueError, match="needs region="):
        publish_lines(None, "web", [line("a")])


def test_a_huge_line_is_cut_unread_and_refused(publisher: Publisher) -> None:
    huge = b'{"notes": "' + b"x" * 3_000_000 + b'"}\n'
    stream = io.BytesIO(line("a").encode() + huge + line("b").encode() + b"tail")
    lines = list(read_lines(stream, limit=1_000))
    assert [len(x) for x in lines] == [len(line("a")), 1_001, len(line("b")), 4]
    report = publish_lines(publisher, "web", [*lines[:3], huge])
    assert report.accepted == 2
    assert [(e.line, e.code) for e in report.errors] == [(2, "bad_json"), (4, "too_large")]
    assert report.errors[1].reason.startswith("line is 3,000,014 bytes or more, over the "
                                              "1,048,576 a JSON event line may take")
