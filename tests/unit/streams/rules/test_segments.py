from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from touchpoint.streams.rules import segments
from touchpoint.streams.rules.segments import DAY_MS, SegmentRules, TierEstimator, spend_12m

from .test_profile import T0, build, ev


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


def test_the_tier_as_of_an_event_time_ignores_what_came_after_it() -> None:
    # The complaint detector weighs a contact by the tier as of the contact, so a purchase
    # that arrived earlier but happened later does not change the weight.
    rules = SegmentRules()
    cutoffs = (500.0, 100.0)
    first = ev("b1", "store", "purchase", T0, amount=90.0)
    big = ev("b2", "store", "purchase", T0 + 100 * DAY_MS, amount=900.0)
    later = ev("v", "web", "page_view", T0 + 101 * DAY_MS)
    profile = build([first, big, later])
    assert rules.tier(profile, cutoffs) == "key"
    assert rules.tier(profile, cutoffs, at=T0 + 50 * DAY_MS) == "standard"  # before big
    assert rules.tier(profile, cutoffs, at=T0 + 10 * DAY_MS) == "new"
    assert rules.tier(profile, cutoffs, at=T0 - DAY_MS) == "new"  # before any purchase
    # the same as the profile built from what had happened by then
    assert rules.tier(build([first, ev("v0", "web", "page_view", T0 + 50 * DAY_MS)]),
                      cutoffs) == "standard"


def test_the_month_of_a_time_is_the_calendar_month_datetime_gives() -> None:
    # spend_12m finds the month in integers; datetime's reading is the reference
    rng = random.Random(7)
    first, end = segments._FIRST_MS, segments._END_MS
    times = [0, -1, 1, first, end - 1, rng.randrange(first, end)]
    times += [rng.randrange(first, end) for _ in range(20_000)]
    for year in (1, 4, 100, 400, 1900, 1970, 2000, 2024, 2026, 2100, 9999):
        for month in range(1, 13):
            start = int(datetime(year, month, 1, tzinfo=UTC).timestamp() * 1000)
            times += [start - 1, start, start + 1]
    for ms in times:
        if first <= ms < end:
            at = datetime.fromtimestamp(ms / 1000, tz=UTC)
            assert segments._month_of(ms) == at.year * 12 + at.month - 1, ms
    # beyond datetime's range: datetime's own error, as before
    with pytest.raises((ValueError, OverflowError, OSError)):
        spend_12m({"last_seen": end + DAY_MS, "spend_by_month": {}})


def test_a_spend_month_key_is_the_month_strftime_writes() -> None:
    # the profile's spend_by_month keys and spend_12m's window are one reading of a time
    rng = random.Random(11)
    times = [rng.randrange(946_684_800_000, 4_102_444_800_000) for _ in range(5_000)]
    for year in (2000, 2024, 2028, 2099):
        for month in range(1, 13):
            start = int(datetime(year, month, 1, tzinfo=UTC).timestamp() * 1000)
            times += [start - 1, start, start + 1]
    for ms in times:
        assert segments.month_key(ms) == \
            datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y%m"), ms
