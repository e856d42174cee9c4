from __future__ import annotations

import dataclasses
import itertools
import json
import random
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest import mock

import pytest

from touchpoint.exceptions import ConfigError
from touchpoint.streams.rules import attribution
from touchpoint.streams.rules.attribution import (
    ATTRIBUTION_COLUMNS,
    MAX_TOUCHPOINTS,
    AttributionState,
    Candidate,
    FirstTouch,
    Linear,
    combine,
    exposure_id,
    is_idle,
    model_for,
    observe,
    row_values,
    snapshot,
)

T0 = 1_795_000_000_000
MIN = 60_000
HOUR = 3_600_000
DAY = 86_400_000
CATEGORY = {"web": "channel", "store": "channel", "callcenter": "personnel",
            "feedback": "brand", "campaign": "communication"}


def ev(event_id: str, channel: str, kind: str, at: int, **fields: Any) -> dict[str, Any]:
    return {"event_id": event_id, "channel": channel, "type": kind, "occurred_at": at,
            "category": CATEGORY[channel], **fields}


def msg(event_id: str, kind: str, at: int, campaign: str = "E1", medium: str = "email",
        variant: str = "A") -> dict[str, Any]:
    return ev(event_id, "campaign", kind, at, campaign_id=campaign, medium=medium,
              variant=variant)


def run(events: list[dict[str, Any]], customer: str = "C1", **options: Any
        ) -> tuple[AttributionState, dict[str, dict[str, Any]], list[dict[str, Any]]]:
    """Apply events in order; (state, latest row per exposure id, every row emitted)."""
    state = AttributionState(customer)
    emitted: list[dict[str, Any]] = []
    for event in events:
        state, rows = observe(state, event, **options)
        emitted.extend(rows)
    latest: dict[str, dict[str, Any]] = {}
    for row in emitted:
        latest[row["exposure_id"]] = row
    return state, latest, emitted


def live(latest: dict[str, dict[str, Any]], *, version: bool = False) -> dict[str, Any]:
    return {x: {k: v for k, v in r.items() if version or k != "version"}
            for x, r in latest.items() if not r["retracted"]}


EMAIL = [msg("s1", "sent", T0), msg("d1", "delivered", T0 + MIN),
         msg("o1", "opened", T0 + 2 * HOUR), msg("c1", "clicked", T0 + 2 * HOUR + MIN)]


def test_one_send_is_one_exposure_with_its_flags() -> None:
    _, latest, _ = run(EMAIL)
    assert list(latest) == [exposure_id("E1", "s1")]
    row = latest[exposure_id("E1", "s1")]
    assert row == {
        "exposure_id": exposure_id("E1", "s1"), "campaign_id": "E1", "medium": "email",
        "variant": "A", "customer_id": "C1", "value_tier": "", "exposed_at": T0,
        "last_exposed_at": T0 + 2 * HOUR + MIN, "delivered": 1, "opened": 1, "clicked": 1,
        "responded_at": None, "response_channel": "", "response_type": "",
        "response_event_id": "", "converted_at": None, "conversion_channel": "",
        "conversions": 0, "revenue": 0.0, "model": "last_touch", "retracted": 0, "version": 4,
    }
    assert tuple(row) == ATTRIBUTION_COLUMNS
    assert row_values(row)[0] == exposure_id("E1", "s1")


def test_response_is_the_first_touchpoint_in_the_window_and_purchases_convert() -> None:
    events = [
        ev("before", "web", "page_view", T0 - MIN),  # before the exposure: not a response
        *EMAIL,
        ev("call", "callcenter", "call_ended", T0 + DAY),
        ev("buy1", "store", "purchase", T0 + 2 * DAY, store_id="S1", amount=100.25),
        ev("buy2", "web", "purchase", T0 + 7 * DAY, amount=10.0),  # the window's last ms
        ev("buy3", "web", "purchase", T0 + 7 * DAY + 1, amount=99.0),  # outside
    ]
    _, latest, _ = run(events)
    row = latest[exposure_id("E1", "s1")]
    assert (row["responded_at"], row["response_channel"], row["response_type"],
            row["response_event_id"]) == (T0 + DAY, "callcenter", "call_ended", "call")
    assert (row["converted_at"], row["conversion_channel"], row["conversions"],
            row["revenue"]) == (T0 + 2 * DAY, "store", 2, 110.25)


