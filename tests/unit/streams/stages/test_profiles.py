from __future__ import annotations

import random
from typing import Any, ClassVar

from touchpoint.streams.stages.profiles import (
    DAY_MS,
    SegmentRules,
    TierEstimator,
    apply_event,
    combine,
    new_profile,
    public_profile,
    spend_12m,
)

T0 = 1_795_000_000_000
CATEGORY = {"web": "channel", "store": "channel", "callcenter": "personnel",
            "feedback": "brand", "campaign": "communication"}


def ev(event_id: str, channel: str, kind: str, at: int, **fields: Any) -> dict[str, Any]:
    return {"event_id": event_id, "channel": channel, "type": kind, "occurred_at": at,
            "category": CATEGORY[channel], **fields}


EVENTS = [
    ev("e1", "web", "page_view", T0),
    ev("e2", "store", "purchase", T0 + DAY_MS, amount=100.0),
    ev("e3", "web", "purchase", T0 + 2 * DAY_MS, amount=50.5),
    ev("e4", "callcenter", "call_ended", T0 + 3 * DAY_MS),
    ev("e5", "feedback", "csat", T0 + 4 * DAY_MS, score=2),
    ev("e6", "feedback", "nps", T0 + 5 * DAY_MS, score=9),
    ev("e7", "store", "return", T0 + 6 * DAY_MS, amount=20.0),
    ev("e8", "feedback", "complaint", T0 + 7 * DAY_MS, case_id="K1"),
    ev("e9", "feedback", "review", T0 + 8 * DAY_MS, score=5),
]


def build(events: list[dict[str, Any]], customer: str = "C1") -> dict[str, Any]:
    profile = new_profile(customer)
    for event in events:
        apply_event(profile, event)
    return profile


def comparable(profile: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in profile.items() if k not in ("recent", "revision")}


def test_counts_spend_and_times() -> None:
    p = build(EVENTS)
    assert (p["first_seen"], p["last_seen"]) == (T0, T0 + 8 * DAY_MS)
    assert p["contacts_by_channel"] == {"web": 2, "store": 2, "callcenter": 1, "feedback": 4}
    assert (p["orders"], p["returns"], p["total_spend"]) == (2, 1, 130.5)
    assert (p["last_purchase_at"], p["first_purchase_at"]) == (T0 + 2 * DAY_MS, T0 + DAY_MS)
    assert (p["csat_n"], p["nps_sum"], p["complaints"]) == (1, 9, 1)
    pub = public_profile(p, SegmentRules(), (1e9, 1e9))
    assert pub["avg_satisfaction"] == 3.5  # (csat 2 + review 5) / 2
    assert pub["nps_avg"] == 9.0
    assert pub["last_contact"]["feedback"] == T0 + 8 * DAY_MS


def test_a_repeated_event_counts_once() -> None:
    p = build(EVENTS)
    assert apply_event(p, EVENTS[1]) is False
    assert p["orders"] == 2


def test_a_copy_long_after_the_original_still_counts_once() -> None:
    # a second group's ingest appends the whole history to the ordered log again: the
    # copy of a busy customer's first event comes after hundreds of newer ones
    views = [ev(f"v{n}", "web", "page_view", T0 + n) for n in range(300)]
    p = build(views)
    assert [apply_event(p, e) for e in views[:3]] == [False, False, False]
    other = build([ev(f"x{n}", "web", "page_view", T0 + n) for n in range(200)], "X")
    combine(p, other)
    assert apply_event(p, ev("x0", "web", "page_view", T0)) is False
    assert apply_event(p, views[0]) is False
    assert p["contacts_by_channel"] == {"web": 500}


def test_any_order_gives_the_same_profile() -> None:
    reference = comparable(build(EVENTS))
    rng = random.Random(3)
    for _ in range(50):
        assert comparable(build(rng.sample(EVENTS, len(EVENTS)))) == reference


def test_combining_two_histories_equals_one_history() -> None:
    whole = build(EVENTS)
    for cut in range(len(EVENTS) + 1):
        left, right = build(EVENTS[:cut], "C1"), build(EVENTS[cut:], "u-x")
        merged = combine(left, right)
        assert {k: v for k, v in comparable(merged).items() if k != "merged_from"} == \
            {k: v for k, v in comparable(whole).items() if k != "merged_from"}
        assert merged["merged_from"] == ["u-x"]
        assert merged["revision"] > max(left["revision"], right["revision"]) - 1


def test_lifecycle_stages() -> None:
    rules = SegmentRules()
    assert rules.lifecycle(build([ev("a", "web", "page_view", T0)])) == "prospect"
    buy = ev("b", "store", "purchase", T0, amount=10.0)
    assert rules.lifecycle(build([buy])) == "new"
    later = ev("c", "web", "page_view", T0 + 60 * DAY_MS)
    assert rules.lifecycle(build([buy, later])) == "active"
    assert rules.lifecycle(build([buy, ev("d", "web", "page_view", T0 + 100 * DAY_MS)])) == \
        "at_risk"
    assert rules.lifecycle(build([buy, ev("d", "web", "page_view", T0 + 200 * DAY_MS)])) == \
        "lapsed"
    loyal = [ev(f"p{i}", "store", "purchase", T0 + i * 20 * DAY_MS, amount=5.0)
             for i in range(6)]
    assert rules.lifecycle(build(loyal)) == "loyal"
    complaint = ev("k", "feedback", "complaint", T0 + 101 * DAY_MS)
    assert rules.lifecycle(build([*loyal, complaint])) == "at_risk"


def test_value_tiers_from_the_spend_distribution() -> None:
    rules = SegmentRules(min_population=100)
    estimator = TierEstimator(rules)
    assert estimator.cutoffs() == (rules.key_spend, rules.growth_spend)  # too few yet
    for i in range(1, 1001):
        estimator.observe(f"c{i}", float(i))
    key, growth = estimator.cutoffs()
    assert 960 * 0.9 <= key <= 960 * 1.1
    assert 800 * 0.9 <= growth <= 800 * 1.1
    old = ev("b", "store", "purchase", T0, amount=990.0)
    now = ev("n", "web", "page_view", T0 + 40 * DAY_MS)
    assert rules.tier(build([old, now]), (key, growth)) == "key"
    assert rules.tier(build([old]), (key, growth)) == "new"
    small = ev("s", "store", "purchase", T0, amount=10.0)
    assert rules.tier(build([small, now]), (key, growth)) == "standard"


def test_spend_12m_counts_the_last_twelve_months_only() -> None:
    events = [ev(f"m{i}", "store", "purchase", T0 + i * 30 * DAY_MS, amount=100.0)
              for i in range(15)]
    assert spend_12m(build(events)) == 1200.0


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
