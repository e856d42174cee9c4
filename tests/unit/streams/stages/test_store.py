from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any, cast

import pytest

from touchpoint.schemas.codec import codec_for
from touchpoint.sinks.base import Batch
from touchpoint.sinks.writer import RefusedRow
from touchpoint.streams.stages.store import (
    DEADLETTER_COLUMNS,
    EVENT_COLUMNS,
    Behind,
    deadletter_refused,
    deadletter_row,
    event_row,
    refused_record,
)
from touchpoint.streams.topics import TopicNames

T0 = 1_795_000_000_000


def normalized(**fields: object) -> dict[str, object]:
    base: dict[str, object] = {
        "event_id": "e1", "channel": "store", "type": "served", "occurred_at": T0,
        "ingested_at": T0 + 9, "customer_id": "C1", "anonymous_id": None, "email_hash": None,
        "phone_hash": None, "campaign_id": None, "category": "personnel", "stage": "shopping",
        "attributes": {"b": "2", "a": "1"}, "store_id": "S1", "queue_wait_s": 600,
        "source_topic": "touchpoints.store", "source_partition": 1, "source_offset": 7,
    }
    base.update(fields)
    return base


def test_event_row_matches_the_columns() -> None:
    row = dict(zip(EVENT_COLUMNS, event_row(normalized(), 123), strict=True))
    assert (row["event_id"], row["customer_id"], row["store_id"], row["queue_wait_s"]) == \
        ("e1", "C1", "S1", 600)
    assert (row["campaign_id"], row["amount"], row["sentiment"]) == ("", None, None)
    assert (row["attribute_keys"], row["attribute_values"]) == (["a", "b"], ["1", "2"])
    assert (row["occurred_at"], row["ingested_at"], row["_version"]) == (T0, T0 + 9, 123)


def test_deadletter_row_keeps_a_fingerprint_not_the_payload() -> None:
    payload = codec_for("web").encode({
        "event_id": "e7", "type": "teleport", "occurred_at": T0, "email": "x@y.cn",
        "attributes": {}})
    record = {"payload": payload, "key": None, "source_topic": "p.touchpoints.web",
              "source_partition": 0, "source_offset": 3, "source_timestamp": None,
              "reason_code": "unknown_type", "reason": "r", "rejected_at": T0, "worker": "w"}
    row = dict(zip(DEADLETTER_COLUMNS, deadletter_row(record, 5), strict=True))
    assert (row["event_id"], row["event_type"], row["payload_bytes"]) == \
        ("e7", "teleport", len(payload))
    assert row["payload_sha256"] == hashlib.sha256(payload).hexdigest()
    assert "x@y.cn" not in repr(row)
    garbage = dict(record, payload=b"garbage")
    row = dict(zip(DEADLETTER_COLUMNS, deadletter_row(garbage, 5), strict=True))
    assert (row["event_id"], row["event_type"]) == ("", "")


def test_batch_token_is_the_same_for_the_same_records_in_any_order() -> None:
    a = Batch.token_for("t", [("x", 0, 1), ("x", 1, 5)])
    assert a == Batch.token_for("t", [("x", 1, 5), ("x", 0, 1)])
    assert a != Batch.token_for("t", [("x", 0, 1)])
    assert a != Batch.token_for("other", [("x", 0, 1), ("x", 1, 5)])


# --- Behind: the events stored behind the stage that reads them --------------------------

class _Writer:
    """The retrying writer as Behind uses it: writes wait while ``open`` is clear."""

    def __init__(self) -> None:
        self.written: list[list[str]] = []
        self.open = asyncio.Event()
        self.open.set()

    async def write(self, batch: Batch) -> None:
        await self.open.wait()
        self.written.append([row[0] for row in batch.rows])


class _Stream:
    def __init__(self) -> None:
        self.acked: list[str] = []
        self.enable_acks = True  # Faust's default: each record acknowledged as it passes

    async def ack(self, event: Any) -> bool:
        self.acked.append(event.value)
        return True


def _rows(events: Sequence[Any]) -> list[Batch]:
    return [Batch("t", ("id",), [(e.value,) for e in events], "token")]


