from __future__ import annotations

from typing import Any, ClassVar

from ..rules.test_profile import T0, ev

# --- the stage's ordering rules, without Kafka ------------------------------------------------

def _encoded(event: dict[str, Any], customer: str) -> bytes:
    from touchpoint.schemas.codec import codec_for

    full = {"ingested_at": event["occurred_at"], "customer_id": None, "anonymous_id": customer,
            "email_hash": None, "phone_hash": None, "campaign_id": None, "stage": "site",
            "attributes": {}, "source_topic": "t", "source_partition": 0, "source_offset": 0,
            **event}
    return codec_for("event").encode(_complete(full))


def _complete(event: dict[str, Any]) -> dict[str, Any]:
    from touchpoint.schemas.registry import default_registry

    names = [f["name"] for f in default_registry().latest("event").schema["fields"]]
    return {name: event.get(name) for name in names} | {"attributes": event["attributes"]}


def _merge(merged: str, into: str) -> bytes:
    from touchpoint.schemas.codec import codec_for

    return codec_for("merge").encode({
        "merged_id": merged, "into_id": into, "merged_at": T0, "event_id": "link",
        "identifiers": [], "aliases": [], "recorded_at": T0})


def test_a_merge_chain_loses_nothing_whatever_arrives_first() -> None:
    from touchpoint.streams.stages.profiles import MERGED_INTO, ProfileStage

    a_events = [ev(f"a{i}", "web", "page_view", T0 + i) for i in range(5)]
    b_events = [ev(f"b{i}", "web", "page_view", T0 + 100 + i) for i in range(3)]
    for absorb_first in (True, False):
        table: dict[str, Any] = {}
        stage = ProfileStage(table, {})
        for event in a_events:
            assert stage.handle("A", _encoded(event, "A")) == []
        for event in b_events:
            stage.handle("B", _encoded(event, "B"))
        (absorb_a,) = stage.handle("A", _merge("A", "B"))  # A's state, on its way to B
        assert absorb_a[0] == "B" and table["A"][MERGED_INTO] == "B"
        pending = []
        if absorb_first:
            pending += stage.handle(absorb_a.key, absorb_a.value)
            pending += stage.handle("B", _merge("B", "C"))
        else:  # "B merged into C" overtakes A's state on B's partition
            pending += stage.handle("B", _merge("B", "C"))
            forwarded = stage.handle(absorb_a.key, absorb_a.value)
            assert [s.key for s in forwarded] == ["C"]  # passed on, not left on B
            pending += forwarded
        for key, value, _ in pending:
            assert key == "C"
            stage.handle(key, value)
        assert table["C"]["contacts_by_channel"] == {"web": 8}, absorb_first
        assert table["C"]["first_seen"] == T0
        assert table["B"][MERGED_INTO] == "C"
        # a late repeat keyed by a merged-away id travels the chain and counts once
        repeat = _encoded(a_events[0], "A")
        assert stage.handle("A", repeat) == [("B", repeat, ("A",))]
        assert stage.handle("B", repeat, awaiting=("A",)) == [("C", repeat, ("A", "B"))]
        repeats = stage.stats.get("repeats", 0)
        assert stage.handle("C", repeat, awaiting=("A", "B")) == []
        assert stage.stats["repeats"] == repeats + 1
        assert table["C"]["contacts_by_channel"] == {"web": 8}


def test_a_merge_read_again_after_a_crash_hands_the_state_over_again() -> None:
    # The worker wrote A's marker to its table, then died before the hand-over it had sent
    # was delivered. Restarted, it reads the merge again (never committed) and finds the
    # marker: B must still get A's history, and count it once however often it comes.
    from touchpoint.streams.stages.profiles import MERGED_INTO, ProfileStage

    class Table(dict[str, Any]):
        writes: ClassVar[list[str]] = []

        def __setitem__(self, key: str, value: Any) -> None:
            self.writes.append(key)
            super().__setitem__(key, value)

    table = Table()
    stage = ProfileStage(table, {})
    for i in range(3):
        stage.handle("A", _encoded(ev(f"a{i}", "web", "page_view", T0 + i), "A"))
    stage.handle("B", _encoded(ev("b0", "store", "purchase", T0 + 100, amount=5.0), "B"))
    merge = _merge("A", "B")
    [lost] = stage.handle("A", merge)
    assert table["A"][MERGED_INTO] == "B"

    table.writes.clear()
    [again] = stage.handle("A", merge)  # read again after the restart
    assert again == lost
    assert table.writes == ["A"], "the marker is written again, for the changelog"
    assert stage.stats["merged_again"] == 1
    for key, value, _ in (again, lost):  # the lost one may turn up after all
        stage.handle(key, value)
    assert table["B"]["contacts_by_channel"] == {"web": 3, "store": 1}
    assert table["B"]["merged_from"] == ["A"]
    # a merge naming another customer is not this id's hand-over
    assert stage.handle("A", _merge("A", "Z")) == []
    # nor does a marker written before markers kept the state send anything
    table["O"] = {MERGED_INTO: "B"}
    assert stage.handle("O", _merge("O", "B")) == []


