"""Unit tests of signal quality: exact metrics on hand-made truth and signals."""

from __future__ import annotations

import statistics
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from touchpoint.sim.scenarios import CustomerTruth, generate
from touchpoint.sim.signal_quality import MIX_GROUPS, channel_mix, evaluate

T0 = datetime(2026, 11, 2, tzinfo=UTC)
T0_MS = round(T0.timestamp() * 1000)
HOUR_MS = 3_600_000


def at(hours: float) -> int:
    return T0_MS + round(hours * HOUR_MS)


def when(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


TRUTH = {t.customer_id: t for t in (
    CustomerTruth(customer_id="A", label="complaint", complaint_at=when(100),
                  channels=("callcenter", "feedback")),
    CustomerTruth(customer_id="B", label="cancel", value_tier="key", complaint_at=when(50),
                  channels=("callcenter", "store")),
    CustomerTruth(customer_id="C", label="complaint", complaint_at=when(10),
                  channels=("callcenter", "campaign", "feedback", "store", "web")),
    CustomerTruth(customer_id="D", label="satisfied", channels=("web",)),
    CustomerTruth(customer_id="E", label="satisfied", channels=("store", "web")),
    CustomerTruth(customer_id="F", label="noisy", channels=("callcenter",)),
    CustomerTruth(customer_id="G", label="satisfied", channels=("campaign", "web"),
                  phone="8613800001111", email="g@example.com", devices=("ck_g",)),
    CustomerTruth(customer_id="H", label="satisfied", channels=("store",)),
)}


def signal(signal_id: str, customer_id: str, detected: Any, severity: str,
           escalated: Any = None, **extra: Any) -> dict[str, Any]:
    return {"signal_id": signal_id, "customer_id": customer_id, "detected_at": detected,
            "first_evidence_at": detected, "severity": severity, "escalated_at": escalated,
            "status": "open", "score": 1.0, "reasons": ["long_wait"], "channels": ["store"],
            "evidence_event_ids": [], "emitted_at": 0, **extra}


SIGNALS = [
    # A: watch at 40 h, high at 60 h; the complaint is at 100 h.
    signal("a1", "A", at(40), "watch"),
    signal("a1", "A", at(40), "high", at(60)),
    # B: a watch exactly at the cancel call does not precede it; a high after it is late.
    signal("b1", "B", at(50), "watch"),
    signal("b2", "B", at(60), "high"),
    # C: a watch at 1 h (as a datetime), raised straight to high at 4 h (ISO text).
    signal("c1", "C", when(1), "watch"),
    signal("c2", "C", "2026-11-02T04:00:00Z", "high"),
    # D: only a watch: not a false alarm.
    signal("d1", "D", at(5), "watch"),
    # E: watch, then critical: a false alarm. F (noisy): high.
    signal("e1", "E", at(5), "watch"),
    signal("e1", "E", at(5), "critical", "2026-11-02 09:00:00"),
    signal("f1", "F", at(7), "high"),
    # Keyed by an identifier no truth customer has: matched only through its evidence.
    signal("x1", "anon-123", at(8), "high", evidence_event_ids=["ev-g1", "ev-g2"]),
]

EVENTS = [
    ("web", {"event_id": "ev-g1", "type": "page_view", "occurred_at": at(7),
             "anonymous_id": "ck_g"}),
    ("feedback", {"event_id": "ev-g2", "type": "csat", "occurred_at": at(8),
                  "phone": "+86 138 0000 1111", "score": 1}),
    ("web", {"event_id": "ev-other", "type": "page_view", "occurred_at": at(8),
             "anonymous_id": "ck_unknown"}),
]


def test_overall_metrics_are_exact() -> None:
    report = evaluate(TRUTH, SIGNALS)
    m = report.overall
    assert (m.customers, m.heading, m.caught) == (8, 3, 2)
    assert m.recall == pytest.approx(2 / 3)
    assert m.median_lead_hours == pytest.approx((60 + 9) / 2)  # A: 100-40, C: 10-1
    assert m.caught_alarm == 2
    assert m.alarm_recall == pytest.approx(2 / 3)
    assert m.median_alarm_lead_hours == pytest.approx((40 + 6) / 2)  # A: 100-60, C: 10-4
    assert m.alarmed == 4  # A, C, E, F (B's high came after its cancel call)
    assert m.precision == pytest.approx(0.5)
    assert (m.satisfied, m.false_alarms) == (4, 1)  # E
    assert m.false_alarms_per_1000 == pytest.approx(250.0)
    assert (m.noisy, m.noisy_alarms) == (1, 1)
    assert (report.signals, report.states, report.unmatched_signals) == (9, 11, 1)
    assert report.unmatched_customer_ids == ("anon-123",)


def test_events_match_signals_keyed_by_other_identifiers() -> None:
    report = evaluate(TRUTH, SIGNALS, events=EVENTS)
    m = report.overall
    assert report.unmatched_signals == 0
    assert (m.false_alarms, m.false_alarms_per_1000) == (2, 500.0)  # E and G
    assert m.alarmed == 5
    assert m.precision == pytest.approx(0.4)
    assert report.by_channel_mix["web"].false_alarms == 1  # G


def test_split_by_channel_mix() -> None:
    mixes = evaluate(TRUTH, SIGNALS).by_channel_mix
    assert list(mixes) == ["phone", "store", "web", "phone+store", "store+web",
                           "phone+store+web"]
    phone = mixes["phone"]  # A (caught, alarmed) and F (noisy, alarmed)
    assert (phone.customers, phone.heading, phone.caught, phone.alarmed) == (2, 1, 1, 2)
    assert (phone.recall, phone.median_lead_hours, phone.precision) == (1.0, 60.0, 0.5)
    assert phone.false_alarms_per_1000 is None  # no satisfied customer in the group
    both = mixes["phone+store"]  # B, missed
    assert (both.recall, both.median_lead_hours, both.precision) == (0.0, None, None)
    three = mixes["phone+store+web"]  # C
    assert (three.recall, three.median_lead_hours, three.median_alarm_lead_hours) == (
        1.0, 9.0, 6.0)
    assert mixes["store+web"].false_alarms_per_1000 == 1000.0  # E
    assert mixes["web"].false_alarms_per_1000 == 0.0  # D (watch only) and G
    assert mixes["store"].satisfied == 1  # H


def test_split_by_value_tier() -> None:
    tiers = evaluate(TRUTH, SIGNALS).by_value_tier
    assert list(tiers) == ["key", "regular"]
    assert (tiers["key"].customers, tiers["key"].recall) == (1, 0.0)
    assert tiers["regular"].recall == 1.0
    assert tiers["regular"].median_lead_hours == pytest.approx(34.5)


def test_no_signals_means_no_recall_and_no_alarms() -> None:
    m = evaluate(TRUTH.values(), []).overall
    assert (m.caught, m.recall, m.median_lead_hours) == (0, 0.0, None)
    assert (m.alarmed, m.precision, m.false_alarms_per_1000) == (0, None, 0.0)


def test_the_earliest_state_of_a_signal_counts() -> None:
    # States arrive out of order; the signal reached high at 20 h, critical at 30 h.
    signals = [
        signal("s", "A", at(30), "critical", at(30)),
        signal("s", "A", at(10), "high", at(20)),
        signal("s", "A", at(10), "watch"),
    ]
    m = evaluate(TRUTH, signals).overall
    assert m.median_lead_hours == 90.0
    assert m.median_alarm_lead_hours == 80.0


def test_dict_and_table() -> None:
    report = evaluate(TRUTH, SIGNALS)
    data = report.as_dict()
    assert data["overall"]["precision"] == 0.5
    assert data["by_channel_mix"]["phone"]["recall"] == 1.0
    assert data["by_value_tier"]["key"]["heading"] == 1
    assert data["unmatched_customer_ids"] == ["anon-123"]
    lines = report.format().splitlines()
    assert lines[0] == "9 signals (11 states), 1 matching no customer"
    assert lines[1].split() == ["group", "customers", "heading", "recall", "lead", "h", "alarm",
                                "recall", "alarm", "lead", "h", "precision", "FA/1000",
                                "sat", "noisy", "alarms"]
    assert lines[3].split() == ["all", "customers", "8", "3", "66.7%", "34.5", "66.7%", "23.0",
                                "50.0%", "250.0", "1/1"]
    assert lines[7].split() == ["mix", "phone+store", "1", "1", "0.0%", "-", "0.0%", "-", "-",
                                "-", "0/0"]
    assert [line.split()[1] for line in lines[4:]] == [
        "phone", "store", "web", "phone+store", "store+web", "phone+store+web", "key", "regular"]


def test_channel_mix_groups() -> None:
    assert channel_mix(["callcenter", "feedback"]) == "phone"
    assert channel_mix(["web", "callcenter", "campaign"]) == "phone+web"
    assert channel_mix(["store", "web", "callcenter"]) == "phone+store+web"
    assert channel_mix(["campaign", "feedback"]) == "none"
    assert set(MIX_GROUPS) == {channel_mix(c) for c in (
        ["callcenter"], ["store"], ["web"], ["callcenter", "store"], ["callcenter", "web"],
        ["store", "web"], ["web", "store", "callcenter"], [])}


def test_bad_records_are_refused() -> None:
    with pytest.raises(ValueError, match="has no detected_at"):
        evaluate(TRUTH, [{"signal_id": "s", "customer_id": "A", "severity": "high"}])
    with pytest.raises(ValueError, match="is not a time"):
        evaluate(TRUTH, [signal("s", "A", "last tuesday", "high")])


def test_a_perfect_detector_on_a_scenario() -> None:
    """An oracle raising high at each heading customer's first warning scores perfectly."""
    scenario = generate(seed=2, customers=200, start=T0, days=21)
    oracle = [signal(f"sig-{t.customer_id}", t.customer_id, t.trouble_from, "high")
              for t in scenario.truth.values() if t.heading]
    report = evaluate(scenario.truth, oracle, events=scenario.events)
    m = report.overall
    assert (m.heading, m.caught, m.recall, m.precision) == (30, 30, 1.0, 1.0)
    assert (m.false_alarms, m.false_alarms_per_1000, m.noisy_alarms) == (0, 0.0, 0)
    leads = [(t.complaint_at - t.trouble_from).total_seconds() / 3600  # type: ignore[operator]
             for t in scenario.truth.values() if t.heading]
    assert m.median_lead_hours == pytest.approx(statistics.median(leads))
    assert sum(g.customers for g in report.by_channel_mix.values()) == 200
