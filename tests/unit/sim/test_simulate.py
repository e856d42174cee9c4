"""Unit tests of the traffic simulator: determinism, the contract, the mix, pacing."""

from __future__ import annotations

import itertools
import random
import re
from collections import Counter, defaultdict
from datetime import datetime
from typing import Any

import pytest

from touchpoint.schemas import contract
from touchpoint.sim.simulate import SimEvent, Simulator, run

START = 1_795_000_000_000  # 2026-11-18T16:26:40+08:00, a Wednesday
DAY_MS = 86_400_000


def take(n: int, *, seed: int = 0, rate: float | None = None, **params: Any) -> list[SimEvent]:
    simulator = Simulator(seed=seed, start_ms=START, **params)
    return list(itertools.islice(simulator.events(rate=rate), n))


@pytest.fixture(scope="module")
def long_traffic() -> list[SimEvent]:
    """150,000 events (about ten simulated days), shared by the tests that only read them."""
    return take(150_000)


@pytest.fixture(scope="module")
def traffic(long_traffic: list[SimEvent]) -> list[SimEvent]:
    """The first 50,000 events of the default simulation."""
    return long_traffic[:50_000]


# --- A strict checker of CONTRACT §2, written from the contract, not from the code -------

TYPES = {
    "web": {"page_view", "ad_impression", "ad_click", "search", "add_to_cart",
            "checkout_started", "purchase", "login", "error"},
    "store": {"visit", "queue_joined", "served", "purchase", "return"},
    "callcenter": {"call_ended", "callback_requested"},
    "campaign": {"sent", "delivered", "opened", "clicked", "unsubscribed"},
    "feedback": {"csat", "nps", "review", "complaint"},
}
COMMON = {"event_id": str, "type": str, "customer_id": str, "anonymous_id": str,
          "email": str, "phone": str, "campaign_id": str, "attributes": dict}
FIELDS: dict[str, dict[str, type]] = {
    "web": {"session_id": str, "url": str, "referrer": str, "ad_id": str, "dwell_ms": int,
            "amount": float, "currency": str, "error_code": str},
    "store": {"store_id": str, "staff_id": str, "queue_wait_s": int, "amount": float,
              "currency": str, "items": int},
    "callcenter": {"call_id": str, "agent_id": str, "queue_wait_s": int, "talk_s": int,
                   "transfers": int, "reason": str, "outcome": str, "notes": str},
    "campaign": {"medium": str, "variant": str},
    "feedback": {"score": int, "comment": str, "about_channel": str, "store_id": str,
                 "case_id": str},
}
IDENTIFIERS = ("customer_id", "anonymous_id", "email", "phone")
SCORES = {"csat": (1, 5), "nps": (0, 10), "review": (1, 5)}
ENUMS = {
    "outcome": {"resolved", "unresolved", "escalated", "abandoned"},
    "reason": {"billing", "delivery", "product", "technical", "cancel", "other"},
    "medium": {"email", "sms", "push", "display", "social", "direct_mail"},
    "about_channel": set(TYPES),
}
ISO_WITH_OFFSET = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{3})?[+-]\d\d:\d\d")
MIN_MS, MAX_MS = 946_684_800_000, 4_102_444_800_000  # 2000 .. 2100


def event_ms(occurred_at: str | int) -> int:
    if isinstance(occurred_at, int):
        return occurred_at
    return round(datetime.fromisoformat(occurred_at).timestamp() * 1000)