def test_a_touchpoint_at_the_exposure_instant_is_not_its_response() -> None:
    _, latest, _ = run([msg("s1", "sent", T0), ev("v", "store", "visit", T0, store_id="S1")])
    assert latest[exposure_id("E1", "s1")]["responded_at"] is None


def test_communications_are_neither_exposures_nor_responses() -> None:
    events = [*EMAIL,
              msg("u1", "unsubscribed", T0 + 3 * HOUR),
              ev("house", "web", "ad_impression", T0 + 4 * HOUR, ad_id="AD-H1"),
              ev("noid", "campaign", "delivered", T0 + 5 * HOUR, medium="sms")]
    state, latest, emitted = run(events)
    assert len(emitted) == 4 and state.applied == 4
    assert latest[exposure_id("E1", "s1")]["responded_at"] is None


def test_last_touch_credits_the_exposure_touched_last() -> None:
    # E1 opened on day 0; SMS delivered on day 1; visit and purchase on day 2: the SMS.
    # Then E1 is clicked on day 3 and a web purchase follows: E1.
    events = [*EMAIL[:3],
              msg("s2", "sent", T0 + DAY, "S1", "sms", "B"),
              msg("d2", "delivered", T0 + DAY + MIN, "S1", "sms", "B"),
              ev("v", "store", "visit", T0 + 2 * DAY, store_id="S1"),
              ev("p", "store", "purchase", T0 + 2 * DAY + MIN, store_id="S1", amount=50.0),
              msg("c1", "clicked", T0 + 3 * DAY),
              ev("w", "web", "purchase", T0 + 3 * DAY + MIN, amount=20.0)]
    _, latest, _ = run(events)
    email, sms = latest[exposure_id("E1", "s1")], latest[exposure_id("S1", "s2")]
    assert (sms["response_event_id"], sms["conversions"], sms["revenue"]) == ("v", 1, 50.0)
    assert (email["response_event_id"], email["conversions"], email["revenue"]) == ("w", 1, 20.0)
    assert email["clicked"] == 1

    _, first, _ = run(events, model=FirstTouch())
    assert first[exposure_id("E1", "s1")]["revenue"] == 70.0
    assert first[exposure_id("S1", "s2")]["responded_at"] is None

    _, linear, _ = run(events, model=Linear())
    # both windows hold both purchases: 50 / 2 + 20 / 2 each
    assert linear[exposure_id("E1", "s1")]["revenue"] == 35.0
    assert linear[exposure_id("S1", "s2")]["revenue"] == 35.0
    assert linear[exposure_id("S1", "s2")]["response_event_id"] == "v"
    assert linear[exposure_id("E1", "s1")]["model"] == "linear"


def test_models_by_name_and_their_credit() -> None:
    assert model_for("first_touch").name == "first_touch"
    with pytest.raises(ConfigError, match="first_touch, last_touch, linear"):
        model_for("u_shaped")
    a, b = Candidate("a", 10, 30), Candidate("b", 20, 25)
    assert model_for("last_touch").credit([a, b]) == [("a", 1.0)]
    assert FirstTouch().credit([b, a]) == [("a", 1.0)]
    assert Linear().credit([b, a]) == [("a", 0.5), ("b", 0.5)]


def test_a_new_send_is_a_new_exposure_and_other_events_join_the_open_one() -> None:
    events = [msg("s1", "sent", T0), msg("d1", "delivered", T0 + MIN),
              msg("s2", "sent", T0 + 3 * DAY), msg("d2", "delivered", T0 + 3 * DAY + MIN),
              ev("v", "store", "visit", T0 + 4 * DAY, store_id="S1"),
              # an ad for the campaign within 7 days of the second send joins it...
              ev("i1", "web", "ad_impression", T0 + 5 * DAY, campaign_id="E1", ad_id="AD1"),
              # ...and one 7 days or more after it starts an exposure of its own
              ev("i2", "web", "ad_impression", T0 + 10 * DAY, campaign_id="E1", ad_id="AD1")]
    _, latest, _ = run(events, lateness=timedelta(days=30))
    first, second = latest[exposure_id("E1", "s1")], latest[exposure_id("E1", "s2")]
    assert first["responded_at"] is None and second["response_event_id"] == "v"
    assert second["last_exposed_at"] == T0 + 5 * DAY
    ad = latest[exposure_id("E1", "i2")]
    assert (ad["medium"], ad["variant"], ad["delivered"], ad["clicked"]) == \
        ("display", "AD1", 1, 0)


