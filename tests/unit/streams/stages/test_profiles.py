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
    from touchpoint.streams.rules.profile_batches import MERGED_INTO, ProfileStage

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
    from touchpoint.streams.rules.profile_batches import MERGED_INTO, ProfileStage

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


def test_an_event_passed_on_by_a_merged_away_id_waits_for_its_state() -> None:
    # A restarted worker reads A's first event again, keyed A. A is merged into B by now,
    # and A's state, which counts the event, is still on its way to B (or lost with the
    # worker, and sent again when the merge is read again): passed on first, the event
    # must not be counted on B before that state, or it counts twice.
    from touchpoint.streams.rules.profile_batches import ProfileStage

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
    from touchpoint.streams.rules.profile_batches import ProfileStage

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
    from touchpoint.streams.rules.profile_batches import ProfileStage

    table: dict[str, Any] = {}
    stage = ProfileStage(table, {})
    stage.handle("C", _encoded(ev("e1", "web", "page_view", T0), "C"), awaiting=("X",))
    (absorb,) = stage.handle("X", _merge("X", "C"))  # X never had an event of its own
    assert absorb.key == "C"
    stage.handle(absorb.key, absorb.value)
    assert table["C"]["contacts_by_channel"] == {"web": 1}
    assert table["C"]["merged_from"] == ["X"]


def test_held_events_travel_with_a_merge_and_are_released_where_they_land() -> None:
    from touchpoint.streams.rules.profile_batches import ProfileStage

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


# --- repeats: one key per counted event, carried along by every hand-over --------------------

def _packed(event: dict[str, Any], customer: str) -> bytes:
    """``_encoded``, in the packed form the stages pass events in (quicker to make)."""
    from touchpoint.schemas.codec import codec_for

    full = {"ingested_at": event["occurred_at"], "anonymous_id": customer, "stage": "site",
            "attributes": {}, "source_topic": "t", "source_partition": 0, "source_offset": 0,
            **event}
    return codec_for("event").pack(_complete(full))


def _carried(send: Any) -> tuple[set[bytes], bool]:
    """The digests a hand-over record carries, and whether it carries the state too."""
    from touchpoint.schemas.codec import codec_for

    record = codec_for("absorb").decode(send.value)
    applied = record["applied"]
    return {applied[at:at + 8] for at in range(0, len(applied), 8)}, record["state"] is not None


def test_a_copy_of_an_event_counted_under_a_merged_away_id_is_a_repeat_where_it_lands() -> None:
    from touchpoint.streams.rules.profile import event_digest
    from touchpoint.streams.rules.profile_batches import Applied, ProfileStage

    table: dict[str, Any] = {}
    applied = Applied()
    stage = ProfileStage(table, {}, applied=applied)
    a_events = [ev(f"a{i}", "web", "page_view", T0 + i) for i in range(5)]
    for event in a_events:
        stage.handle("A", _encoded(event, "A"))
    stage.handle("B", _encoded(ev("b0", "store", "purchase", T0 + 50, amount=9.0), "B"))
    assert "recent" not in table["A"]
    [handover] = stage.handle("A", _merge("A", "B"))
    assert _carried(handover) == ({event_digest(e["event_id"]) for e in a_events}, True)
    stage.handle(*handover[:2])
    assert table["B"]["contacts_by_channel"] == {"web": 5, "store": 1}
    # copies of A's events reaching B after the merge: awaiting A (replays across the
    # merge), passed on by A's marker, or straight to B however late
    copies = [_encoded(e, "B") for e in a_events]
    stage.handle("B", copies[0], awaiting=("A",))
    [(key, value, awaiting)] = stage.handle("A", copies[1])
    stage.handle(key, value, awaiting=awaiting)
    for copy in copies[2:]:
        stage.handle("B", copy)
    assert stage.stats["repeats"] == 5
    # the merge read again after a crash hands A over again: folded once, same digests
    [again] = stage.handle("A", _merge("A", "B"))
    assert again == handover
    stage.handle(*again[:2])
    assert table["B"]["contacts_by_channel"] == {"web": 5, "store": 1}
    # B merges on: A's digests travel with B's own to the customer B became
    [b_state] = stage.handle("B", _merge("B", "C"))
    assert _carried(b_state)[0] == {event_digest(e["event_id"]) for e in [*a_events, {
        "event_id": "b0"}]}
    stage.handle(*b_state[:2])
    for copy in copies:
        stage.handle("C", copy, awaiting=("A", "B"))
    assert stage.stats["repeats"] == 10
    assert table["C"]["contacts_by_channel"] == {"web": 5, "store": 1}
    assert stage.stats["applied"] == 6


