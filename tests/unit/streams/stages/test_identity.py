"""The identity stages' table cache and link loop; the graph is tested in rules/test_identity.py."""

from __future__ import annotations

from typing import Any

import pytest

from touchpoint.streams.stages.identity import ReadThrough


def test_read_through_keeps_reads_and_writes_through() -> None:
    class Counting(dict[str, str]):
        reads = 0

        def get(self, key: str, default: object = None) -> object:  # type: ignore[override]
            Counting.reads += 1
            return super().get(key, default)

    table = Counting(a="C1")
    owner = ReadThrough(table, limit=2)
    assert owner.get("a") == owner.get("a") == "C1"
    assert Counting.reads == 1  # the second read came from the kept copy
    owner["b"] = "C2"
    assert table["b"] == "C2" and owner.get("b") == "C2" and Counting.reads == 1
    assert owner.get("missing") is None and "missing" not in owner
    owner["c"] = "C3"  # over the limit: the kept copy starts over, the table keeps all
    assert dict(table) == {"a": "C1", "b": "C2", "c": "C3"}
    assert owner.pop("a") == "C1" and owner.get("a") is None
    owner.clear_kept()
    assert owner.get("b") == "C2" and Counting.reads > 1


def test_a_worker_s_copy_of_the_graph_keeps_owners_and_aliases_by_their_text_keys() -> None:
    # Faust writes the table's text keys and values JSON-encoded to the changelog
    from faust.serializers import codecs

    from touchpoint.streams.stages.identity import replica_key, replica_value

    def record(key: str, value: object) -> tuple[bytes, bytes]:
        return codecs.dumps("json", key), codecs.dumps("json", value)

    key, value = record("o:anonymous_id:ck-1", "C1")
    assert (replica_key(key), replica_value(replica_key(key), value)) == (
        b"o:anonymous_id:ck-1", b"C1")
    key, value = record("m:C1", {"identifiers": ["customer_id:C1"], "aliases": ["u-1", "u-2"],
                                 "merges": {}})
    assert replica_value(replica_key(key), value) == b"u-1,u-2"
    key, value = record("m:C2", {"identifiers": ["customer_id:C2"], "aliases": [], "merges": {}})
    assert replica_value(replica_key(key), value) == b""


def test_waiting_forgets_an_identifier_once_its_last_event_is_linked() -> None:
    from touchpoint.streams.stages.identity import Waiting

    waiting = Waiting()
    waiting.update({"a", "b"}, 10)
    waiting.update({"b", "c"}, 20)  # b sent again: it waits for offset 20 now
    waiting.passed(10)  # offsets before 10 are linked: nothing is passed yet
    assert {i for i in "abcd" if i in waiting} == {"a", "b", "c"}
    waiting.passed(11)
    assert {i for i in "abcd" if i in waiting} == {"b", "c"}
    waiting.update({"a"}, 30)
    waiting.passed(25)
    assert {i for i in "abcd" if i in waiting} == {"a"}
    waiting.passed(31)
    assert not waiting and len(waiting) == 0


def test_waiting_never_forgets_early_when_offsets_come_out_of_order() -> None:
    from touchpoint.streams.stages.identity import Waiting

    waiting = Waiting()
    waiting.update({"a"}, 50)
    waiting.update({"b"}, -1)  # a delivery without an offset: behind a, it waits longer
    waiting.passed(40)
    assert "a" in waiting and "b" in waiting
    waiting.passed(51)
    assert not waiting

def test_the_link_stage_goes_on_after_a_batch_that_flow_control_emptied(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # A batch stream gives an empty batch when flow is suspended as the batch fills: a
    # stop (Faust suspends flow before it stops the agents) or a rebalance. The link
    # stage read the batch's last record anyway and crashed with IndexError. During a
    # stop that left the worker running: Faust's supervisor replaced the crashed actor
    # with one it never started, Faust's stop cannot cancel a batch-stream agent through
    # its channel, and Agent.on_stop waited for that actor for ever (SIGTERM ignored).
    import asyncio
    from types import SimpleNamespace

    from touchpoint.streams.stages import identity

    taken: list[list[Any]] = [[], []]  # two batches emptied by flow control
    asked = []

    async def batches() -> Any:
        for batch in taken:
            asked.append(len(batch))
            yield batch

    records = SimpleNamespace(take_acked=lambda n, within: batches())
    monkeypatch.setattr(identity, "batch_stream", lambda app, topic: records)
    delivered = []

    class _Outbox:
        def __init__(self, app: Any) -> None:
            pass

        async def delivered(self) -> int:
            delivered.append(True)
            return 0

    monkeypatch.setattr(identity, "Outbox", _Outbox)
    agents: dict[str, Any] = {}
    table: dict[str, Any] = {}
    app = SimpleNamespace(
        agent=lambda topic, name: lambda fun: agents.setdefault(name, fun),
        Table=lambda name, **options: table,
        on_partitions_revoked=SimpleNamespace(connect=lambda fun: fun))

    def topic(name: str) -> Any:
        return SimpleNamespace(get_topic_name=lambda: name)

    replica = SimpleNamespace(get=lambda key: None)
    identity.register(app, unresolved=topic("u"), links=topic("l"),
                      resolved=topic("r"), replica=replica, stats={})
    asyncio.run(agents["touchpoint.links"](None))
    assert asked == [0, 0] and delivered == [True, True]
    assert identity.LINKED_KEY not in table  # nothing forwarded, nothing noted
