"""Unit tests of the labelled scenarios: determinism, the contract, truth against events."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from touchpoint.schemas.contract import check, normalize_email, normalize_phone, parse_occurred_at
from touchpoint.sim.scenarios import (
    HEADING_LABELS,
    CustomerTruth,
    Scenario,
    ScenarioEvent,
    generate,
    load_events,
    load_truth,
    write,
)

START = datetime(2026, 11, 2, tzinfo=UTC)  # a Monday
DAY_MS = 86_400_000


@pytest.fixture(scope="module")
def scenario() -> Scenario:
    return generate(seed=11, customers=600, start=START)


@pytest.fixture(scope="module")
def by_customer(scenario: Scenario) -> dict[str, list[tuple[int, str, dict[str, Any]]]]:
    """Every event under the customer it belongs to (by any identifier it carries)."""
    index: dict[tuple[str, str], str] = {}
    for record in scenario.truth.values():
        assert record.phone is not None and record.email is not None
        index["phone", record.phone] = record.customer_id
        index["email", record.email] = record.customer_id
        for device in record.devices:
            index["anonymous_id", device] = record.customer_id
    owned: dict[str, list[tuple[int, str, dict[str, Any]]]] = defaultdict(list)
    for channel, event in scenario.events:
        owners = {index[key] for key in _keys(event)}
        if "customer_id" in event:
            owners.add(event["customer_id"])
        assert len(owners) == 1, event
        when = parse_occurred_at(event["occurred_at"])
        assert isinstance(when, int)
        owned[owners.pop()].append((when, channel, event))
    return owned


def _keys(event: dict[str, Any]) -> list[tuple[str, str]]:
    keys = []
    if "phone" in event:
        keys.append(("phone", normalize_phone(event["phone"], "CN") or "?"))
    if "email" in event:
        keys.append(("email", normalize_email(event["email"]) or "?"))
    if "anonymous_id" in event:
        keys.append(("anonymous_id", event["anonymous_id"]))
    return keys


def _ms(moment: datetime | None) -> int:
    assert moment is not None
    return round(moment.timestamp() * 1000)


def _formal(channel: str, event: dict[str, Any]) -> bool:
    return ((channel == "feedback" and event["type"] == "complaint")
            or (channel == "callcenter" and event.get("reason") == "cancel"))


# --- determinism and the contract -------------------------------------------------------


def test_same_arguments_give_the_same_scenario() -> None:
    first = generate(seed=5, customers=80, start=START, days=14)
    again = generate(seed=5, customers=80, start=START, days=14)
    assert first.events == again.events
    assert first.truth == again.truth


def test_another_seed_gives_another_scenario() -> None:
    first = generate(seed=5, customers=80, start=START, days=14)
    other = generate(seed=6, customers=80, start=START, days=14)
    assert {e["event_id"] for _, e in first.events}.isdisjoint(
        e["event_id"] for _, e in other.events)
    assert [t.label for t in first.truth.values()] != [t.label for t in other.truth.values()]


def test_every_event_passes_the_contract_check(scenario: Scenario) -> None:
    rejected = [(channel, event, problem) for channel, event in scenario.events
                if (problem := check(channel, event, region="CN", strict=True)) is not None]
    assert rejected == []
    assert {channel for channel, _ in scenario.events} == {
        "web", "store", "callcenter", "campaign", "feedback"}


def test_events_are_in_time_order_with_unique_ids(scenario: Scenario) -> None:
    times = [parse_occurred_at(event["occurred_at"]) for _, event in scenario.events]
    assert times == sorted(times)
    ids = [event["event_id"] for _, event in scenario.events]
    assert len(ids) == len(set(ids))
    assert all(isinstance(item, ScenarioEvent) for item in scenario.events)


def test_times_are_written_as_iso_with_offsets_and_as_epoch_ms(scenario: Scenario) -> None:
    styles = Counter(type(event["occurred_at"]).__name__ for _, event in scenario.events)
    assert styles["int"] > 1000 and styles["str"] > 1000
    offsets = {event["occurred_at"][-6:] for _, event in scenario.events
               if isinstance(event["occurred_at"], str)}
    assert offsets == {"+00:00", "+08:00"}


# --- the population -----------------------------------------------------------------------


def test_label_counts_follow_the_mix_exactly(scenario: Scenario) -> None:
    assert scenario.counts() == {"satisfied": 420, "noisy": 90, "complaint": 60, "cancel": 30}
    custom = generate(seed=1, customers=7, start=START, mix={"noisy": 1, "cancel": 2})
    assert custom.counts() == {"satisfied": 0, "noisy": 2, "complaint": 0, "cancel": 5}


def test_there_are_key_customers_in_every_label(scenario: Scenario) -> None:
    keys = Counter(t.label for t in scenario.truth.values() if t.value_tier == "key")
    assert keys == {"satisfied": 25, "noisy": 5, "complaint": 4, "cancel": 2}


def test_key_customers_make_high_spend_purchases(
        scenario: Scenario, by_customer: dict[str, list[tuple[int, str, dict[str, Any]]]]) -> None:
    spend: dict[str, list[float]] = {"key": [], "regular": []}
    for customer_id, events in by_customer.items():
        tier = scenario.truth[customer_id].value_tier
        spend[tier] += [e["amount"] for _, _, e in events if e["type"] == "purchase"]
    assert min(spend["key"]) >= 2500
    assert max(spend["regular"]) <= 2000
    assert len(spend["key"]) > 50


def test_customer_ids_do_not_collide_with_the_simulator(scenario: Scenario) -> None:
    assert sorted(scenario.truth)[:2] == ["J000001", "J000002"]
    assert len(scenario.truth) == 600


def test_journeys_are_varied(scenario: Scenario) -> None:
    journeys = Counter(t.journey for t in scenario.truth.values())
    assert journeys["routine"] == 420
    heading = {t.journey for t in scenario.truth.values() if t.heading}
    assert heading == {"repeat_calls", "quiet_repeat", "store_trouble", "web_trouble",
                       "channel_hopping", "few_warnings"}
    noisy = {t.journey for t in scenario.truth.values() if t.label == "noisy"}
    assert len(noisy) >= 8 and all(j.startswith("noisy_") for j in noisy)


# --- truth against events -------------------------------------------------------------------


def test_complaint_at_is_the_one_formal_complaint_or_cancel_call(
        scenario: Scenario, by_customer: dict[str, list[tuple[int, str, dict[str, Any]]]]) -> None:
    for customer_id, truth in scenario.truth.items():
        formal = [(t, ch, e) for t, ch, e in by_customer[customer_id] if _formal(ch, e)]
        if not truth.heading:
            assert formal == [], customer_id
            assert truth.complaint_at is None
            continue
        assert [t for t, _, _ in formal] == [_ms(truth.complaint_at)], customer_id
        _, channel, event = formal[0]
        if truth.label == "complaint":
            assert (channel, event["type"]) == ("feedback", "complaint")
            assert event["case_id"] == f"CASE-{customer_id}"
        else:
            assert (channel, event["type"], event["reason"]) == (
                "callcenter", "call_ended", "cancel")


def test_trouble_builds_over_one_to_ten_days_before_the_complaint(scenario: Scenario) -> None:
    heading = [t for t in scenario.truth.values() if t.heading]
    spans = [(_ms(t.complaint_at) - _ms(t.trouble_from)) / DAY_MS for t in heading]
    assert min(spans) >= 1.0
    assert max(spans) <= 12.0
    assert sum(span > 5 for span in spans) >= 10  # slow ones too
    warnings = Counter(t.warning_contacts for t in heading)
    assert min(warnings) == 2
    assert warnings[2] + warnings[3] >= 15  # some show only two or three warnings
    assert max(warnings) >= 8


def test_warning_contacts_come_before_the_complaint(
        scenario: Scenario, by_customer: dict[str, list[tuple[int, str, dict[str, Any]]]]) -> None:
    for customer_id, truth in scenario.truth.items():
        if not truth.heading:
            continue
        before = [(ch, e) for t, ch, e in by_customer[customer_id]
                  if _ms(truth.trouble_from) <= t < _ms(truth.complaint_at)]
        bad = [e for ch, e in before if _is_bad(ch, e)]
        reasons = Counter(e["reason"] for ch, e in before if ch == "callcenter")
        repeats = [reason for reason, calls in reasons.items() if calls >= 2]
        assert bad or repeats, customer_id


def _is_bad(channel: str, event: dict[str, Any]) -> bool:
    """Evidence of trouble, as any detector could see it (repeat calls aside)."""
    if channel == "callcenter":
        return (event["type"] == "callback_requested" or event["outcome"] != "resolved"
                or event["transfers"] > 0 or event["queue_wait_s"] > 300)
    if channel == "store":
        return event.get("queue_wait_s", 0) > 900 or event["type"] == "return"
    if channel == "web":
        return event["type"] == "error" or "/help/" in event["url"] or "/account/" in event["url"]
    if channel == "feedback":
        top = 10 if event["type"] == "nps" else 5
        return event["type"] != "complaint" and event["score"] <= 0.6 * top
    return False


def test_satisfied_customers_have_no_bad_moments(
        scenario: Scenario, by_customer: dict[str, list[tuple[int, str, dict[str, Any]]]]) -> None:
    for customer_id, truth in scenario.truth.items():
        if truth.label != "satisfied":
            continue
        assert truth.warning_contacts == 0 and truth.trouble_from is None
        for _, channel, event in by_customer[customer_id]:
            if channel == "callcenter":
                assert (event["outcome"], event["transfers"]) == ("resolved", 0)
                assert event["queue_wait_s"] <= 200
            elif channel == "store":
                assert event.get("queue_wait_s", 0) <= 480
            elif channel == "web" and event["type"] == "error":
                assert event["error_code"] == "HTTP_404"  # a dead link, nothing more
            elif channel == "feedback":
                low = 7 if event["type"] == "nps" else 3
                assert event["score"] >= low, event


def test_noisy_customers_have_one_bad_moment_then_fine_contacts(
        scenario: Scenario, by_customer: dict[str, list[tuple[int, str, dict[str, Any]]]]) -> None:
    for customer_id, truth in scenario.truth.items():
        if truth.label != "noisy":
            continue
        assert 1 <= truth.warning_contacts <= 4
        moment = _ms(truth.trouble_from)
        later = [(ch, e) for t, ch, e in by_customer[customer_id] if t > moment + 2 * DAY_MS]
        good = [e for ch, e in later if ch == "feedback"
                and e["score"] >= (7 if e["type"] == "nps" else 3)]
        assert good, customer_id
        assert not any(ch == "callcenter" and e["outcome"] != "resolved" for ch, e in later)


def test_channels_are_the_channels_of_the_customers_events(
        scenario: Scenario, by_customer: dict[str, list[tuple[int, str, dict[str, Any]]]]) -> None:
    for customer_id, truth in scenario.truth.items():
        assert truth.channels == tuple(sorted({ch for _, ch, _ in by_customer[customer_id]}))
    mixes = Counter(tuple(c for c in t.channels if c in ("web", "store", "callcenter"))
                    for t in scenario.truth.values())
    for mix in (("callcenter",), ("store",), ("web",), ("callcenter", "store"),
                ("callcenter", "web"), ("store", "web"), ("callcenter", "store", "web")):
        assert mixes[mix] >= 30, mix


def test_phone_and_email_are_linked_before_they_identify_alone(scenario: Scenario) -> None:
    linked: dict[tuple[str, str], int] = {}
    alone: Counter[str] = Counter()
    for _, event in scenario.events:
        when = parse_occurred_at(event["occurred_at"])
        assert isinstance(when, int)
        keys = _keys(event)
        if "customer_id" in event:
            for key in keys:
                linked.setdefault(key, when)
            continue
        for kind, value in keys:
            alone[kind] += 1
            if kind != "anonymous_id":
                assert linked.get((kind, value), when) < when, event
    assert alone["phone"] > 100 and alone["email"] > 20 and alone["anonymous_id"] > 20
    # Anonymous visits become known: every device is logged in from at some point.
    devices = {e["anonymous_id"] for _, e in scenario.events if "anonymous_id" in e}
    assert devices <= {value for kind, value in linked if kind == "anonymous_id"}


def test_some_customers_browse_anonymously_then_log_in(scenario: Scenario) -> None:
    first_seen: dict[str, str] = {}
    for channel, event in scenario.events:
        if channel == "web":
            first_seen.setdefault(event["anonymous_id"], event["type"] if "customer_id" in event
                                  else "anonymous")
    assert Counter(first_seen.values())["anonymous"] >= 40


def test_notes_and_comments_are_in_english_and_chinese(scenario: Scenario) -> None:
    texts = [e.get("notes") or e.get("comment") for _, e in scenario.events]
    chinese = [t for t in texts if t and any("\u4e00" <= c <= "\u9fff" for c in t)]
    english = [t for t in texts if t and t.isascii()]
    assert len(chinese) > 200 and len(english) > 200


# --- files ----------------------------------------------------------------------------------


def test_write_and_load_round_trip(tmp_path: Path) -> None:
    scenario = generate(seed=3, customers=40, start=START, days=10)
    directory = write(scenario, tmp_path / "sc")
    assert load_truth(directory) == dict(scenario.truth)
    assert load_truth(directory / "truth.json") == dict(scenario.truth)
    assert list(load_events(directory)) == scenario.events
    per_channel = Counter(channel for channel, _ in scenario.events)
    for channel, count in per_channel.items():
        lines = (directory / f"{channel}.jsonl").read_text(encoding="utf-8").splitlines()
        assert len(lines) == count
        assert all(check(channel, json.loads(line), region="CN", strict=True) is None
                   for line in lines)
    data = json.loads((directory / "truth.json").read_text(encoding="utf-8"))
    assert data["format"] == "touchpoint.scenario.truth/1"
    assert data["counts"] == scenario.counts()
    heading = next(c for c in data["customers"] if c["label"] in HEADING_LABELS)
    assert datetime.fromisoformat(heading["complaint_at"]) == (
        scenario.truth[heading["customer_id"]].complaint_at)


def test_load_truth_refuses_other_files(tmp_path: Path) -> None:
    (tmp_path / "truth.json").write_text('{"customers": []}', encoding="utf-8")
    with pytest.raises(ValueError, match="not a scenario truth file"):
        load_truth(tmp_path)
    with pytest.raises(ValueError, match="cannot read"):
        load_truth(tmp_path / "missing.json")


def test_truth_records_are_checked() -> None:
    with pytest.raises(ValueError, match="complaint_at is required"):
        CustomerTruth(customer_id="X1", label="complaint")
    with pytest.raises(ValueError, match="label 'angry'"):
        CustomerTruth(customer_id="X1", label="angry")
    record = CustomerTruth(customer_id="X1", label="cancel",
                           complaint_at=START + timedelta(days=3), channels=("callcenter",))
    assert CustomerTruth.from_dict(record.as_dict()) == record
    assert record.heading


@pytest.mark.parametrize(("arguments", "message"), [
    ({"customers": 0}, "customers must be 1 or more"),
    ({"start": datetime(2026, 11, 2)}, "start needs a UTC offset"),
    ({"days": 1}, "days must be 2 or more"),
    ({"mix": {"happy": 1.0}}, "unknown label"),
    ({"mix": {"satisfied": 0.0}}, "not all 0"),
    ({"key_share": 2.0}, "key_share must be between 0 and 1"),
])
def test_bad_arguments_are_refused(arguments: dict[str, Any], message: str) -> None:
    base: dict[str, Any] = {"seed": 1, "customers": 10, "start": START}
    with pytest.raises(ValueError, match=message):
        generate(**{**base, **arguments})
