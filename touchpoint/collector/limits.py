"""Per-key rate limits: a token bucket of events for each write key, in one process.

Each event costs a token; a key gets ``rate`` tokens a second and may hold up to a
second's worth, or a full batch, whichever is more. A request that needs more tokens than
the bucket holds is refused whole (429) with the seconds until it would fit, and costs
nothing: a client that waits that long and sends the same batch again gets through.
The buckets are per process: with ``--workers N`` a key may reach N times the rate, and
the setting is meant per process (docs/design/collector.md, "Limits").
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["RateLimiter"]


@dataclass
class _Bucket:
    tokens: float
    at: float


class RateLimiter:
    """Token buckets of events, one per key id."""

    def __init__(self, *, rate: float, capacity: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0 or capacity <= 0:
            raise ValueError("rate and capacity must be more than 0")
        self.rate = rate
        self.capacity = capacity
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}

    def take(self, key_id: str, events: int) -> float:
        """Take ``events`` tokens of ``key_id``: 0.0 when taken, else seconds to wait."""
        now = self._clock()
        bucket = self._buckets.get(key_id)
        if bucket is None:
            bucket = self._buckets[key_id] = _Bucket(self.capacity, now)
        bucket.tokens = min(self.capacity, bucket.tokens + (now - bucket.at) * self.rate)
        bucket.at = now
        if events <= bucket.tokens:
            bucket.tokens -= events
            return 0.0
        if events > self.capacity:  # never fits; the batch limit keeps this from happening
            return math.inf
        return (events - bucket.tokens) / self.rate