def test_web_ads_take_medium_and_variant_from_attributes_when_given() -> None:
    events = [ev("i", "web", "ad_impression", T0, campaign_id="W1", ad_id="AD9",
                 attributes={"medium": "social", "variant": "blue"}),
              ev("k", "web", "ad_click", T0 + 5000, campaign_id="W1", ad_id="AD9")]
    _, latest, _ = run(events)
    row = latest[exposure_id("W1", "i")]
    assert (row["medium"], row["variant"], row["clicked"]) == ("social", "blue", 1)


def test_value_tier_is_the_one_given_with_the_first_event() -> None:
    state = AttributionState("C1")
    observe(state, msg("s1", "sent", T0), value_tier="key")
    _, rows = observe(state, msg("d1", "delivered", T0 + 1), value_tier="standard")
    assert rows[0]["value_tier"] == "key"


def test_a_repeated_event_changes_nothing() -> None:
    state, _, _ = run(EMAIL)
    before = json.dumps(state.to_dict(), sort_keys=True)
    for event in EMAIL:
        assert observe(state, event)[1] == []
    assert json.dumps(state.to_dict(), sort_keys=True) == before


def test_events_later_than_the_lateness_are_ignored_and_counted() -> None:
    state, _, _ = run([*EMAIL, ev("v", "store", "visit", T0 + 3 * DAY, store_id="S1")])
    state, rows = observe(state, ev("old", "web", "page_view", T0 + DAY))
    assert rows == [] and state.late == 1


def test_a_late_first_event_retracts_the_id_it_replaces() -> None:
    # Delivered arrives before sent: the exposure first gets the id of `delivered`, then
    # `sent` (earlier) comes: that id is retracted and the exposure keeps sent's id.
    in_order = [msg("s1", "sent", T0), msg("d1", "delivered", T0 + MIN),
                ev("v", "store", "visit", T0 + DAY, store_id="S1")]
    _, expected, _ = run(in_order)
    _, latest, emitted = run([in_order[1], in_order[2], in_order[0]])
    assert live(latest) == live(expected)
    retracted = latest[exposure_id("E1", "d1")]
    assert retracted["retracted"] == 1
    assert [r["version"] for r in emitted] == [1, 2, 3, 3]


def test_any_order_and_any_repeats_give_the_same_final_rows() -> None:
    events = [
        *EMAIL,
        msg("s2", "sent", T0 + DAY, "S1", "sms", "B"),
        msg("d2", "delivered", T0 + DAY + MIN, "S1", "sms", "B"),
        ev("i1", "web", "ad_impression", T0 + DAY + HOUR, campaign_id="W1", ad_id="AD1"),
        ev("k1", "web", "ad_click", T0 + DAY + HOUR + 5000, campaign_id="W1", ad_id="AD1"),
        ev("pv", "web", "page_view", T0 + DAY + HOUR + 9000, campaign_id="W1"),
        ev("v", "store", "visit", T0 + 2 * DAY, store_id="S1"),
        ev("p", "store", "purchase", T0 + 2 * DAY + MIN, store_id="S1", amount=10.1),
        ev("q", "web", "purchase", T0 + 2 * DAY + 2 * MIN, amount=0.2),
        ev("r", "web", "purchase", T0 + 2 * DAY + 3 * MIN, amount=0.1),
        ev("f", "feedback", "csat", T0 + 3 * DAY, score=5),
    ]
    for model in ("last_touch", "first_touch", "linear"):
        options = {"model": model_for(model), "lateness": timedelta(days=3)}
        _, expected, _ = run(events, **options)
        rng = random.Random(model)
        for _ in range(30):
            shuffled = events + rng.sample(events, 5)
            rng.shuffle(shuffled)
            state, latest, emitted = run(shuffled, **options)
            assert live(latest) == live(expected), model
            assert state.late == 0
            for xid in latest:  # versions only grow per exposure
                versions = [r["version"] for r in emitted if r["exposure_id"] == xid]
                assert versions == sorted(set(versions))
        replay, _, _ = run(events + events, **options)  # the same order: the same versions
        assert live(run(events, **options)[1], version=True) == live(expected, version=True)
        assert replay.applied == len(events)