def contract_problems(channel: str, event: dict[str, Any]) -> list[str]:
    """Everything in ``event`` that breaks CONTRACT §2 (empty: valid)."""
    problems = []
    if channel not in TYPES:
        return [f"unknown channel {channel}"]
    allowed = COMMON | FIELDS[channel] | {"occurred_at": object}
    problems += [f"unknown field {k}" for k in event if k not in allowed]
    for name, kind in (COMMON | FIELDS[channel]).items():
        value = event.get(name)
        if value is None:
            continue
        ok = isinstance(value, kind) and not isinstance(value, bool)
        if not ok:
            problems.append(f"{name}={value!r} is not {kind.__name__}")
        elif kind is str and not value.strip():
            problems.append(f"{name} is blank")
        elif kind is int and value < 0:
            problems.append(f"{name}={value} is negative")
        elif name in ENUMS and value not in ENUMS[name]:
            problems.append(f"{name}={value!r} is not one of {sorted(ENUMS[name])}")
    if not isinstance(event.get("event_id"), str) or not event["event_id"]:
        problems.append("no event_id")
    if event.get("type") not in TYPES[channel]:
        problems.append(f"type {event.get('type')!r} is not a {channel} type")
    when = event.get("occurred_at")
    if isinstance(when, bool) or not isinstance(when, str | int):
        problems.append(f"occurred_at={when!r}")
    elif isinstance(when, int) and not MIN_MS <= when < MAX_MS:
        problems.append(f"occurred_at={when} is not epoch ms")
    elif isinstance(when, str) and (not ISO_WITH_OFFSET.fullmatch(when)
                                    or datetime.fromisoformat(when).tzinfo is None):
        problems.append(f"occurred_at={when!r} is not ISO-8601 with an offset")
    if not any(isinstance(event.get(k), str) and event[k].strip() for k in IDENTIFIERS):
        problems.append("no identifier")
    attributes = event.get("attributes", {})
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in attributes.items()):
        problems.append("attributes are not strings")
    if channel == "store" and not event.get("store_id"):
        problems.append("store event without store_id")
    if channel == "campaign" and not event.get("campaign_id"):
        problems.append("campaign event without campaign_id")
    if channel == "feedback" and event.get("type") in SCORES:
        low, high = SCORES[event["type"]]
        if not isinstance(event.get("score"), int) or not low <= event["score"] <= high:
            problems.append(f"{event['type']} score {event.get('score')!r} not in {low}-{high}")
    return problems


def test_the_checker_catches_what_breaks_the_contract() -> None:
    good = {"event_id": "e", "type": "csat", "occurred_at": "2026-11-22T10:15:03.120+08:00",
            "phone": "+86 138 0013 8000", "score": 5}
    assert contract_problems("feedback", good) == []
    assert contract_problems("feedback", {**good, "score": 6}) == ["csat score 6 not in 1-5"]
    assert contract_problems("feedback", {**good, "occurred_at": "2026-11-22T10:15:03"}) == [
        "occurred_at='2026-11-22T10:15:03' is not ISO-8601 with an offset"]
    visit = {"event_id": "e", "type": "visit", "occurred_at": START, "customer_id": "C1"}
    assert contract_problems("store", visit) == ["store event without store_id"]
    assert contract_problems("store", {**visit, "store_id": "S1", "score": 3}) == [
        "unknown field score"]
    assert contract_problems("web", {"event_id": "e", "type": "login", "occurred_at": START,
                                     "dwell_ms": 1.5}) == [
        "dwell_ms=1.5 is not int", "no identifier"]
    assert contract_problems("callcenter", {**visit, "type": "call_ended",
                                            "outcome": "meh"}) == [
        "outcome='meh' is not one of ['abandoned', 'escalated', 'resolved', 'unresolved']"]


# --- Determinism -----------------------------------------------------------------------


def test_the_same_seed_gives_the_same_events() -> None:
    assert take(5_000, seed=7) == take(5_000, seed=7)


def test_another_seed_gives_other_events() -> None:
    first, other = take(5_000, seed=7), take(5_000, seed=8)
    assert first != other
    assert not {e.event["event_id"] for e in first} & {e.event["event_id"] for e in other}


def test_each_call_of_events_replays_the_same_simulation() -> None:
    simulator = Simulator(seed=3, start_ms=START)
    first = list(itertools.islice(simulator.events(), 2_000))
    again = list(itertools.islice(simulator.events(), 2_000))
    assert first == again


def test_event_ids_depend_on_the_start_so_a_later_run_is_not_a_replay() -> None:
    now = take(1_000)
    later = list(itertools.islice(Simulator(seed=0, start_ms=START + DAY_MS).events(), 1_000))
    assert not {e.event["event_id"] for e in now} & {e.event["event_id"] for e in later}


def test_start_defaults_to_now_when_events_start(monkeypatch: pytest.MonkeyPatch) -> None:
    simulator = Simulator(seed=0)
    monkeypatch.setattr("touchpoint.sim.simulate.time.time", lambda: START / 1000)
    first = next(simulator.events())
    assert START <= event_ms(first.event["occurred_at"]) < START + DAY_MS


# --- The contract ----------------------------------------------------------------------