def _rig(batch_size: int = 3, now: float = 0.0) -> tuple[_Writer, _Stream, list[float], Behind]:
    """A writer, a stream, a settable clock, and a Behind (flush_seconds 1) over them."""
    writer, stream, clock = _Writer(), _Stream(), [now]
    stored = Behind(cast(Any, writer), _rows, batch_size=batch_size, flush_seconds=1.0,
                    clock=lambda: clock[0])
    return writer, stream, clock, stored


async def _settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


def _event(value: str) -> Any:
    return SimpleNamespace(value=value)


def test_records_are_acknowledged_only_once_their_batch_is_stored() -> None:
    async def scenario() -> None:
        writer, stream, _, stored = _rig()
        async with stored.running(cast(Any, stream)):
            assert stream.enable_acks is False  # only Behind acknowledges them
            writer.open.clear()  # the warehouse is slow
            for value in "abcd":
                await stored.add(_event(value))
            await _settle()
            assert (writer.written, stream.acked) == ([], [])  # full batch handed over
            writer.open.set()
            await _settle()
            assert writer.written == [["a", "b", "c"]]
            assert stream.acked == ["a", "b", "c"]  # "d" waits for its batch

    asyncio.run(scenario())


def test_a_partial_batch_goes_once_its_first_record_is_flush_seconds_old() -> None:
    async def scenario() -> None:
        writer, stream, clock, stored = _rig(now=10.0)
        async with stored.running(cast(Any, stream)):
            await stored.add(_event("a"))
            clock[0] = 10.9
            await stored.add(_event("b"))
            await stored.flush_due()
            await _settle()
            assert writer.written == []
            clock[0] = 11.0  # a second after "a"
            await stored.flush_due()
            await _settle()
            assert (writer.written, stream.acked) == ([["a", "b"]], ["a", "b"])

    asyncio.run(scenario())


def test_a_stage_two_batches_ahead_of_the_warehouse_waits() -> None:
    async def scenario() -> None:
        writer, stream, _, stored = _rig(batch_size=1)
        async with stored.running(cast(Any, stream)):
            writer.open.clear()  # an outage
            await stored.add(_event("a"))  # being written
            await _settle()
            await stored.add(_event("b"))  # waiting in the queue
            third = asyncio.ensure_future(stored.add(_event("c")))
            await _settle()
            assert not third.done()  # the stage is paused
            writer.open.set()
            await asyncio.wait_for(third, 1)
            await _settle()
            assert writer.written == [["a"], ["b"], ["c"]]
            assert stream.acked == ["a", "b", "c"]

    asyncio.run(scenario())


def test_records_not_stored_when_the_stage_stops_stay_unacknowledged() -> None:
    async def scenario() -> None:
        writer, stream, _, stored = _rig(batch_size=2)
        async with stored.running(cast(Any, stream)):
            writer.open.clear()
            for value in "abc":
                await stored.add(_event(value))
            await _settle()
        writer.open.set()
        await _settle()
        assert (writer.written, stream.acked) == ([], [])
        await stored.add(_event("d"))
        await stored.flush_due()  # not running: nothing handed over, nothing waits
        assert stream.acked == []

    asyncio.run(scenario())


def test_a_writer_that_fails_stops_the_stage_instead_of_leaving_it_waiting() -> None:
    async def scenario() -> None:
        writer, stream, _, stored = _rig(batch_size=1)

        async def broken(batch: Batch) -> None:
            raise KeyError("a bug in a row")

        writer.write = broken  # type: ignore[method-assign]
        async with stored.running(cast(Any, stream)):
            await stored.add(_event("a"))  # taken by the writing task, which fails
            with pytest.raises(KeyError, match="a bug in a row"):
                for value in "bcd":  # without the failure, "d" would wait forever
                    await asyncio.wait_for(stored.add(_event(value)), 1)
        assert stream.acked == []

    asyncio.run(scenario())


# --- dead letters: bounded rows, and rows the warehouse refused ------------------------------

def _deadletter(**fields: Any) -> dict[str, Any]:
    record = {"payload": b"garbage", "key": None, "source_topic": "p.touchpoints.web",
              "source_partition": 0, "source_offset": 3, "source_timestamp": None,
              "reason_code": "undecodable", "reason": "r", "rejected_at": T0, "worker": "w"}
    record.update(fields)
    return record


