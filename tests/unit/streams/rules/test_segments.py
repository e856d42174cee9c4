from __future__ import annotations

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