def test_state_survives_json_and_continues_the_same() -> None:
    events = [*EMAIL, ev("v", "store", "visit", T0 + DAY, store_id="S1"),
              ev("p", "store", "purchase", T0 + DAY + MIN, store_id="S1", amount=5.5)]
    _, expected, emitted = run(events)
    state, _, first = run(events[:3])
    data = state.to_dict()
    # every field, in the dataclass's order (to_dict and from_dict name them one by one)
    assert list(data) == [f.name for f in dataclasses.fields(AttributionState)]
    assert AttributionState.from_dict(data) == state
    copy = AttributionState.from_dict(data)  # the containers the rules change are copies
    copy.touchpoints.append([0])
    copy.rows["x"] = {}
    assert data == state.to_dict()
    restored = AttributionState.from_dict(json.loads(json.dumps(data)))
    rest = []
    for event in events[3:]:
        restored, rows = observe(restored, event)
        rest.extend(rows)
    assert first + rest == emitted
    assert snapshot(restored) == [{**expected[exposure_id("E1", "s1")],
                                   "version": len(events)}]


def test_merged_customers_attribute_as_one() -> None:
    # CRM customer: an e-mail exposure on day 0. The same person anonymously: browses on
    # day 2 (the e-mail's response), clicks an ad and lands; then buys as the CRM customer.
    crm_events = [msg("s1", "sent", T0), msg("d1", "delivered", T0 + MIN),
                  ev("buy", "web", "purchase", T0 + 2 * DAY + 10 * MIN, amount=80.0)]
    anon_events = [ev("pv0", "web", "page_view", T0 + 2 * DAY),
                   ev("i", "web", "ad_impression", T0 + 2 * DAY + MIN, campaign_id="W1",
                      ad_id="AD1"),
                   ev("k", "web", "ad_click", T0 + 2 * DAY + 2 * MIN, campaign_id="W1",
                      ad_id="AD1"),
                   ev("pv1", "web", "page_view", T0 + 2 * DAY + 3 * MIN, campaign_id="W1")]
    _, as_one, _ = run(sorted(crm_events + anon_events, key=lambda e: e["occurred_at"]))
    crm, _, crm_rows = run(crm_events)
    anon, _, anon_rows = run(anon_events, customer="u-anon")
    assert crm_rows[-1]["response_event_id"] == "buy"  # alone, the e-mail got the purchase
    merged, rows = combine(crm, anon)
    latest = {r["exposure_id"]: r for r in crm_rows + anon_rows + rows}
    assert live(latest) == live(as_one)
    email, ad = latest[exposure_id("E1", "s1")], latest[exposure_id("W1", "i")]
    assert (email["response_event_id"], email["conversions"]) == ("pv0", 0)
    assert (ad["customer_id"], ad["response_event_id"], ad["revenue"]) == ("C1", "pv1", 80.0)
    assert min(r["version"] for r in rows) > max(r["version"] for r in crm_rows + anon_rows)
    assert merged.applied == len(crm_events) + len(anon_events) + 1


def test_merging_two_exposures_of_one_send_retracts_one() -> None:
    # Both ids got the same campaign's ad on the same day: one customer, one exposure.
    a, _, _ = run([ev("i1", "web", "ad_impression", T0, campaign_id="W1", ad_id="A")])
    b, _, _ = run([ev("i2", "web", "ad_impression", T0 + HOUR, campaign_id="W1",
                           ad_id="A")], customer="u-b")
    _, rows = combine(a, b)
    assert [(r["exposure_id"], r["retracted"], r["customer_id"]) for r in rows] == [
        (exposure_id("W1", "i1"), 0, "C1"), (exposure_id("W1", "i2"), 1, "u-b")]
    assert rows[0]["last_exposed_at"] == T0 + HOUR


