"""The ingest agent: every record out, as an event or a dead letter; no record stops it."""

from __future__ import annotations

from typing import Any

import pytest

from touchpoint.schemas.codec import codec_for
from touchpoint.streams.rules.normalize import Ingestor, IngestStats

T0 = 1_795_000_000_000
NOW = 1_795_000_100.5


@pytest.fixture
def ingestor() -> Ingestor:
    return Ingestor(pii_salt="salt", phone_region="CN", worker="w1", clock=lambda: NOW)


def encoded(channel: str, **fields: Any) -> bytes:
    return codec_for(channel).encode({"attributes": {}, **fields})


class _Outbox:
    """Outbox as ingest uses it; Kafka refuses a topic's batch holding a record ``refuse``s."""

    def __init__(self, refuse: Any) -> None:
        self.refuse = refuse
        self.pending: list[tuple[str, bytes | None, bytes, Any, Any]] = []
        self.kafka: list[tuple[str, bytes | None, bytes, Any]] = []  # what Kafka has

    async def send(self, topic: str, key: bytes | None, value: bytes, headers: Any = None, *,
                   tag: Any = None) -> None:
        self.pending.append((topic, key, value, headers, tag))

    async def delivered(self) -> int:
        failed = await self.undelivered()
        if failed:
            raise failed[0][1]
        return len(self.kafka)

    async def undelivered(self) -> list[tuple[Any, BaseException]]:
        pending, self.pending = self.pending, []
        failed: list[tuple[Any, BaseException]] = []
        for topic in dict.fromkeys(p[0] for p in pending):
            batch = [p for p in pending if p[0] == topic]
            error = next((e for p in batch if (e := self.refuse(p)) is not None), None)
            if error is None:
                self.kafka += [p[:4] for p in batch]
            else:
                failed += [(p[4], error) for p in batch]
        return failed


def _run_ingest(monkeypatch: pytest.MonkeyPatch, ingestor: Ingestor, values: list[bytes],
                refuse: Any = lambda record: None) -> tuple[_Outbox, Any]:
    """Run the ingest agent over one batch of web records; its outbox and stats."""
    import asyncio
    from types import SimpleNamespace

    from touchpoint.streams.stages import ingest
    from touchpoint.streams.topics import TopicNames

    outbox = _Outbox(refuse)
    monkeypatch.setattr(ingest, "Outbox", lambda app: outbox)
    agents: dict[str, Any] = {}

    def agent(topic: Any, name: str) -> Any:
        return lambda fun: agents.setdefault(name, fun)

    events = [SimpleNamespace(key=b"k", value=value, message=SimpleNamespace(
        topic="touchpoints.web", partition=2, offset=offset, timestamp=(T0 + 5) / 1000,
        generation_id=None)) for offset, value in enumerate(values)]

    async def batches() -> Any:
        yield events

    records = SimpleNamespace(take_acked=lambda n, within: batches())
    monkeypatch.setattr(ingest, "batch_stream", lambda app, topic: records)
    app = SimpleNamespace(topic=lambda *names, **options: names, agent=agent)
    stats = IngestStats()
    ingest.register(app, TopicNames(), ingestor, stats)  # type: ignore[arg-type]
    asyncio.run(agents["touchpoint.ingest"](None))
    return outbox, stats


def _web(event_id: str) -> bytes:
    return encoded("web", event_id=event_id, type="page_view", occurred_at=T0, anonymous_id="ck")


def _dead_letters(outbox: _Outbox) -> list[dict[str, Any]]:
    return [codec_for("deadletter").decode(value) for topic, _, value, _ in outbox.kafka
            if topic == "touchpoints.deadletter"]


def _normalized(outbox: _Outbox) -> list[str]:
    return [codec_for("event").decode(value)["event_id"] for topic, _, value, _ in outbox.kafka
            if topic == "touchpoints.unresolved"]


@pytest.mark.python_source
def test_a_record_whose_handling_raises_is_dead_lettered_and_the_next_goes_on(
        monkeypatch: pytest.MonkeyPatch, ingestor: Ingestor) -> None:
    process = ingestor.process

    def flaky(channel: str, key: bytes | None, value: bytes | None, **where: Any) -> Any:
        if where["offset"] == 1:
            raise RuntimeError("bug")
        return process(channel, key, value, **where)

    monkeypatch.setattr(ingestor, "process", flaky)
    outbox, stats = _run_ingest(monkeypatch, ingestor, [_web("a"), _web("b"), _web("c")])
    assert _normalized(outbox) == ["a", "c"]
    [letter] = _dead_letters(outbox)
    assert (letter["source_offset"], letter["reason_code"], letter["reason"],
            letter["payload"]) == (1, "internal_error",
                                   "ingest failed unexpectedly: RuntimeError('bug')", _web("b"))
    assert dict(stats.rejected) == {"internal_error": 1}


def test_an_output_kafka_refuses_becomes_a_dead_letter_and_the_rest_is_sent_once(
        monkeypatch: pytest.MonkeyPatch, ingestor: Ingestor) -> None:
    from aiokafka.errors import MessageSizeTooLargeError

    def refuse(record: Any) -> BaseException | None:
        topic, _, value, _, _ = record
        if topic == "touchpoints.unresolved" and b"huge" in value:
            return MessageSizeTooLargeError()
        return None

    outbox, _ = _run_ingest(monkeypatch, ingestor, [_web("a"), _web("huge"), _web("c")],
                            refuse)
    assert _normalized(outbox) == ["a", "c"]  # each once: refused batches were not stored
    [letter] = _dead_letters(outbox)
    assert (letter["source_offset"], letter["reason_code"], letter["payload"]) == \
        (1, "internal_error", _web("huge"))
    assert "MessageSizeTooLargeError" in letter["reason"]


def test_a_dead_letter_kafka_refuses_too_goes_without_its_payload(
        monkeypatch: pytest.MonkeyPatch, ingestor: Ingestor) -> None:
    from aiokafka.errors import MessageSizeTooLargeError

    def refuse(record: Any) -> BaseException | None:
        value = record[2]
        if b"huge" in value:  # the normalized event, and the dead letter with its payload
            return MessageSizeTooLargeError()
        return None

    outbox, stats = _run_ingest(monkeypatch, ingestor, [_web("huge"), _web("b")], refuse)
    assert _normalized(outbox) == ["b"]
    [letter] = _dead_letters(outbox)
    assert (letter["source_offset"], letter["reason_code"], letter["payload"],
            letter["key"]) == (0, "internal_error", b"", None)
    assert letter["reason"] == ("neither its output nor its dead letter could be sent "
                                "(MessageSizeTooLargeError): find the record at its source "
                                "position")
    assert stats.rejected["internal_error"] == 2  # the one refused, then the one sent


def test_kafka_failing_stops_the_batch_unacknowledged_not_dead_lettered(
        monkeypatch: pytest.MonkeyPatch, ingestor: Ingestor) -> None:
    from aiokafka.errors import KafkaConnectionError

    with pytest.raises(KafkaConnectionError):
        _run_ingest(monkeypatch, ingestor, [_web("a"), _web("b")],
                    lambda record: KafkaConnectionError())
