"""Signals: early complaint signals, raised in the profiles stage and published.

The detector (``complaints.py``, kept in event-time order by ``complaint_replay.py``) needs
every contact of a customer, which is what the profiles stage has, so its state lives
inside the customer's profile (key ``signal_state``), moves with it when customers merge
and is recovered with it from the changelog. What is raised goes to
``signals.complaints`` (keyed by customer id) and, through the store stage, to the
warehouse. Signals that fall due without a new event are
concluded by event time: per partition of ``<app_id>-resolved``, the newest event time
less ``TOUCHPOINT_SIGNAL_LATENESS_SECONDS`` is the watermark, and when it has moved on by
a minute the partition's customers with something pending are swept, while the stage
handles a record of that partition (Faust tables change only inside the stream). The
design is in docs/design/signals.md.
"""

from __future__ import annotations

import heapq
import time
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

from touchpoint.streams.rules import complaint_replay, complaints
from touchpoint.streams.rules.complaint_replay import History

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

    def __init__(self, rules: complaints.Rules,
                 tier_of: Callable[[Mapping[str, Any], int], str],
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
        # how contacts were placed in event time (complaint_replay.observe), for /status
        self.placed: Counter[str] = Counter()

    def watermark(self, partition: int) -> int:
        """Event time up to which signals of ``partition`` are concluded (ms)."""
        return max(self._newest.get(partition, 0) - self.lateness_ms, 0)

    def observe(self, profile: dict[str, Any], event: dict[str, Any],
                partition: int, digest: bytes | None = None) -> list[dict[str, Any]]:
        """Apply one new event of ``profile``'s customer; update the profile in place.

        ``digest`` is the event id's ``profile.event_digest``, if the caller has it: the
        detector remembers events by the same digest, in hex.
        """
        self._newest[partition] = max(self._newest.get(partition, 0),
                                      int(event["occurred_at"]))
        sentiment = event.get("sentiment")
        stored = profile.get(SIGNAL_KEY)
        sessions = stored["live"]["sessions"] if stored is not None else ()
        if not complaints.matters(event, sessions=sessions, rules=self.rules,
                                  sentiment=sentiment):
            return []  # most page views: nothing the detector keeps changes
        history, records = complaint_replay.observe(
            self.state_of(profile), event, rules=self.rules,
            value_tier=self.tier_of(profile, int(event["occurred_at"])), sentiment=sentiment,
            counts=self.placed, digest=None if digest is None else digest.hex())
        due = self._next_due(history)
        watermark = self.watermark(partition)
        if due is not None and due <= watermark:
            # A customer whose events arrive behind the partition's event time: what is
            # overdue by now is concluded now, not at the next sweep.
            history, overdue = complaint_replay.expire(history, watermark, rules=self.rules)
            records += overdue
            due = self._next_due(history)
        self._keep(profile, history, partition, due)
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
        history = self.state_of(profile)
        history, records = complaint_replay.expire(history, self.watermark(partition),
                                                   rules=self.rules)
        self._keep(profile, history, partition, self._next_due(history))
        return self._stamp(records)

    def absorb(self, profile: dict[str, Any], other: dict[str, Any] | None,
               partition: int) -> list[dict[str, Any]]:
        """Fold a merged-away customer's detector state into ``profile``'s."""
        if not other:
            return []
        history, records = complaint_replay.combine(
            self.state_of(profile), History.from_dict(other), rules=self.rules)
        self._keep(profile, history, partition, self._next_due(history))
        return self._stamp(records)

    def forget(self, customer_id: str, partition: int) -> None:
        """A customer merged away: nothing of it can fall due here any more."""
        self.due.get(partition, {}).pop(customer_id, None)

    def reset(self) -> None:
        """Forget every pending customer (before :meth:`track` after a rebalance)."""
        self.due.clear()
        self._queue.clear()

    def track(self, profile: Mapping[str, Any], partition: int) -> list[dict[str, Any]]:
        """Note whether ``profile`` has something pending (after a recovery).

        Returns the current state of the customer's latest signal, to publish again: a
        crash between the profile's write and the signal's send would otherwise lose that
        state for good (the event is a repeat when read again). The latest state wins, so
        publishing it twice changes nothing.
        """
        stored = profile.get(SIGNAL_KEY)
        if stored is None:
            return []
        history = History.from_dict(stored)
        self._schedule(history.live.customer_id, partition, self._next_due(history))
        if history.live.episode is None:
            return []
        return self._stamp([complaints.current_record(history.live, rules=self.rules)])

    def state_of(self, profile: dict[str, Any]) -> History:
        """The detector history kept in ``profile`` (a fresh one if it has none)."""
        stored = profile.get(SIGNAL_KEY)
        if stored is None:
            return History.new(profile["customer_id"])
        return History.from_dict(stored)

    def _keep(self, profile: dict[str, Any], history: History, partition: int,
              when: int | None) -> None:
        """Store ``history`` in ``profile``; ``when`` is its ``next_due``."""
        profile[SIGNAL_KEY] = history.to_dict()
        profile["open_signals"] = complaint_replay.open_signals(history)
        self._schedule(history.live.customer_id, partition, when)

    def _next_due(self, history: History) -> int | None:
        return complaint_replay.next_due(history, rules=self.rules)

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