def test_an_event_passed_on_by_a_merged_away_id_waits_for_its_state() -> None:
    # A restarted worker reads A's first event again, keyed A. A is merged into B by now,
    # and A's state, which counts the event, is still on its way to B (or lost with the
    # worker, and sent again when the merge is read again): passed on first, the event
    # must not be counted on B before that state, or it counts twice.
    from touchpoint.streams.stages.profiles import ProfileStage

    table: dict[str, Any] = {}
    stage = ProfileStage(table, {})
    a0 = _encoded(ev("a0", "feedback", "csat", T0, score=3), "A")
    stage.handle("A", a0)
    stage.handle("B", _encoded(ev("b0", "campaign", "sent", T0 + 1), "B"))
    [handover] = stage.handle("A", _merge("A", "B"))
    [passed] = stage.handle("A", a0)
    assert passed == ("B", a0, ("A",))
    stage.handle(*passed[:2], awaiting=passed.awaiting)  # overtakes the hand-over: held
    assert table["B"]["contacts_by_channel"] == {"campaign": 1}
    stage.handle(handover.key, handover.value)
    assert table["B"]["contacts_by_channel"] == {"campaign": 1, "feedback": 1}
    assert (table["B"]["csat_sum"], table["B"]["csat_n"]) == (3, 1)
    assert "held" not in table["B"]


def test_a_replayed_event_that_overtakes_its_merged_state_counts_once() -> None:
    # The two-worker race: e1 was counted on anonymous X; X merged into C; after a
    # rebalance the identity stage replays e1, now resolved to C, and it reaches C before
    # X's state does.
    from touchpoint.streams.stages.profiles import ProfileStage

    e1 = ev("e1", "web", "page_view", T0)
    e2 = ev("e2", "store", "purchase", T0 + 60_000, amount=30.0)  # new, after the merge
    table: dict[str, Any] = {}
    stage = ProfileStage(table, {})
    stage.handle("X", _encoded(e1, "X"))
    (absorb,) = stage.handle("X", _merge("X", "C"))
    assert stage.handle("C", _encoded(e1, "C"), awaiting=("X",)) == []
    assert stage.handle("C", _encoded(e2, "C"), awaiting=("X",)) == []
    assert table["C"]["contacts_by_channel"] == {}  # both held until X is folded in
    assert stage.stats["held"] == 2
    stage.handle(absorb.key, absorb.value)
    assert table["C"]["contacts_by_channel"] == {"web": 1, "store": 1}
    assert table["C"]["total_spend"] == 30.0
    assert "held" not in table["C"]
    assert (stage.stats["released"], stage.stats["repeats"]) == (2, 1)


def test_a_merge_of_a_customer_without_a_profile_still_releases_held_events() -> None:
    from touchpoint.streams.stages.profiles import ProfileStage

    table: dict[str, Any] = {}
    stage = ProfileStage(table, {})
    stage.handle("C", _encoded(ev("e1", "web", "page_view", T0), "C"), awaiting=("X",))
    (absorb,) = stage.handle("X", _merge("X", "C"))  # X never had an event of its own
    assert absorb.key == "C"
    stage.handle(absorb.key, absorb.value)
    assert table["C"]["contacts_by_channel"] == {"web": 1}
    assert table["C"]["merged_from"] == ["X"]


def test_held_events_travel_with_a_merge_and_are_released_where_they_land() -> None:
    from touchpoint.streams.stages.profiles import ProfileStage

    table: dict[str, Any] = {}
    stage = ProfileStage(table, {})
    stage.handle("X", _encoded(ev("e1", "web", "page_view", T0), "X"))
    (x_state,) = stage.handle("X", _merge("X", "C"))
    stage.handle("C", _encoded(ev("e1", "web", "page_view", T0), "C"), awaiting=("X",))
    (c_state,) = stage.handle("C", _merge("C", "D"))  # C (still holding e1) joins D
    stage.handle(c_state.key, c_state.value)
    assert table["D"]["contacts_by_channel"] == {}
    forwarded = stage.handle(x_state.key, x_state.value)  # X's state reaches C: passed on
    assert [(s.key, s.awaiting) for s in forwarded] == [("D", ())]
    stage.handle(forwarded[0].key, forwarded[0].value)
    assert table["D"]["contacts_by_channel"] == {"web": 1}
    # an event still arriving for C, awaiting X, is passed on with what it awaits, and C
    late = _encoded(ev("e2", "web", "page_view", T0 + 5), "C")
    assert stage.handle("C", late, awaiting=("X",)) == [("D", late, ("X", "C"))]
    assert stage.handle("D", late, awaiting=("X", "C")) == []
    assert table["D"]["contacts_by_channel"] == {"web": 2}
