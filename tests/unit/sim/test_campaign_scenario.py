"""The campaign scenario: valid events, and pure stages that reproduce its truth exactly."""

from __future__ import annotations

import json
import random
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from touchpoint.schemas.contract import check, parse_occurred_at
from touchpoint.sim.campaign_scenario import (
    STORIES,
    CampaignScenario,
    generate,
    load_expected,
)
from touchpoint.sim.scenarios import ScenarioEvent
from touchpoint.streams.rules.aggregates import MinuteWindows
from touchpoint.streams.rules.attribution import AttributionState, observe

from ..campaign_helpers import (
    aggregate,
    attribute,
    attribute_through_identity,
    campaign_report,
    final_customer,
    minute_report,
    normalize,
    stored,
)

START = datetime(2026, 11, 2, tzinfo=UTC)


@pytest.fixture(scope="module")
def scenario() -> CampaignScenario:
    return generate(seed=11, customers=150, start=START)


@pytest.fixture(scope="module")
def pairs(scenario: CampaignScenario) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    return normalize(scenario.events)


@pytest.fixture(scope="module")
def items(scenario: CampaignScenario,
          pairs: list[tuple[dict[str, Any], dict[str, Any]]]) -> list[tuple[str, dict[str, Any]]]:
    """(final customer, normalized event) in publish order."""
    of = final_customer(scenario.expected)
    return [(of(raw), event) for raw, event in pairs]


