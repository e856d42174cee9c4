"""Replay: corrected dead letters go back once; the log settles a run stopped half-way."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pytest

from touchpoint.exceptions import PublishError
from touchpoint.replay import REPLAY_HEADER, ReplayLog, replay
from touchpoint.schemas.codec import codec_for
from touchpoint.settings import load_settings

from .test_deadletters import TOPICS, dead_letter, store_visit


@dataclass
class Sent:
    topic: str
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]
    partition: int
    offset: int


class FakeFuture:
    def __init__(self, sent: Sent) -> None:
        self.sent = sent

    def get(self, timeout: float | None = None) -> Sent:
        return self.sent


class Broker:
    """Stands in for kafka-python's producer: offsets per topic, one partition each."""

    def __init__(self, fail_on: str | None = None) -> None:
        self.records: list[Sent] = []
        self.fail_on = fail_on  # a log state whose write "crashes" the run

    def send(self, topic: str, *, key: bytes | None, value: bytes,
             headers: list[tuple[str, bytes]] | None = None) -> FakeFuture:
        if self.fail_on is not None and self.fail_on.encode() in value:
            raise PublishError("the process died here")
        offset = sum(1 for r in self.records if r.topic == topic)
        sent = Sent(topic, key, value, headers or [], 0, offset)
        self.records.append(sent)
        return FakeFuture(sent)

    def flush(self, timeout: float | None = None) -> None:
        pass

    def on(self, topic: str) -> list[Sent]:
        return [r for r in self.records if r.topic == topic]

    def end_offsets(self, topic: str) -> dict[int, int]:
        return {0: len(self.on(topic))}

    def find_sent(self, topic: str, start: Mapping[int, int]) -> dict[str, str]:
        return {value.decode(): f"{topic}/0/{r.offset}" for r in self.on(topic)
                if r.offset >= start.get(0, 0) for name, value in r.headers
                if name == REPLAY_HEADER}

    def log_entries(self) -> dict[str, dict[str, Any]]:
        """The replay log as a new run reads it: the latest entry per key."""
        return {r.key.decode(): json.loads(r.value) for r in self.on(TOPICS.replays)
                if r.key is not None}


@pytest.fixture
def settings(tmp_path: Any) -> Any:
    return load_settings({"TOUCHPOINT_HOME": str(tmp_path), "TOUCHPOINT_TOPIC_PREFIX": "p.",
                          "TOUCHPOINT_PII_SALT": "s" * 16})


def run(settings: Any, broker: Broker, letters: list[Any], **options: Any) -> Any:
    log = ReplayLog(TOPICS.replays, broker, broker.log_entries())
    return replay(settings, letters, producer=broker, log=log, end_offsets=broker.end_offsets,
                  find_sent=broker.find_sent, **options)


def test_a_corrected_dead_letter_is_replayed_once(settings: Any) -> None:
    letter = dead_letter("store", store_visit())  # no store_id
    broker = Broker()
    report = run(settings, broker, [letter], sets=[("store_id", "SH-01")])
    assert report.replayed == {"p.touchpoints.store": 1} and report.skipped == 0
    [sent] = broker.on("p.touchpoints.store")
    assert sent.headers == [(REPLAY_HEADER, b"p.touchpoints.store/2/7")]
    assert sent.key == b"customer_id:C1"
    record = codec_for("store").decode(sent.value, packed=False)
    assert (record["event_id"], record["store_id"]) == ("v1", "SH-01")
    assert report.landed == {letter.id: "p.touchpoints.store/0/0"}
    assert broker.log_entries()[letter.id]["state"] == "replayed"
    # again, with the same or another correction: nothing goes out
    again = run(settings, broker, [letter], sets=[("store_id", "SH-02")])
    assert (sum(again.replayed.values()), again.skipped, again.refused) == (0, 1, [])
    assert len(broker.on("p.touchpoints.store")) == 1


