from __future__ import annotations

import random
from typing import Any

from touchpoint.streams.rules.profile import (
    PROFILE_COLUMNS,
    apply_event,
    combine,
    detailed_profile,
    event_digest,
    merged_away_row,
    new_profile,
    profile_row,
    public_profile,
)
from touchpoint.streams.rules.segments import DAY_MS, SegmentRules

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
    return {k: v for k, v in profile.items() if k != "revision"}


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


def test_an_event_is_known_by_an_8_byte_digest_of_its_id() -> None:
    # which events a profile counts is kept by the profiles stage, one key per event
    # (tests/unit/streams/stages/test_profiles.py): the profile has no trace of them
    assert event_digest("e1") == event_digest("e1") != event_digest("e2")
    assert len(event_digest("e1")) == 8
    assert build(EVENTS[:1]).keys() == new_profile("C1").keys()


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


def test_a_profile_row_has_a_value_per_column() -> None:
    pub = public_profile(build(EVENTS), SegmentRules(), (1e9, 1e9))
    row = profile_row(pub, map_type=True)
    assert len(row) == len(PROFILE_COLUMNS)
    by_column = dict(zip(PROFILE_COLUMNS, row, strict=True))
    assert (by_column["customer_id"], by_column["total_spend"]) == ("C1", 130.5)
    assert (by_column["contacts_web"], by_column["contacts_feedback"]) == (2, 4)
    assert by_column["contacts_by_channel"] == {"web": 2, "store": 2, "callcenter": 1,
                                                "feedback": 4}
    assert by_column["merged_into"] == ""
    as_json = dict(zip(PROFILE_COLUMNS, profile_row(pub, map_type=False), strict=True))
    assert as_json["contacts_by_channel"] == \
        '{"callcenter": 1, "feedback": 4, "store": 2, "web": 2}'


def test_a_merged_away_row_is_empty_and_outranks_every_revision() -> None:
    row = dict(zip(PROFILE_COLUMNS, merged_away_row("u-x", "C1", SegmentRules(), (1e9, 1e9),
                                                    map_type=True), strict=True))
    assert (row["customer_id"], row["merged_into"], row["revision"]) == ("u-x", "C1", 2**62)
    assert (row["orders"], row["contacts_by_channel"], row["lifecycle_stage"]) == \
        (0, {}, "prospect")


def test_the_detailed_profile_adds_merges_scores_and_the_signal() -> None:
    p = combine(build(EVENTS), build([ev("x1", "web", "page_view", T0)], "u-x"))
    detail = detailed_profile(p, SegmentRules(), (1e9, 1e9))
    assert detail == {**public_profile(p, SegmentRules(), (1e9, 1e9)),
                      "merged_from": ["u-x"], "scores": p["scores"],
                      "complaint_cases": [[T0 + 7 * DAY_MS, "K1"]], "signal": None}
    assert [s[1] for s in detail["scores"]] == ["csat", "nps", "review"]