def test_closed_exposures_keep_their_final_row_and_the_state_stays_small() -> None:
    state = AttributionState("C1")
    emitted = []
    for day in range(120):
        at = T0 + day * DAY
        for event in (msg(f"s{day}", "sent", at, f"E{day % 5}"),
                      *(ev(f"v{day}-{n}", "web", "page_view", at + HOUR + n * MIN)
                        for n in range(10)),
                      ev(f"p{day}", "web", "purchase", at + 2 * HOUR, amount=1.0)):
            state, rows = observe(state, event)
            emitted.extend(rows)
    data = state.to_dict()
    assert len(data["touchpoints"]) <= 11 * 9 and len(data["exposures"]) <= 9
    assert len(data["closed"]) <= 16 and len(data["rows"]) <= 24
    assert len(json.dumps(data)) < 40_000
    final = {r["exposure_id"]: r for r in emitted}
    first = final[exposure_id("E0", "s0")]
    assert (first["response_event_id"], first["conversions"], first["revenue"]) == \
        ("v0-0", 1, 1.0)  # later days' purchases are the later sends' (last touch)
    assert not is_idle(state)


def test_a_customer_without_exposures_becomes_idle() -> None:
    state, _, _ = run([ev("v", "store", "visit", T0, store_id="S1")])
    assert not is_idle(state)  # an exposure up to a day late could still claim the visit
    observe(state, ev("w", "web", "page_view", T0 + DAY + 1))
    assert not is_idle(state)
    state.touchpoints = state.touchpoints[:1]
    assert is_idle(state) and is_idle(AttributionState("C2"))


def test_a_busy_customer_keeps_the_newest_touchpoints() -> None:
    state = AttributionState("bot")
    for n in range(MAX_TOUCHPOINTS + 50):
        observe(state, ev(f"e{n}", "web", "page_view", T0 + n))
    assert len(state.touchpoints) == MAX_TOUCHPOINTS
    assert state.touchpoints[0][1] == "e50"


def test_settings_are_checked_and_times_may_be_datetimes() -> None:
    with pytest.raises(ConfigError, match="window must be positive"):
        observe(AttributionState("C1"), EMAIL[0], window=timedelta(0))
    with pytest.raises(ConfigError, match="lateness must be 0 or more"):
        observe(AttributionState("C1"), EMAIL[0], lateness=timedelta(seconds=-1))
    moment = datetime.fromtimestamp(T0 / 1000, UTC)
    _, rows = observe(AttributionState("C1"), {**EMAIL[0], "occurred_at": moment})
    assert rows[0]["exposed_at"] == T0


def test_permutations_within_the_lateness_agree_and_beyond_it_do_not() -> None:
    events = [msg("s1", "sent", T0), msg("o1", "opened", T0 + HOUR),
              ev("v", "store", "visit", T0 + DAY, store_id="S1"),
              ev("p", "store", "purchase", T0 + DAY + MIN, store_id="S1", amount=3.0)]
    _, expected, _ = run(events)
    for order in itertools.permutations(events):
        assert live(run(list(order), lateness=timedelta(days=2))[1]) == live(expected)
    # `sent` more than a day after the purchase is ignored: the exposure starts at `opened`
    state, latest, _ = run([*events[1:], events[0]])
    assert state.late == 1 and list(live(latest)) == [exposure_id("E1", "o1")]


