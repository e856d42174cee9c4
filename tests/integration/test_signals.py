"""Early complaint signals on real services: each reason, one signal per episode, its end."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from typing import Any

import pytest

from touchpoint.schemas.codec import codec_for

from .conftest import Worker, topic_records

pytestmark = pytest.mark.integration

T0 = 1_795_000_000_000
H = 3_600_000
M = 60_000
Event = tuple[str, dict[str, Any]]


def call(eid: str, cid: str, at: int, *, outcome: str | None = "resolved",
         reason: str = "billing",
         wait: int = 40, transfers: int = 0, notes: str | None = None) -> Event:
    event = {"event_id": eid, "type": "call_ended", "occurred_at": at, "customer_id": cid,
             "call_id": eid, "agent_id": "A1", "queue_wait_s": wait, "talk_s": 200,
             "transfers": transfers, "reason": reason, "outcome": outcome}
    if notes:
        event["notes"] = notes
    return "callcenter", event


def rating(eid: str, cid: str, at: int, kind: str, score: int,
           comment: str | None = None) -> Event:
    event: dict[str, Any] = {"event_id": eid, "type": kind, "occurred_at": at,
                             "customer_id": cid, "score": score}
    if comment:
        event["comment"] = comment
    return "feedback", event


def web(eid: str, cid: str, at: int, kind: str, session: str, **fields: Any) -> Event:
    return "web", {"event_id": eid, "type": kind, "occurred_at": at, "customer_id": cid,
                   "session_id": session, **fields}


EN_NOTES = ("Customer furious: the agent was rude and the refund is still missing. "
            "Terrible service.")
ZH_COMMENT = "服务态度太差了，退款一直没有到账，非常失望"  # noqa: RUF001 (Chinese punctuation)


def scenario(run: str) -> list[Event]:
    """Customers named after what happens to them; event time ends three days on."""
    def c(name: str) -> str:
        return f"{run}-{name}"

    return [
        call(f"{run}-r1", c("repeat"), T0, reason="delivery"),
        # a resolving call adds no points (recovery is not a complaint): these calls' outcome
        # is not known
        call(f"{run}-r2", c("repeat"), T0 + 20 * H, reason="delivery", outcome=None),
        call(f"{run}-w1", c("wait"), T0, wait=1200, outcome=None),
        call(f"{run}-x1", c("transfers"), T0, transfers=3, outcome=None),
        call(f"{run}-u1", c("unresolved"), T0, outcome="unresolved"),
        call(f"{run}-a1", c("abandoned"), T0, outcome="abandoned"),
        rating(f"{run}-l1", c("lowrating"), T0, "csat", 1),
        call(f"{run}-n1", c("text_en"), T0, notes=EN_NOTES, outcome=None),
        rating(f"{run}-z1", c("text_zh"), T0, "review", 3, comment=ZH_COMMENT),
        # a bad call, then the help pages, then a store return: hopping channels
        call(f"{run}-h1", c("hopping"), T0, outcome="unresolved", reason="product"),
        web(f"{run}-h2", c("hopping"), T0 + 2 * H, "page_view", f"{run}-sh",
            url="/help/returns"),
        ("store", {"event_id": f"{run}-h3", "type": "return", "occurred_at": T0 + 5 * H,
                   "customer_id": c("hopping"), "store_id": "S1", "amount": 20.0}),
        # errors in a checkout that never ends in a purchase
        web(f"{run}-e1", c("weberr"), T0, "checkout_started", f"{run}-se", url="/checkout"),
        web(f"{run}-e2", c("weberr"), T0 + M, "error", f"{run}-se", url="/checkout",
            error_code="500"),
        web(f"{run}-e3", c("weberr"), T0 + 2 * M, "error", f"{run}-se", url="/checkout",
            error_code="502"),
        # one episode that keeps getting worse
        call(f"{run}-s1", c("escalate"), T0, outcome="unresolved"),
        call(f"{run}-s2", c("escalate"), T0 + 4 * H, outcome="unresolved", wait=900),
        call(f"{run}-s3", c("escalate"), T0 + 8 * H, outcome="escalated", transfers=3),
        rating(f"{run}-s4", c("escalate"), T0 + 9 * H, "csat", 1,
               comment="Worst service ever, nobody helps me."),
        call(f"{run}-s5", c("escalate"), T0 + 10 * H, outcome="abandoned", wait=1500),
        # trouble, then a resolved call about it and a good rating
        call(f"{run}-v1", c("resolve"), T0, outcome="unresolved", reason="technical"),
        call(f"{run}-v2", c("resolve"), T0 + 3 * H, outcome="unresolved", reason="technical",
             wait=900),
        call(f"{run}-v3", c("resolve"), T0 + 6 * H, outcome="resolved", reason="technical"),
        rating(f"{run}-v4", c("resolve"), T0 + 7 * H, "csat", 5),
        # trouble reaching high, then nothing from this customer for days
        call(f"{run}-b1", c("breach"), T0, outcome="unresolved", reason="delivery"),
        call(f"{run}-b2", c("breach"), T0 + 2 * H, outcome="escalated", reason="delivery",
             wait=1000, transfers=2),
        # a satisfied customer
        call(f"{run}-k1", c("fine"), T0),
        rating(f"{run}-k2", c("fine"), T0 + H, "csat", 5, comment="Great help, thank you!"),
    ]


def later(run: str) -> list[Event]:
    """Three days on, event time moves on in every partition: other visitors' page views."""
    return [web(f"{run}-t{i}", f"{run}-visitor{i}", T0 + 72 * H + i, "page_view",
                f"{run}-st{i}", url="/") for i in range(60)]