def test_every_event_meets_the_contract(traffic: list[SimEvent]) -> None:
    problems = [(e.channel, e.event, p) for e in traffic[:20_000]
                for p in contract_problems(e.channel, e.event)]
    assert problems == []


def test_events_pass_the_pipeline_contract_check_and_normalize() -> None:
    rejected = []
    for e in take(20_000, seed=5):
        problem = contract.check(e.channel, e.event, region="CN", strict=True)
        if problem is not None:
            rejected.append((e.event, problem))
        if "phone" in e.event and contract.normalize_phone(e.event["phone"], "CN") is None:
            rejected.append((e.event, "phone"))
        if "email" in e.event and contract.normalize_email(e.event["email"]) is None:
            rejected.append((e.event, "email"))
    assert rejected == []


def test_event_ids_are_unique_uuid4_strings(traffic: list[SimEvent]) -> None:
    ids = [e.event["event_id"] for e in traffic]
    assert len(set(ids)) == len(ids)
    uuid4 = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
    assert all(uuid4.fullmatch(i) for i in ids)


def test_events_come_in_event_time_order(traffic: list[SimEvent]) -> None:
    times = [event_ms(e.event["occurred_at"]) for e in traffic]
    assert times[0] >= START
    # Call-center times are written to the second, so they may look up to 999 ms early.
    assert all(later > earlier - 1000 for earlier, later in itertools.pairwise(times))


def test_occurred_at_comes_in_both_forms(traffic: list[SimEvent]) -> None:
    forms = Counter(type(e.event["occurred_at"]).__name__ for e in traffic)
    assert set(forms) == {"str", "int"}
    assert 0.35 < forms["str"] / len(traffic) < 0.65
    offsets = {e.event["occurred_at"][-6:] for e in traffic
               if isinstance(e.event["occurred_at"], str)}
    assert offsets == {"+08:00", "+00:00"}


# --- The mix ---------------------------------------------------------------------------


def test_the_mix_covers_every_channel_and_type(traffic: list[SimEvent]) -> None:
    seen = {(e.channel, e.event["type"]) for e in traffic}
    assert seen == {(channel, kind) for channel, kinds in TYPES.items() for kind in kinds}
    assert set(contract.CHANNELS) == set(TYPES)


def test_channel_shares_are_plausible(traffic: list[SimEvent]) -> None:
    shares = {k: v / len(traffic) for k, v in Counter(e.channel for e in traffic).items()}
    assert 0.45 < shares["web"] < 0.75
    assert 0.1 < shares["store"] < 0.3
    assert 0.05 < shares["campaign"] < 0.25
    assert 0.01 < shares["feedback"] < 0.08
    assert 0.005 < shares["callcenter"] < 0.05


def test_campaign_funnel_rates_are_realistic(long_traffic: list[SimEvent]) -> None:
    funnel = Counter(e.event["type"] for e in long_traffic if e.channel == "campaign")
    assert funnel["delivered"] < funnel["sent"]
    assert 0.15 < funnel["opened"] / funnel["sent"] < 0.25
    assert 0.015 < funnel["clicked"] / funnel["sent"] < 0.04
    assert 0 < funnel["unsubscribed"] < funnel["clicked"]


def test_campaign_events_carry_medium_and_variant(traffic: list[SimEvent]) -> None:
    campaign = [e.event for e in traffic if e.channel == "campaign"]
    assert {e["variant"] for e in campaign} == {"A", "B"}
    assert all(re.fullmatch(r"CMP-2026-11-[A-Z]", e["campaign_id"]) for e in campaign)
    assert {"email", "sms", "push"} <= {e["medium"] for e in campaign}