def test_a_hand_over_lost_with_a_worker_is_sent_again_with_its_digests() -> None:
    # The worker wrote A's marker, then died before its hand-over was delivered. The
    # restarted one reads the merge again: the digests are read again from A's keys,
    # which stay, so the copy of an event counted under A is still a repeat at B.
    from touchpoint.streams.rules.profile_batches import MERGED_INTO, Applied, ProfileStage

    table: dict[str, Any] = {}
    applied = Applied()
    first = ProfileStage(table, {}, applied=applied)
    a0 = ev("a0", "feedback", "csat", T0, score=4)
    first.handle("A", _encoded(a0, "A"))
    first.handle("A", _merge("A", "B"))  # lost
    assert table["A"][MERGED_INTO] == "B"
    restarted = ProfileStage(table, {}, applied=applied)
    [again] = restarted.handle("A", _merge("A", "B"))
    restarted.handle(*again[:2])
    restarted.handle("B", _encoded(a0, "B"), awaiting=("A",))
    restarted.handle("B", _encoded(a0, "B"))
    assert (table["B"]["csat_sum"], table["B"]["csat_n"]) == (4, 1)
    assert restarted.stats["repeats"] == 2


def test_a_long_history_is_handed_over_in_several_records_digests_first(
        monkeypatch: Any) -> None:
    # 8 bytes an event: a customer with 200,000 events would not fit in one record of
    # Kafka's default 1 MB, so the digests are spread over records and the state goes last
    from touchpoint.streams.rules import profile_batches
    from touchpoint.streams.rules.profile_batches import Applied, ProfileStage

    monkeypatch.setattr(profile_batches, "HANDOVER_DIGESTS", 4)
    table: dict[str, Any] = {}
    stage = ProfileStage(table, {}, applied=Applied())
    a_events = [ev(f"a{i}", "web", "page_view", T0 + i) for i in range(10)]
    for event in a_events:
        stage.handle("A", _encoded(event, "A"))
    stage.handle("B", _encoded(ev("b0", "web", "page_view", T0), "B"))
    handover = stage.handle("A", _merge("A", "B"))
    carried = [_carried(send) for send in handover]
    assert [(len(digests), state) for digests, state in carried] == \
        [(4, False), (4, False), (2, True)]
    assert {s.key for s in handover} == {"B"}
    # B merged on meanwhile: what still arrives for it is passed on, in order
    [b_state] = stage.handle("B", _merge("B", "C"))
    stage.handle(*b_state[:2])
    for send in handover:
        [(key, value, _)] = stage.handle(*send[:2])
        assert key == "C"
        stage.handle(key, value)
    for event in a_events:
        stage.handle("C", _encoded(event, "C"), awaiting=("A", "B"))
    assert table["C"]["contacts_by_channel"] == {"web": 11}
    assert stage.stats["repeats"] == 10


def test_a_copy_long_after_the_original_still_counts_once() -> None:
    # a second group's ingest appends the whole history to the ordered log again: the
    # copy of a busy customer's first event comes after hundreds of newer ones
    from touchpoint.streams.rules.profile_batches import ProfileStage

    table: dict[str, Any] = {}
    stage = ProfileStage(table, {})
    views = [_packed(ev(f"v{n}", "web", "page_view", T0 + n), "C") for n in range(300)]
    for view in [*views, *views[:3]]:
        stage.handle("C", view)
    assert table["C"]["contacts_by_channel"] == {"web": 300}
    assert stage.stats["repeats"] == 3


def test_a_profile_does_not_grow_with_the_events_it_counts() -> None:
    import json

    from touchpoint.streams.rules.profile_batches import Applied, ProfileStage

    table: dict[str, Any] = {}
    applied = Applied()
    stage = ProfileStage(table, {}, applied=applied)
    sizes, handled = {}, 0
    for count in (100, 100_000):
        for n in range(handled, count):
            stage.handle("C", _packed(ev(f"e{n}", "web", "page_view", T0 + n), "C"))
        handled = count
        sizes[count] = len(json.dumps(table["C"]))
    # the same fields, a few more digits in the counters: what was read and written per
    # event when every digest was in the profile (19 bytes each) was 1.9 MB here
    assert sizes[100] < 1024
    assert sizes[100] <= sizes[100_000] <= sizes[100] + 16
    assert len(applied.keys) == 100_000
    stage.handle("C", _packed(ev("e0", "web", "page_view", T0), "C"))
    assert stage.stats["repeats"] == 1
    assert table["C"]["contacts_by_channel"] == {"web": 100_000}


def test_applied_keys_of_a_customer_are_not_those_of_a_longer_id_with_its_prefix() -> None:
    from touchpoint.streams.rules.profile import event_digest
    from touchpoint.streams.rules.profile_batches import Applied

    applied = Applied()
    mine, theirs = event_digest("e1"), event_digest("e2")
    applied.add("A", mine, 3)
    applied.add(f"A/{mine.hex()}", theirs, 3)  # a customer whose id looks like A's key
    applied.add("A", theirs, 9)
    assert applied.of("A", 0, 5) == [mine]  # and e2 only once its profile reaches 9
    assert sorted(applied.of("A", 0, 9)) == sorted([mine, theirs])
    assert applied.of(f"A/{mine.hex()}", 0, 5) == [theirs]


