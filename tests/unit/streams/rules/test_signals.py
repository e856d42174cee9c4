"""The complaint detector inside the profiles stage: raise, conclude, merge."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from touchpoint.schemas.codec import codec_for
from touchpoint.streams.rules.complaints import Rules, next_due
from touchpoint.streams.rules.profile_batches import MERGED_INTO, ProfileStage
from touchpoint.streams.rules.signals import SIGNAL_KEY, SWEEP_MS, Detector

from ..stages.test_profiles import _encoded, _merge

T0 = 1_795_000_000_000
HOUR = 3_600_000
RULES = Rules.load()


def call(event_id: str, at: int, *, outcome: str = "unresolved", reason: str = "billing",
         **fields: Any) -> dict[str, Any]:
    return {"event_id": event_id, "channel": "callcenter", "type": "call_ended",
            "occurred_at": at, "category": "personnel", "outcome": outcome,
            "reason": reason, "queue_wait_s": 30, "transfers": 0, **fields}


def page(event_id: str, at: int) -> dict[str, Any]:
    return {"event_id": event_id, "channel": "web", "type": "page_view", "occurred_at": at,
            "category": "channel", "url": "/p"}


def stage_with_detector(clock: list[float] | None = None) -> tuple[ProfileStage, dict[str, Any]]:
    ticks = iter(clock or [1000.0 + i for i in range(1000)])
    table: dict[str, Any] = {}
    detector = Detector(RULES, lambda profile, at: "standard", lateness_ms=60_000,
                        clock=lambda: next(ticks))
    return ProfileStage(table, {}, detector), table


def feed(stage: ProfileStage, key: str, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for event in events:
        stage.handle(key, _encoded(event, key))
    out, stage.signals = stage.signals, []
    return out


def test_bad_calls_raise_one_signal_that_escalates() -> None:
    stage, table = stage_with_detector()
    records = feed(stage, "C1", [call("e1", T0), call("e2", T0 + 5 * HOUR),
                                 call("e3", T0 + 9 * HOUR, outcome="escalated")])
    assert len({r["signal_id"] for r in records}) == 1
    assert records[-1]["severity"] in ("high", "critical")
    assert records[-1]["status"] == "open"
    assert table["C1"]["open_signals"] == 1
    # every state is stamped for the table: emitted_at, and a revision that only grows
    revisions = [r["revision"] for r in records]
    assert revisions == sorted(set(revisions))
    assert all(r["emitted_at"] == r["revision"] // 1000 for r in records)
    codec = codec_for("complaint_signal")
    assert codec.decode(codec.encode(records[-1])) == records[-1]


def test_a_breach_falls_due_by_event_time_of_the_partition() -> None:
    stage, table = stage_with_detector()
    raised = feed(stage, "C1", [call("e1", T0), call("e2", T0 + HOUR),
                                call("e3", T0 + 2 * HOUR, outcome="escalated")])
    assert raised[-1]["severity"] in ("high", "critical")
    # other customers' events move event time on; nothing of C1's arrives
    assert feed(stage, "C2", [page("p1", T0 + 10 * HOUR)]) == []
    later = feed(stage, "C2", [page("p2", T0 + 30 * HOUR)])
    [breach] = [r for r in later if r["customer_id"] == "C1"]
    assert breach["status"] == "breached"
    assert breach["signal_id"] == raised[-1]["signal_id"]
    assert table["C1"]["open_signals"] == 0
    # once concluded, nothing more falls due for C1
    assert [r for r in feed(stage, "C2", [page("p3", T0 + 60 * HOUR)])
            if r["customer_id"] == "C1"] == []


def test_a_breach_waits_for_the_lateness_allowance() -> None:
    stage, _ = stage_with_detector()
    feed(stage, "C1", [call("e1", T0), call("e2", T0 + HOUR),
                       call("e3", T0 + 2 * HOUR, outcome="escalated")])
    records = feed(stage, "C1", [])
    assert records == []
    # the watermark is 60 s behind the newest event: no breach a few seconds past due
    episode = stage.table["C1"][SIGNAL_KEY]["live"]["episode"]
    due = episode["service_from"] + int(RULES.service.hours * HOUR)
    assert feed(stage, "C2", [page("p1", due + 30_000)]) == []
    [breach] = feed(stage, "C2", [page("p2", due + 10 * 60_000)])
    assert (breach["status"], breach["customer_id"]) == ("breached", "C1")


@pytest.mark.python_source
def test_a_sweep_visits_only_customers_whose_time_has_come() -> None:
    # Many customers have an open signal at any time; concluding them must not cost a
    # look at each of them every minute of event time.
    stage, table = stage_with_detector()
    for n in range(50):
        feed(stage, f"C{n}", [call(f"c{n}a", T0 + n * 60_000),
                              call(f"c{n}b", T0 + HOUR + n * 60_000, outcome="escalated")])
    detector = stage.detector
    assert detector is not None
    [(first_due, first)] = [min((t, c) for c, t in detector.due[0].items())]
    assert first == "C0"
    assert next_due(detector.state_of(table["C0"]).live, rules=RULES) == first_due
    looked: list[str] = []
    real_expire = detector.expire
    detector.expire = lambda profile, partition: (  # type: ignore[method-assign]
        looked.append(profile["customer_id"]) or real_expire(profile, partition))
    feed(stage, "X", [page("x1", T0 + 3 * HOUR)])  # the watermark moves; nothing due
    assert looked == []
    # just past C0's and C1's time (each signal a minute after the one before)
    feed(stage, "X", [page("x2", first_due + 60_000 + 60_000 + 1)])
    assert looked == ["C0", "C1"]
    assert [table[c]["open_signals"] for c in ("C0", "C1", "C2")] == [0, 0, 1]
    assert "C0" not in detector.due[0] and "C2" in detector.due[0]


@pytest.mark.python_source
def test_a_sweep_that_concludes_nothing_leaves_the_profile_as_it_was() -> None:
    # The sweep hands expire() a copy, written back only if a signal concluded: what
    # expire() changes in place, however deep in the detector's part, stays in the copy.
    stage, table = stage_with_detector()
    feed(stage, "C0", [call("c0a", T0), call("c0b", T0 + HOUR, outcome="escalated")])
    detector = stage.detector
    assert detector is not None
    before = copy.deepcopy(table["C0"])
    looked: list[str] = []

    def expire(profile: dict[str, Any], partition: int) -> list[dict[str, Any]]:
        looked.append(profile["customer_id"])
        profile[SIGNAL_KEY]["live"]["episode"]["service_from"] = 0
        profile[SIGNAL_KEY]["journal"].append(["changed"])
        profile["open_signals"] = 99
        return []

    detector.expire = expire  # type: ignore[method-assign]
    feed(stage, "X", [page("x1", detector.due[0]["C0"] + 2 * SWEEP_MS)])
    assert looked == ["C0"]
    assert table["C0"] == before


def test_the_due_queue_stays_bounded_as_due_times_move() -> None:
    detector = Detector(RULES, lambda profile, at: "standard")
    # a customer whose due time moves with every change of its state
    for n in range(5000):
        detector._schedule("C1", 0, T0 + n)
    assert detector.due[0] == {"C1": T0 + 4999}
    assert len(detector._queue[0]) <= 2 * 1 + 1024  # stale entries were dropped
    detector._newest[0] = T0 + 4998 + detector.lateness_ms
    assert detector.sweep(0) == []
    detector._newest[0] = T0 + 4999 + detector.lateness_ms + SWEEP_MS
    assert detector.sweep(0) == ["C1"]


def test_a_merged_customer_s_contacts_raise_the_signal_of_the_customer_it_joins() -> None:
    stage, table = stage_with_detector()
    raised = feed(stage, "A", [call("a1", T0), call("a2", T0 + HOUR)])
    assert raised and table["A"]["open_signals"] == 1
    feed(stage, "B", [page("b1", T0 + 2 * HOUR)])
    [(into, absorb, _)] = stage.handle("A", _merge("A", "B"))
    assert into == "B" and table["A"][MERGED_INTO] == "B"
    stage.handle(into, absorb)
    # as if B had made A's calls: B's signal, from the same contacts, and A's withdrawn
    by_id = {r["signal_id"]: r for r in stage.signals}
    assert by_id[raised[-1]["signal_id"]]["status"] == "withdrawn"
    [carried] = [r for r in by_id.values() if r["customer_id"] == "B"]
    assert carried["status"] == "open"
    assert carried["detected_at"] == raised[-1]["detected_at"]
    assert carried["evidence_event_ids"] == raised[-1]["evidence_event_ids"]
    assert table["B"]["open_signals"] == 1
    assert "A" not in stage.detector.due.get(0, set())


def test_without_a_detector_the_stage_raises_nothing() -> None:
    table: dict[str, Any] = {}
    stage = ProfileStage(table, {})
    feed(stage, "C1", [call("e1", T0), call("e2", T0 + HOUR)])
    assert stage.signals == [] and SIGNAL_KEY not in table["C1"]


def test_after_a_recovery_each_customer_s_latest_signal_state_is_published_again() -> None:
    # A crash between a profile's write and its signal's send must not lose that state:
    # read again, the event is a repeat and raises nothing.
    stage, table = stage_with_detector()
    raised = feed(stage, "C1", [call("e1", T0), call("e2", T0 + HOUR),
                                call("e3", T0 + 2 * HOUR, outcome="escalated")])
    feed(stage, "C2", [page("p1", T0)])
    detector = stage.detector
    assert detector is not None
    detector.reset()
    [again] = detector.track(table["C1"], 0)
    assert detector.track(table["C2"], 0) == []

    def content(record: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in record.items() if k not in ("emitted_at", "revision")}

    assert content(again) == content(raised[-1])
    assert again["revision"] > raised[-1]["revision"]  # the latest state wins, as it was
    assert detector.due[0]  # and C1's breach is scheduled again


def test_the_detector_knows_an_event_by_the_digest_the_profiles_stage_passes_it() -> None:
    # The stage hands over profile.event_digest; the detector's own seen_digest must be
    # the same digest in hex, or an event passed with it would not be known without it.
    from touchpoint.streams.rules.complaints import seen_digest
    from touchpoint.streams.rules.profile import event_digest

    for event_id in ("e1", "ë-2", "web:0f3a" * 8, ""):
        assert seen_digest(event_id) == event_digest(event_id).hex()
    detector = Detector(RULES, lambda profile, at: "standard", lateness_ms=60_000)
    profile: dict[str, Any] = {"customer_id": "C1"}
    first = detector.observe(profile, call("e1", T0), 0, event_digest("e1"))
    stored = copy.deepcopy(profile)
    assert first  # a bad call raised a signal
    assert detector.observe(profile, call("e1", T0), 0) == []  # the same event, no digest
    assert profile == stored
