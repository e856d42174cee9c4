from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest

from touchpoint.schemas.codec import codec_for
from touchpoint.sinks.base import Batch
from touchpoint.sinks.writer import RefusedRow
from touchpoint.streams.rules.rows import EVENT_COLUMNS, event_row
from touchpoint.streams.stages.store import deadletter_refused
from touchpoint.streams.topics import TopicNames

from ..rules.test_rows import T0, normalized


def test_batch_token_is_the_same_for_the_same_records_in_any_order() -> None:
    a = Batch.token_for("t", [("x", 0, 1), ("x", 1, 5)])
    assert a == Batch.token_for("t", [("x", 1, 5), ("x", 0, 1)])
    assert a != Batch.token_for("t", [("x", 0, 1)])
    assert a != Batch.token_for("other", [("x", 0, 1), ("x", 1, 5)])


def _refused(row: tuple[Any, ...], columns: tuple[str, ...] = EVENT_COLUMNS,
             table: str = "touchpoint_events_raw", reason: str = "Code: 53. too big"
             ) -> RefusedRow:
    return RefusedRow(table, columns, row, reason)


def test_the_hook_sends_every_refused_row_and_returns_once_delivered(
        monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[tuple[str, bytes | None, bytes, Any]] = []
    delivered: list[int] = []

    class Outbox:
        def __init__(self, app: Any) -> None:
            self.pending = 0

        async def send(self, topic: str, key: bytes | None, value: bytes,
                       headers: Any = None) -> None:
            sent.append((topic, key, value, headers))
            self.pending += 1

        async def delivered(self) -> int:
            delivered.append(self.pending)
            return self.pending

    monkeypatch.setattr("touchpoint.streams.stages.store.Outbox", Outbox)
    noted: list[str] = []
    hook = deadletter_refused(cast(Any, None), TopicNames("p."), worker="w1",
                              noted=lambda r: noted.append(r["source_topic"]),
                              clock=lambda: T0 / 1000)
    rows = [_refused(event_row(normalized(transfers=40_000), 1)),
            _refused(("C1",), ("customer_id",), "customer_profiles_raw")]
    asyncio.run(hook(rows))
    assert [(topic, key) for topic, key, _, _ in sent] == [("p.touchpoints.deadletter", None)] * 2
    assert delivered == [2]
    decoded = [codec_for("deadletter").decode(value) for _, _, value, _ in sent]
    assert [(d["source_topic"], d["rejected_at"]) for d in decoded] == [
        ("touchpoints.store", T0), ("warehouse.customer_profiles_raw", T0)]
    assert noted == ["touchpoints.store", "warehouse.customer_profiles_raw"]


def test_resolved_events_decoded_by_the_profiles_stage_give_the_rows_of_their_bytes(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    from touchpoint.streams.stages.store import resolved_batches

    monkeypatch.setattr("touchpoint.streams.stages.store.time.time_ns", lambda: 7_000_000)
    codec = codec_for("event")
    values = [codec.pack(normalized(event_id=f"e{i}", occurred_at=T0 + i)) for i in range(3)]

    def records(decoded: bool) -> list[Any]:
        return [SimpleNamespace(key=b"C1", value=value,
                                message=SimpleNamespace(topic="r", partition=0, offset=n),
                                decoded=codec.decode(value) if decoded else None)
                for n, value in enumerate(values)]

    [raw] = resolved_batches(records(decoded=False))
    assert [row[0] for row in raw.rows] == ["e0", "e1", "e2"]
    assert resolved_batches(records(decoded=True)) == [raw]
    # the decoded event is what is stored (the stage does not decode it again)
    shared = records(decoded=True)
    shared[1].decoded = {**shared[1].decoded, "event_id": "from-decoded"}
    [batch] = resolved_batches(shared)
    assert [row[0] for row in batch.rows] == ["e0", "from-decoded", "e2"]