def without_version(rows: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {x: {k: v for k, v in r.items() if k != "version"}
            for x, r in rows.items() if not r["retracted"]}


def test_every_event_keeps_the_contract_and_ids_are_unique(scenario: CampaignScenario) -> None:
    for channel, event in scenario.events:
        assert check(channel, event, region="CN", strict=True) is None, event
    ids = [event["event_id"] for _, event in scenario.events]
    assert len(ids) == len(set(ids)) == scenario.expected["events"]


def test_same_arguments_same_scenario(scenario: CampaignScenario) -> None:
    again = generate(seed=11, customers=150, start=START)
    assert again == scenario
    assert generate(seed=12, customers=150, start=START).events != scenario.events


def test_every_story_is_told_and_the_truth_adds_up(scenario: CampaignScenario) -> None:
    expected = scenario.expected
    assert set(expected["stories"]) == {name for name, _, _ in STORIES}
    assert sum(expected["stories"].values()) == 150
    assert sum(m["events"] for m in expected["minutes"]) == expected["events"]
    assert Counter(ch for ch, _ in scenario.events) == expected["channels"]
    for row in expected["campaigns"]:
        assert row["exposed"] >= row["delivered"] >= row["opened"]
        assert row["responded"] >= row["converted"]
        assert (row["revenue"] > 0) == (row["converted"] > 0)
    media = {(r["campaign_id"], r["medium"]) for r in expected["campaigns"]}
    assert media == {("CMP-EMAIL-11", "email"), ("CMP-SMS-11", "sms"),
                     ("CMP-DM-11", "direct_mail"), ("CMP-WEB-11", "display")}


def test_some_events_come_late_but_within_grace(scenario: CampaignScenario) -> None:
    latest, late, worst = 0, 0, 0
    for _, event in scenario.events:
        at = parse_occurred_at(event["occurred_at"])
        assert isinstance(at, int)
        if at < latest:
            late += 1
            worst = max(worst, latest - at)
        latest = max(latest, at)
    assert late >= 5
    assert worst <= 90_000 < scenario.expected["grace_seconds"] * 1000


def test_attribution_reproduces_the_campaign_report(
        scenario: CampaignScenario, items: list[tuple[str, dict[str, Any]]]) -> None:
    rows, emitted = attribute(items)
    assert campaign_report(rows.values()) == scenario.expected["campaigns"]
    assert len(emitted) > len(rows)  # rows were updated as events came


def test_aggregates_reproduce_the_minutes_without_late_events(
        scenario: CampaignScenario, items: list[tuple[str, dict[str, Any]]]) -> None:
    windows = MinuteWindows()
    rows = aggregate(items, windows)
    assert minute_report(rows) == scenario.expected["minutes"]
    assert windows.stats == {"counted": len(items), "late": 0, "duplicate": 0}


def test_routing_through_identity_and_merges_gives_the_same_rows(
        scenario: CampaignScenario, pairs: list[tuple[dict[str, Any], dict[str, Any]]],
        items: list[tuple[str, dict[str, Any]]]) -> None:
    # As the pipeline does: anonymous visitors are customers of their own until they log
    # in; their state is then combined into the CRM customer's.
    by_final, _ = attribute(items)
    routed, emitted = attribute_through_identity([event for _, event in pairs])
    assert without_version(routed) == without_version(by_final)
    merged = [r for r in emitted if r["customer_id"].startswith("u-")]
    assert merged  # some exposures were first stored under an anonymous customer
    assert campaign_report(routed.values()) == scenario.expected["campaigns"]


def test_replays_and_reordering_give_identical_final_rows(
        scenario: CampaignScenario, items: list[tuple[str, dict[str, Any]]]) -> None:
    expected, _ = attribute(items)
    # a full replay into the same state: nothing changes
    replayed, _ = attribute(items + items)
    assert replayed == expected
    # each customer's events in any order within a day, some delivered twice
    rng = random.Random(3)
    jittered = sorted(items + rng.sample(items, 100),
                      key=lambda item: item[1]["occurred_at"] + rng.randrange(20 * 3_600_000))
    shuffled, _ = attribute(jittered)
    assert without_version(shuffled) == without_version(expected)
    # and the minutes, shuffled within the grace period, 50 events redelivered soon after
    windows = MinuteWindows()
    within_grace = sorted(items, key=lambda item: item[1]["occurred_at"]
                          + rng.randrange(100_000))
    for position in sorted(rng.sample(range(len(within_grace) - 20), 50), reverse=True):
        within_grace.insert(position + rng.randint(1, 20), within_grace[position])
    assert minute_report(aggregate(within_grace, windows)) == scenario.expected["minutes"]
    assert windows.stats["late"] == 0 and windows.stats["duplicate"] == 50


def test_a_restart_from_the_changelog_changes_no_row(
        items: list[tuple[str, dict[str, Any]]]) -> None:
    # State saved as JSON mid-stream, then the last events delivered again after restoring.
    expected, _ = attribute(items)
    cut = len(items) * 2 // 3
    states: dict[str, AttributionState] = {}
    emitted = []
    for customer, event in items[:cut]:
        emitted.extend(observe(states.setdefault(customer, AttributionState(customer)),
                               event)[1])
    saved = json.loads(json.dumps({k: s.to_dict() for k, s in states.items()}))
    restored = {k: AttributionState.from_dict(v) for k, v in saved.items()}
    for customer, event in items[cut - 40:]:
        emitted.extend(observe(restored.setdefault(customer, AttributionState(customer)),
                               event)[1])
    assert stored(emitted) == expected


def test_write_and_read_back(tmp_path: Path, scenario: CampaignScenario) -> None:
    folder = scenario.write(tmp_path / "campaigns")
    assert load_expected(folder) == scenario.expected
    lines = (folder / "events.jsonl").read_text(encoding="utf-8").splitlines()
    assert [ScenarioEvent(**json.loads(line)) for line in lines] == scenario.events
    for channel in ("web", "store", "callcenter", "campaign", "feedback"):
        written = (folder / f"{channel}.jsonl").read_text(encoding="utf-8").splitlines()
        assert [json.loads(line) for line in written] == \
            [event for ch, event in scenario.events if ch == channel]
    (tmp_path / "other.json").write_text('{"format": "x"}', encoding="utf-8")
    with pytest.raises(ValueError, match="not a campaign scenario"):
        load_expected(tmp_path / "other.json")


def test_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="customers must be 1 or more"):
        generate(seed=1, customers=0, start=START)
    with pytest.raises(ValueError, match="UTC offset"):
        generate(seed=1, customers=5, start=datetime(2026, 11, 2))
    small = generate(seed=1, customers=5, start=START + timedelta(hours=7))
    assert sum(small.expected["stories"].values()) == 5
