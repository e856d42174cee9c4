"""The per-minute stage: windows stored every few seconds, events acknowledged after."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import pytest

from touchpoint.schemas.codec import codec_for
from touchpoint.sinks.tables import TOUCHPOINT_MINUTE_RAW
from touchpoint.streams.rules import complaints
from touchpoint.streams.rules.minute_rows import MinuteStage
from touchpoint.streams.rules.normalize import Accepted, Ingestor
from touchpoint.streams.stages import minutes
from touchpoint.streams.stages.minutes import Unstored


def test_windows_are_stored_every_few_seconds_and_only_with_something_new() -> None:
    now = [100.0]
    unstored = Unstored(every=5.0, clock=lambda: now[0])
    assert not unstored.due()  # nothing counted
    unstored.add(0, ["e1", "e2"])  # type: ignore[list-item]  # events stand in as tokens
    now[0] += 4.9
    assert not unstored.due()
    now[0] += 0.2
    assert unstored.due()
    partitions, events = unstored.take()
    assert (partitions, events) == ({0: "e2"}, ["e1", "e2"])
    assert not unstored.due()  # taken: nothing new
    unstored.add(1, ["e3"])  # type: ignore[list-item]
    assert not unstored.due()  # stored just now
    now[0] += 5.0
    assert unstored.due()
    unstored.drop()  # revoked: the next owner reads them again
    assert not unstored.due()
    assert unstored.take() == ({}, [])


def test_a_batch_of_several_partitions_is_one_insert_a_table(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # An insert costs the warehouse milliseconds however few its rows: a batch's rows of
    # every partition go together, and they are the rows each partition alone gives.
    t0 = 1_795_000_000_000
    ingestor = Ingestor(pii_salt="salt", phone_region="CN", worker="w1",
                        clock=lambda: t0 / 1000 + 60)
    rules = complaints.Rules.load(None)

    def normalized(n: int) -> dict[str, Any]:
        value = codec_for("web").encode({"attributes": {}, "event_id": f"e{n}",
                                         "type": "page_view", "occurred_at": t0 + n,
                                         "anonymous_id": f"ck{n % 4}"})
        outcome = ingestor.process("web", None, value, topic="touchpoints.web", partition=0,
                                   offset=n, timestamp_ms=t0)
        assert isinstance(outcome, Accepted)
        return outcome.event

    events = [SimpleNamespace(value=normalized(n), message=SimpleNamespace(partition=n % 3))
              for n in range(12)]
    writes: list[Any] = []

    class Writer:
        async def write(self, batch: Any) -> None:
            writes.append(batch)

    async def batches() -> Any:
        yield events

    agents: dict[str, Any] = {}
    table = SimpleNamespace(get_in=lambda partition, key: None,
                            items_in=lambda partition, prefix: [])
    app = SimpleNamespace(
        Table=lambda *args, **options: table,
        agent=lambda topic, name: lambda fun: agents.setdefault(name, fun),
        timer=lambda interval, name: lambda fun: fun,
        on_partitions_revoked=SimpleNamespace(connect=lambda fun: fun))
    monkeypatch.setattr(minutes, "batch_stream",
                        lambda app, topic: SimpleNamespace(take=lambda n, within: batches()))
    monkeypatch.setattr(minutes, "only_current", lambda app, events: events)
    monkeypatch.setattr(minutes, "is_current", lambda app, message: True)
    monkeypatch.setattr(minutes, "decoded", lambda event, decode: event.value)
    minutes.register(app, unresolved=None, writer=Writer(), rules=rules,  # type: ignore[arg-type]
                     grace=timedelta(minutes=2), partitions=3, batch_size=100,
                     flush_seconds=1.0, stats={})
    asyncio.run(agents["touchpoint.minutes"](None))

    [batch] = writes  # no late rows: one insert, of the minute rows
    assert batch.table == TOUCHPOINT_MINUTE_RAW
    alone: list[tuple[Any, ...]] = []
    for partition in range(3):
        stage = MinuteStage(rules, grace=timedelta(minutes=2), part=partition, stats={})
        alone += stage.add(e.value for e in events if e.message.partition == partition)[0]
    part = batch.columns.index("part")
    assert sorted({row[part] for row in batch.rows}) == [0, 1, 2]
    assert sorted(batch.rows) == sorted(alone)  # a row's version is its count: the same
