"""The complaint detector run offline over a labelled scenario, in any arrival order.

Each scenario event is normalized as ingest does it (sentiment included) and given to its
true customer, then handed to the profiles stage's :class:`Detector` in the order asked
for, with the stage's event-time sweeps. What comes out is what the pipeline would
publish with perfect identity resolution and no Kafka: the signal benchmark's offline
replay uses it, and the tests that require the same signals whatever the arrival order.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from touchpoint.schemas.codec import codec_for
from touchpoint.schemas.contract import CHANNELS, COMMON_FIELDS
from touchpoint.sim.scenarios import CustomerTruth, Scenario
from touchpoint.sim.signal_quality import event_owners
from touchpoint.streams.rules import complaint_replay
from touchpoint.streams.rules.complaint_replay import WITHDRAWN, History
from touchpoint.streams.rules.complaints import Rules
from touchpoint.streams.rules.normalize import Accepted, Ingestor
from touchpoint.streams.rules.signals import SIGNAL_KEY, Detector

__all__ = ["arrival_order", "concluded", "detect", "normalize", "truth_tier"]

_HOUR_MS = 3_600_000


def normalize(scenario: Scenario, *, phone_region: str) -> list[tuple[str, dict[str, Any]]]:
    """(true customer, normalized event) for each scenario event ingest accepts, in order."""
    owners = event_owners(scenario.truth, scenario.events, phone_region)
    ingestor = Ingestor(pii_salt="offline", phone_region=phone_region, worker="offline")
    codecs = {channel: codec_for(channel) for channel in CHANNELS}
    normalized = []
    for offset, (channel, event) in enumerate(scenario.events):
        owner = owners.get(str(event.get("event_id")))
        if owner is None:
            continue
        record = {name: event.get(name) for name in (*COMMON_FIELDS, *CHANNELS[channel].fields)}
        record["attributes"] = dict(event.get("attributes") or {})
        outcome = ingestor.process(channel, None, codecs[channel].encode(record),
                                   topic="offline", partition=0, offset=offset,
                                   timestamp_ms=None)
        if isinstance(outcome, Accepted):
            normalized.append((owner, outcome.event))
    return normalized


def arrival_order(channels: Sequence[str], times: Sequence[int], *, seed: int,
                  skew_hours: float) -> list[int]:
    """Indexes of events as a bulk load sends them: all at once, channels skewed.

    Each channel gets a fixed lag of up to ``skew_hours`` (drawn from ``seed``), as if its
    system uploaded its batch late, e.g. at night; events are sent in order of event time
    plus their channel's lag. Within a channel, event-time order is kept.
    """
    rng = random.Random(seed)
    skew = {channel: rng.uniform(0, skew_hours) * _HOUR_MS for channel in sorted(set(channels))}
    return sorted(range(len(times)), key=lambda i: (times[i] + skew[channels[i]], i))


def detect(events: Sequence[tuple[str, Mapping[str, Any]]], order: Iterable[int], *,
           rules: Rules, tier_of: Callable[[str], str] = lambda customer: "standard",
           lateness_ms: int = 60_000, end: int | None = None) -> list[dict[str, Any]]:
    """Signal records the profiles stage's detector publishes for ``events`` in ``order``.

    One partition, swept as the stage sweeps it; at the end every customer is concluded
    at event time ``end`` (default: a week after the newest event).
    """
    revision = iter(range(1, 2**62))
    detector = Detector(rules, lambda profile, at: tier_of(profile["customer_id"]),
                        lateness_ms=lateness_ms, clock=lambda: next(revision) / 1e6)
    profiles: dict[str, dict[str, Any]] = {}
    records: list[dict[str, Any]] = []
    newest = 0
    for i in order:
        owner, event = events[i]
        newest = max(newest, int(event["occurred_at"]))
        profile = profiles.setdefault(owner, {"customer_id": owner})
        records += detector.observe(profile, event, 0)
        for customer in detector.sweep(0):
            records += detector.expire(profiles[customer], 0)
    end = newest + 7 * 24 * _HOUR_MS if end is None else end
    for profile in profiles.values():
        if SIGNAL_KEY in profile:
            history = History.from_dict(profile[SIGNAL_KEY])
            records += complaint_replay.expire(history, end, rules=rules)[1]
    return records


def concluded(records: Iterable[Mapping[str, Any]]) -> dict[str, tuple[Any, ...]]:
    """The latest state of each signal that stands (not withdrawn), by signal id.

    Records from the signals topic or :func:`detect`, in the order they were published.
    Compared by what a signal concludes: customer, severity, status, when it was
    detected, first evidenced, escalated and due, its reasons and channels.
    """
    latest: dict[str, Mapping[str, Any]] = {}
    for record in records:  # the highest revision wins, as in the warehouse; then the last
        known = latest.get(record["signal_id"])
        if known is None or record.get("revision", 0) >= known.get("revision", 0):
            latest[record["signal_id"]] = record
    return {sid: (r["customer_id"], r["severity"], r["status"], r["detected_at"],
                  r["first_evidence_at"], r.get("escalated_at"), r.get("due_at"),
                  tuple(r["reasons"]), tuple(r["channels"]))
            for sid, r in latest.items() if r["status"] != WITHDRAWN}


def truth_tier(truth: Mapping[str, CustomerTruth]) -> Callable[[str], str]:
    """A tier function from the truth: key customers ``key``, the rest ``standard``."""
    return lambda customer: "key" if truth[customer].value_tier == "key" else "standard"
