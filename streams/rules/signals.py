"""Signals: early complaint signals, raised in the profiles stage and published.

The detector (``complaints.py``) needs every contact of a customer in event-time order,
which is what the profiles stage has, so its state lives inside the customer's profile
(key ``complaints``), moves with it when customers merge and is recovered with it from
the changelog. What is raised goes to ``signals.complaints`` (keyed by customer id) and,
through the store stage, to the warehouse. Signals that fall due without a new event are
concluded by event time: per partition of ``<app_id>-resolved``, the newest event time
less ``TOUCHPOINT_SIGNAL_LATENESS_SECONDS`` is the watermark, and when it has moved on by
a minute the partition's customers with something pending are swept, while the stage
handles a record of that partition (Faust tables change only inside the stream). The
design is in docs/design/signals.md.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable, Mapping
from typing import Any

from touchpoint.streams.rules import complaints
from touchpoint.streams.rules.complaints import ComplaintState

__all__ = ["SIGNAL_KEY", "SWEEP_MS", "Detector"]

#: Where a profile keeps its detector state.
SIGNAL_KEY = "signal_state"
#: How far the event-time watermark of a partition moves between sweeps of it.
SWEEP_MS = 60_000


class Detector:
    """The complaint detector over profiles: observe events, expire what fell due.

    ``tier_of`` gives a profile's value tier (key customers escalate sooner). Records
    returned are ready to encode as ``complaint_signal`` (``emitted_at`` and ``revision``
    set). ``due`` holds, per partition, the customers with something still pending and
    the event time it falls due (``complaints.next_due``); a sweep visits only those
    whose time the watermark has passed, not every customer with an open signal.
    """

    def __init__(self, rules: complaints.Rules, tier_of: Callable[[Mapping[str, Any]], str],
                 *, lateness_ms: int = 60_000,
                 clock: Callable[[], float] = time.time) -> None:
        self.rules = rules
        self.tier_of = tier_of
        self.lateness_ms = lateness_ms
        self.due: dict[int, dict[str, int]] = {}
        # per partition, (due time, customer) in a heap; an entry whose time no longer
        # matches ``due`` is stale (the state changed since) and skipped when popped
        self._queue: dict[int, list[tuple[int, str]]] = {}
        self._newest: dict[int, int] = {}
        self._swept: dict[int, int] = {}
        self._clock = clock
        self._last_revision = 0

    def watermark(self, partition: int) -> int:
        """Event time up to which signals of ``partition`` are concluded (ms)."""
        return max(self._newest.get(partition, 0) - self.lateness_ms, 0)

    def observe(self, profile: dict[str, Any], event: Mapping[str, Any],
                partition: int) -> list[dict[str, Any]]:
        """Apply one new event of ``profile``'s customer; update the profile in place."""
        state = self.state_of(profile)
        state, records = complaints.observe(
            state, event, rules=self.rules, value_tier=self.tier_of(profile),
            sentiment=event.get("sentiment"))
        self._newest[partition] = max(self._newest.get(partition, 0),
                                      int(event["occurred_at"]))
        due = self._next_due(state)
        watermark = self.watermark(partition)
        if due is not None and due <= watermark:
            # A customer whose events arrive behind the partition's event time: what is
            # overdue by now is concluded now, not at the next sweep.
            state, overdue = complaints.expire(state, watermark, rules=self.rules)
            records += overdue
            due = self._next_due(state)
        self._keep(profile, state, partition, due)
        return self._stamp(records)

    def sweep(self, partition: int) -> list[str]:
        """Customers of ``partition`` to :meth:`expire` now (none until the watermark moved)."""
        watermark = self.watermark(partition)
        if watermark - self._swept.get(partition, 0) < SWEEP_MS:
            return []
        self._swept[partition] = watermark
        queue, due = self._queue.get(partition), self.due.get(partition, {})
        ready = set()
        while queue and queue[0][0] <= watermark:
            when, customer = heapq.heappop(queue)
            if due.get(customer) == when:
                del due[customer]  # scheduled again by expire() if still pending
                ready.add(customer)
        return sorted(ready)

    def expire(self, profile: dict[str, Any], partition: int) -> list[dict[str, Any]]:
        """Conclude what fell due for ``profile``'s customer by the watermark."""
        state = self.state_of(profile)
        state, records = complaints.expire(state, self.watermark(partition), rules=self.rules)
        self._keep(profile, state, partition, self._next_due(state))
        return self._stamp(records)

    def absorb(self, profile: dict[str, Any], other: Mapping[str, Any] | None,
               partition: int) -> list[dict[str, Any]]:
        """Fold a merged-away customer's detector state into ``profile``'s."""
        if not other:
            return []
        state, records = complaints.combine(
            self.state_of(profile), ComplaintState.from_dict(other), rules=self.rules)
        self._keep(profile, state, partition, self._next_due(state))
        return self._stamp(records)

    def forget(self, customer_id: str, partition: int) -> None:
        """A customer merged away: nothing of it can fall due here any more."""
        self.due.get(partition, {}).pop(customer_id, None)

    def reset(self) -> None:
        """Forget every pending customer (before :meth:`track` after a rebalance)."""
        self.due.clear()
        self._queue.clear()

    def track(self, profile: Mapping[str, Any], partition: int) -> None:
        """Note whether ``profile`` has something pending (after a recovery)."""
        stored = profile.get(SIGNAL_KEY)
        if stored is not None:
            state = ComplaintState.from_dict(stored)
            self._schedule(state.customer_id, partition, self._next_due(state))

    def state_of(self, profile: Mapping[str, Any]) -> ComplaintState:
        """The detector state kept in ``profile`` (a fresh one if it has none)."""
        stored = profile.get(SIGNAL_KEY)
        if stored is None:
            return ComplaintState(profile["customer_id"])
        return ComplaintState.from_dict(stored)

    def _keep(self, profile: dict[str, Any], state: ComplaintState, partition: int,
              when: int | None) -> None:
        """Store ``state`` in ``profile``; ``when`` is its ``complaints.next_due``."""
        profile[SIGNAL_KEY] = state.to_dict()
        profile["open_signals"] = complaints.open_signals(state)
        self._schedule(state.customer_id, partition, when)

    def _next_due(self, state: ComplaintState) -> int | None:
        return complaints.next_due(state, rules=self.rules)

    def _schedule(self, customer_id: str, partition: int, when: int | None) -> None:
        """Note that ``customer_id`` next falls due at event time ``when`` (None: never)."""
        due = self.due.setdefault(partition, {})
        if when is None:
            due.pop(customer_id, None)
        elif due.get(customer_id) != when:
            due[customer_id] = when
            queue = self._queue.setdefault(partition, [])
            heapq.heappush(queue, (when, customer_id))
            if len(queue) > 2 * len(due) + 1024:  # mostly stale entries: rebuild
                queue[:] = [(t, c) for c, t in due.items()]
                heapq.heapify(queue)

    def _stamp(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for record in records:
            now_us = int(self._clock() * 1_000_000)
            # strictly increasing within the worker: the table keeps the highest
            self._last_revision = max(now_us, self._last_revision + 1)
            record["emitted_at"] = self._last_revision // 1000
            record["revision"] = self._last_revision
        return records