def test_what_the_contract_still_refuses_is_counted_with_why_and_not_sent(settings: Any
                                                                          ) -> None:
    letters = [dead_letter("store", store_visit(event_id=f"v{i}"), offset=i) for i in range(3)]
    broker = Broker()
    report = run(settings, broker, letters)  # no correction: still no store_id
    assert report.reasons == {"missing_field": 3}
    assert [r.id for r in report.refused] == [f"p.touchpoints.store/2/{i}" for i in range(3)]
    assert broker.records == []
    # a correction that breaks something else is refused for that
    worse = run(settings, broker, letters[:1], sets=[("store_id", "SH-01")],
                patch={"customer_id": None})
    assert worse.reasons == {"no_identifier": 1} and broker.records == []


def test_a_dry_run_counts_and_sends_nothing(settings: Any) -> None:
    broker = Broker()
    report = run(settings, broker, [dead_letter("store", store_visit())],
                 sets=[("store_id", "SH-01")], dry_run=True)
    assert report.replayed == {"p.touchpoints.store": 1}
    assert broker.records == []


def test_a_dead_letter_selected_twice_in_one_run_goes_once(settings: Any) -> None:
    letter = dead_letter("store", store_visit())
    broker = Broker()
    report = run(settings, broker, [letter, letter], sets=[("store_id", "SH-01")])
    assert (report.replayed["p.touchpoints.store"], report.skipped) == (1, 1)
    assert len(broker.on("p.touchpoints.store")) == 1


def test_a_crash_between_send_and_log_is_settled_from_the_topic(settings: Any) -> None:
    sent_one = dead_letter("store", store_visit(event_id="a"), offset=1)
    never_sent = dead_letter("store", store_visit(event_id="b"), offset=2)
    broker = Broker(fail_on='"state": "replayed"')
    with pytest.raises(PublishError):  # died after sending, before logging "replayed"
        run(settings, broker, [sent_one], sets=[("store_id", "SH-01")])
    assert broker.log_entries()[sent_one.id]["state"] == "sending"
    assert len(broker.on("p.touchpoints.store")) == 1
    # an intent whose record never went out (it died before sending)
    broker.send(TOPICS.replays, key=never_sent.id.encode(), value=json.dumps(
        {"state": "sending", "topic": "p.touchpoints.store", "from": {"0": 1},
         "event_id": "b"}).encode())
    broker.fail_on = None
    report = run(settings, broker, [sent_one, never_sent], sets=[("store_id", "SH-01")])
    assert (report.skipped, report.replayed["p.touchpoints.store"]) == (1, 1)
    assert [r.headers[0][1] for r in broker.on("p.touchpoints.store")] == [
        sent_one.id.encode(), never_sent.id.encode()]
    entries = broker.log_entries()
    assert entries[sent_one.id] == {"state": "replayed", "topic": "p.touchpoints.store",
                                    "partition": 0, "offset": 0, "event_id": "a",
                                    "settled": True}
    assert entries[never_sent.id]["state"] == "replayed"
    assert entries[never_sent.id]["offset"] == 1


def test_a_replay_log_entry_not_ours_stops_the_replay(settings: Any, monkeypatch: Any) -> None:
    from types import SimpleNamespace

    import touchpoint.replay as module
    from touchpoint.exceptions import ServiceError

    def records(*entries: bytes) -> Any:
        return lambda settings, topic: iter(
            SimpleNamespace(key=b"t/0/1", value=value, partition=0, offset=offset)
            for offset, value in enumerate(entries))

    monkeypatch.setattr(module, "read_topic", records(b'{"state": "sending"}',
                                                      b'{"state": "replayed"}'))
    assert ReplayLog.load(settings, producer=None).state("t/0/1") == "replayed"
    for foreign in (b"not json", b'["state"]', b'{"state": "done"}'):
        monkeypatch.setattr(module, "read_topic", records(foreign))
        with pytest.raises(ServiceError, match=r"record 0/0 of p.touchpoints.deadletter-"
                                               r"replays is not a replay log entry"):
            ReplayLog.load(settings, producer=None)