@pytest.fixture(scope="module")
def published(worker: Worker) -> str:
    run = f"sig-{uuid.uuid4().hex[:6]}"
    count = f"SELECT count() FROM touchpoint_events WHERE event_id LIKE '{run}-%'"
    # Contacts arrive as they happen: in event-time order, each before the next. (Days of
    # history published at once would be read channel topic beside channel topic, so
    # a customer's rating could overtake the calls before it; the detector counts late
    # contacts but does not reopen what it has concluded: see README.)
    events = sorted(scenario(run), key=lambda item: item[1]["occurred_at"])
    for n, (channel, event) in enumerate(events, 1):
        worker.publisher.publish(channel, event)
        worker.publisher.flush()
        worker.wait_for(count, n, timeout=60)
    # time passes: three days on, other visitors' page views in every partition
    for channel, event in later(run):
        worker.publisher.publish(channel, event)
    worker.publisher.flush()
    worker.wait_for(count, len(events) + 60, timeout=120)
    # the last conclusions (breaches) come with the visitors' page views
    _latest(worker, run, "breach", status="breached")
    return run


def _latest(worker: Worker, run: str, name: str, **expected: Any) -> list[dict[str, Any]]:
    """The latest state of each signal of customer ``name``, once it has ``expected``."""
    deadline = time.monotonic() + 60
    rows: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        rows = worker.query(
            "SELECT signal_id, severity, status, reasons, channels, evidence_event_ids, "
            "toUnixTimestamp(detected_at) AS detected, toUnixTimestamp(escalated_at) AS "
            f"escalated FROM complaint_signals WHERE customer_id = '{run}-{name}' "
            "ORDER BY detected_at").dicts()
        if rows and all(rows[-1][k] == v for k, v in expected.items()):
            return rows
        time.sleep(0.5)
    pytest.fail(f"{name}: signals {rows}, expected the latest to have {expected}")


def _published_signals(worker: Worker) -> list[dict[str, Any]]:
    """Every record on the worker's signals.complaints topic, decoded."""
    codec = codec_for("complaint_signal")
    return [codec.decode(record.value) for record in topic_records(worker.topics.signals)]


@pytest.mark.parametrize(("name", "reason"), [
    ("repeat", "repeat_contact"), ("wait", "long_wait"), ("transfers", "transfers"),
    ("unresolved", "unresolved"), ("abandoned", "abandoned"), ("lowrating", "low_rating"),
    ("text_en", "negative_text"), ("text_zh", "negative_text"), ("weberr", "web_errors"),
])
def test_each_reason_raises_a_watch(worker: Worker, published: str, name: str,
                                    reason: str) -> None:
    [signal] = _latest(worker, published, name)
    assert (signal["severity"], signal["status"], list(signal["reasons"])) == (
        "watch", "open", [reason])


def test_channel_hopping_after_a_bad_call(worker: Worker, published: str) -> None:
    [signal] = _latest(worker, published, "hopping")
    assert "channel_hopping" in signal["reasons"] and "unresolved" in signal["reasons"]
    assert {"callcenter", "web"} <= set(signal["channels"])


def test_ten_bad_contacts_make_one_signal_that_escalates(worker: Worker,
                                                         published: str) -> None:
    [signal] = _latest(worker, published, "escalate", severity="critical")
    run = published
    assert {"unresolved", "long_wait", "transfers", "escalated", "low_rating",
            "negative_text", "abandoned", "repeat_contact"} <= set(signal["reasons"])
    assert signal["detected"] * 1000 == T0  # event time of the first bad call
    # every state went out on signals.complaints (the table keeps the latest): the
    # severity only climbed, under one signal id
    states = [s for s in _published_signals(worker) if s["customer_id"] == f"{run}-escalate"]
    assert {s["signal_id"] for s in states} == {signal["signal_id"]}
    states.sort(key=lambda s: s["revision"])
    severities = [s["severity"] for s in states]
    assert severities[0] == "watch" and "high" in severities and severities[-1] == "critical"
    order = {"watch": 0, "high": 1, "critical": 2}
    assert [order[s] for s in severities] == sorted(order[s] for s in severities)
    # escalated_at is the event time of the contact that tipped it over
    tips = {T0 + n * H for n in (0, 4, 8, 9, 10)}
    assert {s["escalated_at"] for s in states} <= tips