def _history(rng: random.Random, dense: bool, *, exposures: float | None = None
             ) -> list[dict[str, Any]]:
    """A customer's events: exposures of three campaigns, purchases, page views, some
    late or too late, some repeated. ``dense``: minutes apart, a busy customer's.
    ``exposures``: the share of campaign messages (default 5 % dense, 15 % not)."""
    steps = [MIN, 2 * MIN, 10 * MIN, HOUR] if dense else [MIN, HOUR, 6 * HOUR, DAY, 3 * DAY]
    behind = [0, 0, 0, 5 * MIN, HOUR, DAY] if dense else [0, 0, 0, HOUR, DAY, 2 * DAY]
    share = (0.05 if dense else 0.15) if exposures is None else exposures
    at, events = T0, []
    for i in range(rng.randint(30, 300 if dense else 200)):
        at += rng.choice(steps)
        when = at - rng.choice(behind)
        pick = rng.random()
        if pick < share:
            kind = rng.choice(["sent", "delivered", "opened", "clicked"])
            events.append(msg(f"m{i}", kind, when, campaign=rng.choice(["E1", "E2"])))
        elif pick < share + (0.03 if dense else 0.05):
            events.append(ev(f"a{i}", "web", rng.choice(["ad_impression", "ad_click"]), when,
                             campaign_id="D1"))
        elif pick < share + (0.07 if dense else 0.15):
            events.append(ev(f"p{i}", rng.choice(["web", "store", "callcenter"]), "purchase",
                             when, amount=round(rng.uniform(1, 200), 2)))
        else:
            events.append(ev(f"v{i}", "web", "page_view", when))
        if rng.random() < 0.1:
            events.append(dict(rng.choice(events)))  # a repeat
    return events


@pytest.mark.parametrize(("dense", "bound", "exposures"), [
    (False, MAX_TOUCHPOINTS, None), (True, MAX_TOUCHPOINTS, None), (True, 12, None),
    (False, MAX_TOUCHPOINTS, 0.5), (True, MAX_TOUCHPOINTS, 0.5), (True, 12, 0.5)])
@pytest.mark.parametrize("seed", range(40))
def test_events_without_the_full_recompute_give_the_same_rows_and_state(
        seed: int, dense: bool, bound: int, exposures: float | None) -> None:
    # observe() leaves most touchpoints and exposures out of the full recompute
    # (_steady, _quick, _quick_exposure): the states and rows must be those of
    # recomputing after every event, whatever comes. A bound of 12: a busy customer's, at
    # the touchpoint and exposure bounds all the time. Half the events campaign messages:
    # the simulator's share.
    with mock.patch("touchpoint.streams.rules.attribution.MAX_TOUCHPOINTS", bound), \
            mock.patch("touchpoint.streams.rules.attribution.MAX_EXPOSURE_EVENTS",
                       bound if bound == 12 else attribution.MAX_EXPOSURE_EVENTS):
        _same_both_ways(random.Random(seed), dense, exposures)


def _same_both_ways(rng: random.Random, dense: bool, exposures: float | None = None) -> None:
    """Apply a random history with and without the quick paths; the same after each event."""
    hours = [1, 2, 6, 24] if dense else [2, 24, 72, 168]
    window = timedelta(hours=rng.choice(hours))
    lateness = timedelta(hours=rng.choice([0, 1, 12, 24]))
    model = model_for(rng.choice(["last_touch", "first_touch", "linear"]))
    events = _history(rng, dense, exposures=exposures)
    options = {"model": model, "window": window, "lateness": lateness}
    fast, full = AttributionState("C1"), AttributionState("C1")
    merged_at = len(events) // 2
    for n, event in enumerate(events):
        if n == merged_at:  # a merge: rows of the absorbed customer name another id
            other = run(events[:n:3], customer="C2", **options)[0]
            fast, _ = combine(fast, AttributionState.from_dict(other.to_dict()), **options)
            full, _ = combine(full, AttributionState.from_dict(other.to_dict()), **options)
        fast, fast_rows = observe(fast, event, **options)
        with mock.patch("touchpoint.streams.rules.attribution._steady",
                        return_value=False):
            full, full_rows = observe(full, event, **options)
        assert fast_rows == full_rows, (n, event)
        assert fast.to_dict() == full.to_dict(), (n, event)