# --- crashes between the two tables -----------------------------------------------------------

def test_a_key_whose_profile_change_was_lost_does_not_hide_its_event() -> None:
    # The keys' changelog kept e1's key, the profiles' changelog lost e1's change: read
    # again, e1 must count (the key was stamped with an offset the profile never reached).
    import copy

    from touchpoint.streams.rules.profile_batches import Applied, ProfileStage

    table: dict[str, Any] = {}
    applied = Applied()
    stage = ProfileStage(table, {}, applied=applied)
    e0, e1 = (_encoded(ev(f"e{i}", "web", "page_view", T0 + i), "C") for i in range(2))
    stage.handle("C", e0, offset=10)
    before = copy.deepcopy(table["C"])
    stage.handle("C", e1, offset=11)
    table["C"] = before  # recovered without e1's profile change

    restarted = ProfileStage(table, {}, applied=applied)
    restarted.handle("C", e0, offset=10)  # read again from the committed offset
    restarted.handle("C", e1, offset=11)
    assert table["C"]["contacts_by_channel"] == {"web": 2}
    assert restarted.stats == {"repeats": 1, "applied": 1}
    restarted.handle("C", e1, offset=40)  # and a copy later on is a repeat
    assert table["C"]["contacts_by_channel"] == {"web": 2}


def test_a_profile_change_whose_key_was_lost_writes_the_key_again_when_read_again() -> None:
    from touchpoint.streams.rules.profile import event_digest
    from touchpoint.streams.rules.profile_batches import Applied, ProfileStage

    table: dict[str, Any] = {}
    applied = Applied()
    stage = ProfileStage(table, {}, applied=applied)
    e1 = _encoded(ev("e1", "web", "page_view", T0), "C")
    held = _encoded(ev("e2", "web", "page_view", T0 + 1), "C")
    stage.handle("C", e1, offset=11)
    stage.handle("C", held, offset=12, awaiting=("X",))
    del applied.keys[f"C/{event_digest('e1').hex()}"]  # the keys' changelog lost it

    restarted = ProfileStage(table, {}, applied=applied)
    restarted.handle("C", e1, offset=11)
    restarted.handle("C", held, offset=12, awaiting=("X",))
    assert applied.stamp("C", event_digest("e1")) == 11
    assert applied.stamp("C", event_digest("e2")) is None  # held, not counted: no key
    restarted.handle("C", e1, offset=40)  # a copy long after
    assert table["C"]["contacts_by_channel"] == {"web": 1}
    assert restarted.stats["repeats"] == 3


def test_events_released_by_a_hand_over_are_listed_until_their_record_is_committed() -> None:
    # An event held at C until X is folded in counts when X's state arrives. Its record
    # was committed long ago, so if the key written then is lost and the profile kept, the
    # hand-over read again is all there is to write it again: the profile lists it.
    from touchpoint.streams.rules.profile import event_digest
    from touchpoint.streams.rules.profile_batches import Applied, ProfileStage

    table: dict[str, Any] = {}
    applied = Applied()
    committed: dict[int, int] = {}
    stage = ProfileStage(table, {}, applied=applied, committed=committed.get)
    e2 = _encoded(ev("e2", "store", "purchase", T0, amount=7.0), "C")
    stage.handle("X", _encoded(ev("e1", "web", "page_view", T0), "X"), offset=1)
    [handover] = stage.handle("X", _merge("X", "C"), offset=2)
    stage.handle("C", e2, offset=3, awaiting=("X",))
    committed[0] = 4  # everything so far is committed
    stage.handle(*handover[:2], offset=20)  # e2 is released and counted
    digest = event_digest("e2").hex()
    assert table["C"]["released"] == {digest: 20}
    del applied.keys[f"C/{digest}"]  # lost with the worker; the profile was kept

    restarted = ProfileStage(table, {}, applied=applied, committed=committed.get)
    restarted.handle("C", e2, offset=21)  # a copy: the list knows it
    restarted.handle(*handover[:2], offset=20)  # read again: the key is written again
    assert applied.stamp("C", event_digest("e2")) == 20
    assert table["C"]["total_spend"] == 7.0
    committed[0] = 22  # committed: the key is in Kafka, the list lets it go
    restarted.handle("C", _encoded(ev("e3", "web", "page_view", T0 + 5), "C"), offset=22)
    assert "released" not in table["C"]
    restarted.handle("C", e2, offset=30)
    assert (table["C"]["total_spend"], table["C"]["contacts_by_channel"]) == \
        (7.0, {"web": 2, "store": 1})