def test_a_deadletter_row_always_fits_its_columns() -> None:
    # what a foreign producer could put on the topic in valid Avro
    record = _deadletter(source_partition=-1, source_offset=-5, source_timestamp=2**62,
                         rejected_at=-(2**40), reason="\x00" * 300_000,
                         reason_code="c" * 10_000, worker="w" * 10_000)
    row = dict(zip(DEADLETTER_COLUMNS, deadletter_row(record, 5), strict=True))
    assert (row["source_partition"], row["source_offset"]) == (0, 0)
    assert (row["rejected_at"], row["source_timestamp"]) == (0, (2**32 - 1) * 1000)
    assert (len(row["reason"]), len(row["reason_code"]), len(row["worker"])) == (2000, 64, 256)
    big = dict(zip(DEADLETTER_COLUMNS, deadletter_row(_deadletter(source_partition=70_000), 5),
                   strict=True))
    assert big["source_partition"] == 2**16 - 1


def test_a_cut_payload_is_recorded_with_its_original_size_and_digest() -> None:
    record = _deadletter(payload=b"x" * 1000)
    row = dict(zip(DEADLETTER_COLUMNS,
                   deadletter_row(record, 5, (600_000, "ab" * 32)), strict=True))
    assert (row["payload_bytes"], row["payload_sha256"]) == (600_000, "ab" * 32)


def _refused(row: tuple[Any, ...], columns: tuple[str, ...] = EVENT_COLUMNS,
             table: str = "touchpoint_events_raw", reason: str = "Code: 53. too big"
             ) -> RefusedRow:
    return RefusedRow(table, columns, row, reason)


def test_a_refused_event_row_becomes_a_dead_letter_at_its_source_position() -> None:
    row = event_row(normalized(transfers=40_000), 123)
    record, headers = refused_record(_refused(row), worker="w1", rejected_at=T0)
    assert headers is None
    assert codec_for("deadletter").decode(codec_for("deadletter").encode(record)) == record
    assert (record["source_topic"], record["source_partition"], record["source_offset"]) == \
        ("touchpoints.store", 1, 7)
    assert (record["reason_code"], record["reason"], record["worker"], record["key"]) == (
        "warehouse_refused",
        "the warehouse refused this row of touchpoint_events_raw: Code: 53. too big", "w1",
        None)
    payload = json.loads(record["payload"])
    assert payload == dict(zip(EVENT_COLUMNS, json.loads(json.dumps(row)), strict=True))
    assert payload["transfers"] == 40_000
    stored = dict(zip(DEADLETTER_COLUMNS, deadletter_row(record, 5), strict=True))
    assert (stored["event_id"], stored["event_type"]) == ("e1", "served")


def test_a_refused_row_without_a_position_gets_the_same_stand_in_every_time() -> None:
    refused = _refused(("C1", 2**70), ("customer_id", "spend"), "customer_profiles_raw")
    record, _ = refused_record(refused, worker="w", rejected_at=T0)
    again, _ = refused_record(refused, worker="w", rejected_at=T0 + 1)
    other, _ = refused_record(_refused(("C2", 2**70), ("customer_id", "spend"),
                                       "customer_profiles_raw"), worker="w", rejected_at=T0)
    assert (record["source_topic"], record["source_partition"]) == \
        ("warehouse.customer_profiles_raw", 0)
    assert record["source_offset"] == again["source_offset"] != other["source_offset"]
    assert 0 <= record["source_offset"] < 2**63
    assert json.loads(record["payload"]) == {"customer_id": "C1", "spend": 2**70}


def test_a_huge_refused_row_is_cut_with_its_original_size() -> None:
    row = event_row(normalized(notes="\x00" * 300_000, transfers=40_000), 1)
    refused = _refused(row, reason="Code: 27. " + "\x00" * 300_000)
    record, headers = refused_record(refused, worker="w", rejected_at=T0)
    body_size = len(json.dumps(refused.values()).encode())  # NUL: six characters in JSON
    assert body_size > 1_800_000
    assert len(record["payload"]) == 256 * 1024
    assert record["reason"].endswith(f"… (payload cut to its first 262,144 of {body_size:,} bytes)")
    assert len(codec_for("deadletter").encode(record)) < 300 * 1024
    assert dict(headers or []) == {
        "touchpoint-payload-bytes": str(body_size).encode(),
        "touchpoint-payload-sha256":
            hashlib.sha256(json.dumps(refused.values()).encode()).hexdigest().encode()}


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