@pytest.mark.python_source
def test_the_full_recompute_is_left_out_for_exposures_that_cannot_need_it() -> None:
    # The property test above would pass with the full recompute always run: show that
    # exposures after every touchpoint and every event of their campaign skip it.
    with mock.patch("touchpoint.streams.rules.attribution._refresh",
                    wraps=attribution._refresh) as refresh:
        state, latest, emitted = run([
            ev("v1", "web", "page_view", T0 - HOUR),
            *EMAIL,  # a send, its delivery, open and click: no recompute
            msg("s2", "sent", T0 + 3 * HOUR, campaign="E2"),  # a second campaign's send
            ev("a1", "web", "ad_impression", T0 + 4 * HOUR, campaign_id="D1"),
            ev("v2", "web", "page_view", T0 + 5 * HOUR),  # the last touch's: _quick
            msg("d2", "delivered", T0 + 6 * HOUR, campaign="E2"),  # after a touchpoint
            msg("o0", "opened", T0 + 90 * MIN)])  # before the click: regroups E1
    assert refresh.call_count == 1  # o0 alone
    assert [r["exposure_id"] for r in emitted[:4]] == [exposure_id("E1", "s1")] * 4
    row = latest[exposure_id("E1", "s1")]
    assert (row["delivered"], row["opened"], row["clicked"]) == (1, 1, 1)
    assert row["last_exposed_at"] == T0 + 2 * HOUR + MIN
    assert latest[exposure_id("E2", "s2")]["delivered"] == 1
    assert latest[exposure_id("E2", "s2")]["responded_at"] is None
    assert latest[exposure_id("D1", "a1")]["response_event_id"] == "v2"
    assert state.applied == 10


@pytest.mark.python_source
def test_the_full_recompute_is_left_out_for_touchpoints_that_cannot_need_it() -> None:
    # The test above would pass with the full recompute always run: show that it is not.
    with mock.patch("touchpoint.streams.rules.attribution._refresh",
                    wraps=attribution._refresh) as refresh:
        state, latest, _ = run([
            ev("v1", "web", "page_view", T0),
            ev("v2", "web", "page_view", T0 + MIN),
            msg("s1", "sent", T0 + HOUR),
            ev("v3", "web", "page_view", T0 + 2 * HOUR),  # claimed: its response
            ev("v4", "web", "page_view", T0 + 3 * HOUR),  # claimed, later: no change
            ev("p1", "web", "purchase", T0 + 4 * HOUR, amount=10.0),  # a conversion
            ev("v5", "web", "page_view", T0 + 9 * DAY)])  # closes s1
    assert refresh.call_count == 2  # p1, v5 (s1 comes after every touchpoint: no recompute)
    assert [p[1] for p in state.touchpoints] == ["v5"]
    row = latest[exposure_id("E1", "s1")]
    assert (row["response_event_id"], row["conversions"], row["revenue"]) == ("v3", 1, 10.0)


def test_a_state_named_anew_rewrites_its_open_rows_on_the_next_touchpoint() -> None:
    # Attributor.state_of names a stored state by its profile's id. A touchpoint that no
    # exposure claims, after the window but within the lateness, still rewrites the open
    # exposure's row under that id, as the full recompute does.
    state, _, _ = run([msg("s1", "sent", T0)], window=timedelta(hours=1),
                      lateness=timedelta(days=1))
    state.customer_id = "C3"
    state, rows = observe(state, ev("v1", "web", "page_view", T0 + 2 * HOUR),
                          window=timedelta(hours=1), lateness=timedelta(days=1))
    assert [(r["exposure_id"], r["customer_id"]) for r in rows] == [
        (exposure_id("E1", "s1"), "C3")]


def test_a_closed_exposure_still_wins_the_touchpoints_its_window_ends_on() -> None:
    # s1 closes at T0 + 1h, the end of its window, where v2 still falls in it; touched
    # last (opened), it takes v2 from s2 under last touch, so s2 gets no response.
    options: dict[str, Any] = {"window": timedelta(hours=1), "lateness": timedelta(0)}
    _, latest, _ = run([msg("s1", "sent", T0), msg("s2", "sent", T0 + 30 * MIN, campaign="E2"),
                        msg("o1", "opened", T0 + 50 * MIN),
                        ev("v1", "web", "page_view", T0 + HOUR),  # closes s1 after crediting
                        ev("v2", "web", "page_view", T0 + HOUR)], **options)
    assert latest[exposure_id("E1", "s1")]["response_event_id"] == "v1"
    assert latest[exposure_id("E2", "s2")]["responded_at"] is None


def test_of_two_touchpoints_at_one_instant_the_smaller_id_is_the_response() -> None:
    _, latest, _ = run([msg("s1", "sent", T0), ev("vb", "web", "page_view", T0 + HOUR),
                        ev("va", "web", "page_view", T0 + HOUR)])
    assert latest[exposure_id("E1", "s1")]["response_event_id"] == "va"
