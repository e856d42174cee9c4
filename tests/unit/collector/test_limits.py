"""Per-key rate limits: token buckets of events."""

from __future__ import annotations

import math

import pytest

from touchpoint.collector.limits import RateLimiter


def test_a_key_gets_its_rate_and_a_batch_that_does_not_fit_waits_exactly() -> None:
    now = [100.0]
    limiter = RateLimiter(rate=100, capacity=500, clock=lambda: now[0])
    assert limiter.take("k1", 500) == 0.0
    assert limiter.take("k1", 50) == pytest.approx(0.5)  # refused whole: nothing taken
    assert limiter.take("k2", 500) == 0.0  # another key has its own bucket
    now[0] += 0.5
    assert limiter.take("k1", 50) == 0.0
    assert limiter.take("k1", 1) == pytest.approx(0.01)
    now[0] += 60  # an idle key fills up to its capacity, no further
    assert limiter.take("k1", 500) == 0.0
    assert limiter.take("k1", 1) == pytest.approx(0.01)
    assert limiter.take("k1", 501) == math.inf