def test_store_waits_are_mostly_short_with_a_long_tail(traffic: list[SimEvent]) -> None:
    waits = sorted(e.event["queue_wait_s"] for e in traffic if e.event["type"] == "served")
    assert waits[len(waits) // 2] < 300
    assert 0.01 < sum(w > 900 for w in waits) / len(waits) < 0.15


def test_feedback_text_and_notes_come_in_english_and_chinese(traffic: list[SimEvent]) -> None:
    texts = [e.event.get("notes") or e.event.get("comment") for e in traffic
             if e.channel in ("callcenter", "feedback")]
    chinese = [t for t in texts if t and re.search(r"[\u4e00-\u9fff]", t)]
    english = [t for t in texts if t and re.fullmatch(r"[ -~]+", t)]
    assert chinese and english


# --- Identity journeys -----------------------------------------------------------------


def test_anonymous_visitors_later_log_in(traffic: list[SimEvent]) -> None:
    first_seen_with: dict[str, str | None] = {}
    stitched = set()
    for e in traffic:
        cookie = e.event.get("anonymous_id")
        if cookie is None:
            continue
        first_seen_with.setdefault(cookie, e.event.get("customer_id"))
        if e.event["type"] == "login" and first_seen_with[cookie] is None:
            assert re.fullmatch(r"C\d{6}", e.event["customer_id"])
            stitched.add(cookie)
    assert len(stitched) > 100
    never_linked = {c for c, who in first_seen_with.items() if who is None} - stitched
    assert len(never_linked) > 100  # purely anonymous visitors stay anonymous


def test_customers_are_known_by_phone_in_the_call_center(traffic: list[SimEvent]) -> None:
    calls = [e.event for e in traffic if e.channel == "callcenter"]
    assert all("phone" in c for c in calls)
    assert any("customer_id" not in c for c in calls)
    assert any("customer_id" in c for c in calls)
    formats = {re.sub(r"\d", "9", c["phone"]) for c in calls}
    assert {"+99 999 9999 9999", "99999999999", "+9999999999999", "999-9999-9999"} <= formats


def test_store_purchases_use_the_loyalty_id(traffic: list[SimEvent]) -> None:
    purchases = [e.event for e in traffic
                 if e.channel == "store" and e.event["type"] == "purchase"]
    assert sum("customer_id" in p for p in purchases) / len(purchases) > 0.5
    assert all(p["currency"] == "CNY" and p["amount"] > 0 and p["items"] >= 1
               for p in purchases)


def test_emails_arrive_unnormalized_sometimes(traffic: list[SimEvent]) -> None:
    emails = [e.event["email"] for e in traffic if "email" in e.event]
    assert any(m != m.strip() for m in emails)
    assert any(m != m.lower() for m in emails)
    assert any(m == m.strip().lower() for m in emails)


def test_complaints_mostly_follow_bad_experiences(long_traffic: list[SimEvent]) -> None:
    def national(phone: str) -> str:
        return re.sub(r"\D", "", phone)[-11:]

    events = [e.event for e in long_traffic]
    # Stitch identities the simple way: CRM id, else a phone or e-mail seen with one.
    by_phone = {national(e["phone"]): e["customer_id"]
                for e in events if "phone" in e and "customer_id" in e}
    by_email = {e["email"].strip().lower(): e["customer_id"]
                for e in events if "email" in e and "customer_id" in e}

    def who(e: dict[str, Any]) -> str:
        if "customer_id" in e:
            return e["customer_id"]
        if "phone" in e:
            return by_phone.get(national(e["phone"]), national(e["phone"]))
        if "email" in e:
            return by_email.get(e["email"].strip().lower(), e["email"].strip().lower())
        return e["anonymous_id"]

    bad_times: dict[str, list[int]] = defaultdict(list)
    complaints = after_trouble = 0
    for e in events:
        t = event_ms(e["occurred_at"])
        if e["type"] == "complaint":
            complaints += 1
            after_trouble += sum(t - b < 7 * DAY_MS for b in bad_times[who(e)]) >= 2
        elif ((e["type"] == "call_ended" and e["outcome"] != "resolved")
              or (e["type"] in ("csat", "review") and e["score"] <= 2)
              or e["type"] == "callback_requested"
              or (e["type"] == "served" and e["queue_wait_s"] > 900)):
            bad_times[who(e)].append(t)
    assert complaints > 30
    assert after_trouble / complaints > 0.5


# --- Paced event time ------------------------------------------------------------------


def test_paced_event_time_runs_speedup_times_faster_over_a_day() -> None:
    # rate 1000/s at speedup 3600: a simulated day is 24 wall seconds, 24,000 events.
    events = take(24_000, seed=1, rate=1000, speedup=3600)
    span_s = (event_ms(events[-1].event["occurred_at"]) - START) / 1000
    assert 0.85 * 86_400 < span_s < 1.15 * 86_400


def test_a_fast_rate_fills_with_guests_across_all_channels() -> None:
    events = take(15_000, seed=1, rate=5000, speedup=60)
    assert {e.channel for e in events} >= {"web", "store", "callcenter", "feedback"}
    members = sum("customer_id" in e.event for e in events) / len(events)
    assert 0.0 < members < 0.2


# --- run() -----------------------------------------------------------------------------


class FakeTime:
    """A clock that only moves when slept on (or when a slow send moves it)."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds > 0
        self.sleeps.append(seconds)
        self.now += seconds


def test_run_stops_at_exactly_n_events() -> None:
    sent: list[SimEvent] = []
    simulator = Simulator(seed=4, start_ms=START)
    assert run(simulator, sent.append, events=1234) == 1234
    assert sent == list(itertools.islice(simulator.events(), 1234))


def test_run_paces_by_absolute_schedule() -> None:
    fake = FakeTime()
    progress: list[int] = []
    sent = run(Simulator(seed=4, start_ms=START), lambda e: None, rate=1000, duration=2,
               progress=progress.append, clock=fake.clock, sleep=fake.sleep)
    assert sent == 2000
    assert 101.99 <= fake.now < 102.0
    assert min(fake.sleeps) >= 0.005 - 1e-9  # bursts between sleeps, not 1/rate sleeps
    assert 15 <= len(progress) <= 22  # about ten a second, plus the last
    assert progress == sorted(progress)
    assert progress[-1] == 2000


def test_run_does_not_drift_when_sending_takes_time() -> None:
    fake = FakeTime()

    def slow_send(event: SimEvent) -> None:
        fake.now += 0.0004  # 40 % of each event's budget at 1000/s

    sent = run(Simulator(seed=4, start_ms=START), slow_send, rate=1000, duration=2,
               clock=fake.clock, sleep=fake.sleep)
    assert sent == 2000


def test_run_stops_at_whichever_limit_comes_first() -> None:
    fake = FakeTime()
    sent = run(Simulator(seed=4, start_ms=START), lambda e: None, rate=100, duration=60,
               events=50, clock=fake.clock, sleep=fake.sleep)
    assert sent == 50
    assert fake.now == pytest.approx(100.49)


def test_run_reports_progress_once_when_short() -> None:
    progress: list[int] = []
    assert run(Simulator(seed=4, start_ms=START), lambda e: None, events=10,
               progress=progress.append) == 10
    assert progress[-1] == 10


def test_run_needs_a_stopping_point() -> None:
    with pytest.raises(ValueError, match=r"pass duration= \(seconds\) or events="):
        run(Simulator(), lambda e: None, rate=10)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"rate": 0, "events": 1}, "rate must be more than 0"),
    ({"duration": -1}, "duration must be 0 or more"),
    ({"events": -5}, "events must be 0 or more"),
])
def test_run_rejects_bad_arguments(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        run(Simulator(), lambda e: None, **kwargs)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"customers": 0}, "customers must be 1 or more"),
    ({"stores": 0}, "stores must be 1 or more"),
    ({"campaigns": -1}, "campaigns must be 0 or more"),
    ({"speedup": 0}, "speedup must be more than 0"),
])
def test_simulator_rejects_bad_parameters(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Simulator(**kwargs)


def test_without_campaigns_there_is_no_campaign_traffic() -> None:
    events = take(10_000, campaigns=0)
    assert "campaign" not in {e.channel for e in events}
    assert all(contract_problems(e.channel, e.event) == [] for e in events)


def test_faulty_records_are_rejected_by_ingest_for_the_intended_reason() -> None:
    from touchpoint.sim.simulate import FAULTS, faulty
    from touchpoint.streams.rules.normalize import Ingestor, Rejected

    ingestor = Ingestor(pii_salt="s", phone_region="CN", worker="w")
    rng = random.Random(5)
    seen: dict[str, int] = {}
    for offset, sim_event in enumerate(itertools.islice(Simulator(seed=3).events(), 400)):
        state = rng.getstate()
        expected = rng.choice(FAULTS)
        rng.setstate(state)
        channel, value = faulty(sim_event, rng)
        assert channel == sim_event.channel
        outcome = ingestor.process(channel, None, value, topic=f"touchpoints.{channel}",
                                   partition=0, offset=offset, timestamp_ms=None)
        assert isinstance(outcome, Rejected)
        assert outcome.code == expected
        seen[expected] = seen.get(expected, 0) + 1
    assert set(seen) == set(FAULTS)