def test_a_resolved_call_resolves_the_signal(worker: Worker, published: str) -> None:
    [signal] = _latest(worker, published, "resolve", status="resolved")
    assert signal["severity"] == "high"


def test_an_unresolved_signal_is_breached_after_the_service_time(worker: Worker,
                                                                  published: str) -> None:
    [signal] = _latest(worker, published, "breach", status="breached")
    assert signal["severity"] in ("high", "critical")
    # the profile follows at its next emission (TOUCHPOINT_PROFILE_EMIT_SECONDS)
    worker.wait_for("SELECT open_signals FROM customer_profiles "
                    f"WHERE customer_id = '{published}-breach'", 0, timeout=30)


def test_a_satisfied_customer_raises_nothing(worker: Worker, published: str) -> None:
    assert worker.query("SELECT count() FROM complaint_signals "
                        f"WHERE customer_id = '{published}-fine'").rows == [(0,)]


def test_text_is_scored_in_english_and_chinese(worker: Worker, published: str) -> None:
    scores = dict(worker.query(
        "SELECT event_id, sentiment FROM touchpoint_events WHERE event_id IN "
        f"('{published}-n1', '{published}-z1', '{published}-k2', '{published}-r1')").rows)
    assert scores[f"{published}-n1"] < -0.5
    assert scores[f"{published}-z1"] < -0.5
    assert scores[f"{published}-k2"] > 0.5
    assert scores[f"{published}-r1"] is None  # no text, no score


def test_open_signals_are_listed_by_the_cli_and_the_worker(worker: Worker,
                                                           published: str) -> None:
    shown = subprocess.run(
        [sys.executable, "-m", "touchpoint.cli", "signals", "--status", "any",
         "--severity", "high", "--format", "json", "--limit", "500"],
        env=worker.env, capture_output=True, text=True, timeout=60, check=False)
    assert shown.returncode == 0, shown.stderr
    listed = {s["customer_id"]: s for s in json.loads(shown.stdout)["signals"]}
    mine = {k.removeprefix(f"{published}-"): v for k, v in listed.items()
            if k.startswith(published)}
    assert set(mine) == {"escalate", "resolve", "breach"}
    assert mine["breach"]["status"] == "breached"

    table = subprocess.run(
        [sys.executable, "-m", "touchpoint.cli", "signals", "--customer",
         f"{published}-repeat"], env=worker.env, capture_output=True, text=True, timeout=60,
        check=False)
    assert table.returncode == 0, table.stderr
    assert "repeat_contact" in table.stdout and "watch" in table.stdout

    status, answer = worker.get("/signals?severity=high&status=any&limit=500")
    assert status == 200, answer
    body = json.loads(answer)
    served = {s["customer_id"] for s in body["signals"] if s["customer_id"].startswith(published)}
    assert served == {f"{published}-{n}" for n in ("escalate", "resolve", "breach")}
    # time left is measured on event time: the breached one has none, open ones count down
    assert all(s["time_left_s"] is None for s in body["signals"]
               if s["customer_id"] == f"{published}-breach")


_CONCLUDED = ("SELECT signal_id, customer_id, severity, status, reasons, channels, "
              "toUnixTimestamp(detected_at) AS detected, "
              "toUnixTimestamp(first_evidence_at) AS first_evidence, "
              "toUnixTimestamp(escalated_at) AS escalated FROM complaint_signals "
              "WHERE customer_id LIKE '{run}-%' AND status != 'withdrawn' ORDER BY signal_id")


def test_the_same_events_all_at_once_in_another_order_give_the_same_signals(
        worker: Worker, published: str, worker_factory: Any) -> None:
    # The module's worker got the contacts one by one in event-time order. A second worker
    # gets the very same events at once, channel by channel in the reverse order of the
    # calls (ratings first, calls last), as a backfill or a nightly upload would send them.
    run = published
    live = worker.query(_CONCLUDED.format(run=run)).dicts()
    assert {row["status"] for row in live} >= {"open", "resolved", "breached"}
    other = worker_factory(worker.backend)
    rank = {"feedback": 0, "store": 1, "web": 2, "callcenter": 3}
    events = sorted(scenario(run), key=lambda item: (rank[item[0]], item[1]["occurred_at"]))
    for channel, event in [*events, *later(run)]:
        other.publisher.publish(channel, event)
    other.publisher.flush()
    count = f"SELECT count() FROM touchpoint_events WHERE event_id LIKE '{run}-%'"
    other.wait_for(count, len(events) + 60, timeout=120)
    deadline = time.monotonic() + 60
    bulk: list[dict[str, Any]] = []
    while time.monotonic() < deadline:  # corrections follow the late contacts
        bulk = other.query(_CONCLUDED.format(run=run)).dicts()
        if bulk == live:
            break
        time.sleep(0.5)
    assert bulk == live
