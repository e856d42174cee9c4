"""Profiles: one persistent profile per resolved customer, fed by every contact.

The state is a plain JSON-able dict in a changelog-backed Faust table keyed by
customer id (RocksDB through rocksdict when installed, memory otherwise), so a
restarted worker recovers it from Kafka.

**Event time decides.** Every field is either a sum (counts, spend), a minimum or
maximum of event times (first and last seen, last contact per channel), or a value
chosen by event time (the latest purchase). Applying the same events in any order
gives the same profile, so late events land as if they had come in order, and
combining two profiles (a merge) is the same as having seen both histories.

**Each event once.** Delivery is at-least-once, so an event may arrive twice after a
crash, and a second consumer group replaying the inbound topics appends every event to
the shared ordered log again, long after the first copy. A profile keeps an 8-byte
digest of every event id it applied (state key ``recent``, kept for compatibility: it
once held only the latest 64) and ignores repeats whenever they come. That is 19 bytes
of state per event: 19 KB for a customer with 1,000 events.

**Replays after a merge.** When the identity stage replays events after a crash or a
rebalance, an event first counted on an anonymous customer X may come back resolved to
the customer C that X has since been merged into, and reach C before X's state does.
Counting it then, and again inside X's state, would count it twice. So every event of a
customer with aliases carries them (``identity.AWAIT_HEADER``), and C holds such an event
until each of those aliases has been folded in; then it is applied, and a repeat is
recognized by its id like any other. Every merge sends X's state on, even an empty one,
so a held event always gets released.

**Merges in chains.** When A merges into B and then B into C, A's state travels to B's
partition from A's, while "B merged into C" travels there from the identity stage:
nothing orders the two. A merged-away id therefore keeps a marker naming the customer it
became, and whatever still arrives for it is passed on, so no history is left behind. An
event passed on (a replay keyed by the old id) may already be counted in the state the
id handed over, and that state may reach the customer after the event: the event names
the id as an alias to wait for, like the identity stage's replays.

**A merge read again hands the state over again.** The marker is written to the table
before the state it hands over is delivered, and a worker that dies between the two
keeps the marker (its RocksDB, or the changelog) while the state is lost with it. The
merge record is then read again, uncommitted, and finds the marker. So the marker keeps
the state it handed over (``MERGED_STATE``; a merged-away id costs what its profile cost
before), and a merge read again sends it once more and writes the marker again (the
changelog may have lost the first write). The customer it became folds a state in once:
a repeat is recognized by the merged-away id in its ``merged_from``.

**Emission.** Changed profiles are published at most every
``TOUCHPOINT_PROFILE_EMIT_SECONDS`` per customer: to ``profiles.updates`` (compacted)
and the ``customer_profiles`` table. ``revision`` grows with every change, and the
table keeps the highest, so an older copy can never replace a newer one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple, cast

import faust

from touchpoint.schemas.codec import codec_for, subject_of
from touchpoint.sinks.base import Batch
from touchpoint.sinks.writer import RetryingWriter
from touchpoint.streams.rules import complaints
from touchpoint.streams.rules.attribution import ATTRIBUTION_COLUMNS
from touchpoint.streams.rules.campaigns import ATTRIBUTION_KEY, Attributor
from touchpoint.streams.rules.signals import SIGNAL_KEY, Detector
from touchpoint.streams.runtime import changelog
from touchpoint.streams.runtime.consumer import is_current
from touchpoint.streams.runtime.outbox import Outbox
from touchpoint.streams.stages.identity import AWAIT_HEADER
from touchpoint.streams.stages.store import Behind

__all__ = [
    "MERGED_INTO",
    "MERGED_STATE",
    "PROFILE_COLUMNS",
    "ProfileStage",
    "SegmentRules",
    "Send",
    "TierEstimator",
    "apply_event",
    "combine",
    "new_profile",
    "public_profile",
    "register",
]

log = logging.getLogger(__name__)

DAY_MS = 86_400_000
# The table value of a merged-away customer: {MERGED_INTO: "<the customer it became>",
# MERGED_STATE: <its state as handed over>} (markers written before 2026-11-24 have no state).
MERGED_INTO = "__merged_into__"
MERGED_STATE = "__merged_state__"
RECENT_SCORES = 10
# The channels with a contacts_<channel> column of their own in customer_profiles_raw. Not
# contract.CHANNELS: these columns are fixed by migration 0003, so a channel added to the
# contract is counted in contacts_by_channel (which has every channel) until a migration
# gives it a column and it is added here.
_COLUMN_CHANNELS = ("web", "store", "callcenter", "campaign", "feedback")


def new_profile(customer_id: str) -> dict[str, Any]:
    """An empty profile."""
    return {
        "customer_id": customer_id, "first_seen": None, "last_seen": None,
        "contacts_by_channel": {}, "contacts_by_category": {}, "last_contact": {},
        "total_spend": 0.0, "orders": 0, "returns": 0, "first_purchase_at": None,
        "last_purchase_at": None, "spend_by_month": {},
        "csat_sum": 0, "csat_n": 0, "review_sum": 0, "review_n": 0, "nps_sum": 0, "nps_n": 0,
        "scores": [], "complaints": 0, "complaint_cases": [], "open_signals": 0,
        "recent": [], "revision": 0, "merged_from": [],
    }


def _digest(event_id: str) -> str:
    return hashlib.blake2b(event_id.encode(), digest_size=8).hexdigest()


def _month(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y%m")


def _min(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else min(a, b)


def _max(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else max(a, b)


def apply_event(profile: dict[str, Any], event: Mapping[str, Any]) -> bool:
    """Add one normalized event to ``profile`` in place; ``False`` if it was seen already."""
    digest = _digest(event["event_id"])
    if digest in profile["recent"]:
        return False
    profile["recent"].append(digest)
    when: int = event["occurred_at"]
    channel, kind = event["channel"], event["type"]
    profile["first_seen"] = _min(profile["first_seen"], when)
    profile["last_seen"] = _max(profile["last_seen"], when)
    _add(profile["contacts_by_channel"], channel, 1)
    _add(profile["contacts_by_category"], event["category"], 1)
    profile["last_contact"][channel] = _max(profile["last_contact"].get(channel), when)
    amount = event.get("amount")
    if kind == "purchase" and channel in ("web", "store"):
        profile["orders"] += 1
        profile["first_purchase_at"] = _min(profile["first_purchase_at"], when)
        profile["last_purchase_at"] = _max(profile["last_purchase_at"], when)
        if amount:
            profile["total_spend"] = round(profile["total_spend"] + amount, 2)
            _add(profile["spend_by_month"], _month(when), amount)
    elif kind == "return" and channel == "store":
        profile["returns"] += 1
        if amount:
            profile["total_spend"] = round(profile["total_spend"] - amount, 2)
            _add(profile["spend_by_month"], _month(when), -amount)
    elif channel == "feedback":
        score = event.get("score")
        if kind in ("csat", "review", "nps") and score is not None:
            profile[f"{kind}_sum"] += score
            profile[f"{kind}_n"] += 1
            profile["scores"] = _latest([*profile["scores"], [when, kind, score]],
                                        RECENT_SCORES)
        elif kind == "complaint":
            profile["complaints"] += 1
            profile["complaint_cases"] = _latest(
                [*profile["complaint_cases"], [when, event.get("case_id") or ""]], 20)
    profile["revision"] += 1
    return True


def combine(into: dict[str, Any], other: Mapping[str, Any]) -> dict[str, Any]:
    """Fold ``other`` (a merged-away customer's profile) into ``into``, in place."""
    into["first_seen"] = _min(into["first_seen"], other["first_seen"])
    into["last_seen"] = _max(into["last_seen"], other["last_seen"])
    for name in ("contacts_by_channel", "contacts_by_category", "spend_by_month"):
        for key, value in other[name].items():
            _add(into[name], key, value)
    for channel, when in other["last_contact"].items():
        into["last_contact"][channel] = _max(into["last_contact"].get(channel), when)
    for name in ("orders", "returns", "complaints", "csat_sum", "csat_n", "review_sum",
                 "review_n", "nps_sum", "nps_n", "open_signals"):
        into[name] += other[name]
    into["total_spend"] = round(into["total_spend"] + other["total_spend"], 2)
    into["first_purchase_at"] = _min(into["first_purchase_at"], other["first_purchase_at"])
    into["last_purchase_at"] = _max(into["last_purchase_at"], other["last_purchase_at"])
    into["scores"] = _latest([*into["scores"], *other["scores"]], RECENT_SCORES)
    into["complaint_cases"] = _latest([*into["complaint_cases"], *other["complaint_cases"]], 20)
    into["recent"] = list(dict.fromkeys([*into["recent"], *other["recent"]]))
    into["merged_from"] = sorted({*into["merged_from"], other["customer_id"],
                                  *other["merged_from"]})
    if other.get("held"):  # events the merged-away customer was still holding
        into["held"] = [*into.get("held", []), *other["held"]]
    into["revision"] = max(into["revision"], other["revision"]) + 1
    return into


def _add(counter: dict[str, Any], key: str, amount: float) -> None:
    value = counter.get(key, 0) + amount
    counter[key] = round(value, 2) if isinstance(value, float) else value


def _latest(items: list[list[Any]], keep: int) -> list[list[Any]]:
    # sorted by (time, rest) so the same set always gives the same list
    return sorted(items, key=lambda item: [item[0], *map(str, item[1:])])[-keep:]


# --- segments ------------------------------------------------------------------------------

@dataclass(frozen=True)
class SegmentRules:
    """Lifecycle and value-tier rules; days and shares configurable (see settings).

    Lifecycle, judged as of the customer's latest contact (event time):

    - ``prospect``: no purchase yet;
    - ``new``: first purchase within ``new_days``;
    - ``lapsed``: no purchase for ``lapsed_days``;
    - ``at_risk``: no purchase for ``at_risk_days``, or a formal complaint or open
      complaint signal within ``at_risk_days``;
    - ``loyal``: ``loyal_orders`` or more orders and a purchase within ``at_risk_days``;
    - ``active``: everyone else.

    Value tier: ``new`` before the first purchase or within ``new_days`` of it; else
    ``key`` for the top ``key_share`` of customers by spend in the trailing 12 months,
    ``growth`` for the next ``growth_share``, ``standard`` for the rest. The cut-offs are
    estimated from the live spend distribution (:class:`TierEstimator`); until
    ``min_population`` customers have spent, the fixed ``key_spend`` / ``growth_spend``
    apply.
    """

    new_days: int = 30
    at_risk_days: int = 90
    lapsed_days: int = 180
    loyal_orders: int = 5
    key_share: float = 0.04
    growth_share: float = 0.16
    key_spend: float = 20_000.0
    growth_spend: float = 5_000.0
    min_population: int = 200

    def lifecycle(self, p: Mapping[str, Any]) -> str:
        """The lifecycle stage of a profile."""
        if not p["orders"] or p["last_purchase_at"] is None:
            return "prospect"
        as_of = p["last_seen"]
        since_purchase = (as_of - p["last_purchase_at"]) / DAY_MS
        if (as_of - p["first_purchase_at"]) / DAY_MS <= self.new_days:
            return "new"
        if since_purchase > self.lapsed_days:
            return "lapsed"
        recent_complaint = any((as_of - c[0]) / DAY_MS <= self.at_risk_days
                               for c in p["complaint_cases"])
        if since_purchase > self.at_risk_days or recent_complaint or p["open_signals"]:
            return "at_risk"
        if p["orders"] >= self.loyal_orders:
            return "loyal"
        return "active"

    def tier(self, p: Mapping[str, Any], cutoffs: tuple[float, float]) -> str:
        """The value tier of a profile, given the (key, growth) spend cut-offs."""
        if p["first_purchase_at"] is None or \
                (p["last_seen"] - p["first_purchase_at"]) / DAY_MS <= self.new_days:
            return "new"
        spend = spend_12m(p)
        key, growth = cutoffs
        if spend >= key:
            return "key"
        if spend >= growth:
            return "growth"
        return "standard"


def spend_12m(p: Mapping[str, Any]) -> float:
    """Spend in the 12 calendar months up to the latest contact."""
    if p["last_seen"] is None:
        return 0.0
    end = datetime.fromtimestamp(p["last_seen"] / 1000, tz=UTC)
    first = (end.year * 12 + end.month - 1) - 11
    start = f"{first // 12:04d}{first % 12 + 1:02d}"
    return round(sum(v for m, v in p["spend_by_month"].items() if start <= m), 2)


class TierEstimator:
    """Spend cut-offs for key and growth customers, from the spend this worker has seen.

    A log-scale histogram (8 buckets per doubling) of each customer's trailing spend;
    quantiles from it are within about 9 % of the true value. The cut-offs are read for
    every event (the detector's and attribution's value tier) but change only when the
    emitter observes spend, so they are kept until then.
    """

    def __init__(self, rules: SegmentRules) -> None:
        self.rules = rules
        self._spend: dict[str, float] = {}
        self._buckets: dict[int, int] = {}
        self._cutoffs: tuple[float, float] | None = None

    def observe(self, customer_id: str, spend: float) -> None:
        """Record a customer's current trailing spend (replacing the previous value)."""
        self._cutoffs = None
        old = self._spend.get(customer_id)
        if old is not None:
            self._buckets[_bucket(old)] -= 1
        if spend > 0:
            self._spend[customer_id] = spend
            self._buckets[_bucket(spend)] = self._buckets.get(_bucket(spend), 0) + 1
        else:
            self._spend.pop(customer_id, None)

    def forget(self, customer_id: str) -> None:
        """Drop a customer (merged away)."""
        self.observe(customer_id, 0.0)

    def cutoffs(self) -> tuple[float, float]:
        """(key, growth) spend cut-offs."""
        if self._cutoffs is None:
            self._cutoffs = self._compute()
        return self._cutoffs

    def _compute(self) -> tuple[float, float]:
        population = len(self._spend)
        if population < self.rules.min_population:
            return self.rules.key_spend, self.rules.growth_spend
        return (self._quantile(1 - self.rules.key_share, population),
                self._quantile(1 - self.rules.key_share - self.rules.growth_share, population))

    def _quantile(self, q: float, population: int) -> float:
        rank = q * population
        seen = 0
        for bucket in sorted(self._buckets):
            seen += self._buckets[bucket]
            if seen >= rank:
                return float(2 ** (bucket / 8))
        return math.inf


def _bucket(spend: float) -> int:
    return math.floor(math.log2(max(spend, 1.0)) * 8)


def public_profile(p: Mapping[str, Any], rules: SegmentRules,
                   cutoffs: tuple[float, float]) -> dict[str, Any]:
    """The profile as published (``profiles.updates``, API): CONTRACT §4 fields and more."""
    satisfaction_n = p["csat_n"] + p["review_n"]
    return {
        "customer_id": p["customer_id"],
        "first_seen": p["first_seen"] or 0,
        "last_seen": p["last_seen"] or 0,
        "lifecycle_stage": rules.lifecycle(p),
        "value_tier": rules.tier(p, cutoffs),
        "total_spend": float(p["total_spend"]),
        "orders": p["orders"],
        "contacts_by_channel": dict(p["contacts_by_channel"]),
        "avg_satisfaction": round((p["csat_sum"] + p["review_sum"]) / satisfaction_n, 3)
        if satisfaction_n else None,
        "open_signals": p["open_signals"],
        "updated_at": p["last_seen"] or 0,
        "returns": p["returns"],
        "spend_12m": spend_12m(p),
        "last_purchase_at": p["last_purchase_at"],
        "contacts_by_category": dict(p["contacts_by_category"]),
        "last_contact": dict(p["last_contact"]),
        "nps_avg": round(p["nps_sum"] / p["nps_n"], 3) if p["nps_n"] else None,
        "complaints": p["complaints"],
        "identifiers": [],
        "revision": p["revision"],
    }


PROFILE_COLUMNS: tuple[str, ...] = (
    "customer_id", "first_seen", "last_seen", "lifecycle_stage", "value_tier", "total_spend",
    "spend_12m", "orders", "returns", "last_purchase_at",
    *(f"contacts_{channel}" for channel in _COLUMN_CHANNELS), "contacts_by_channel",
    "avg_satisfaction", "nps_avg", "complaints", "open_signals", "merged_into",
    "updated_at", "revision",
)


def profile_row(pub: Mapping[str, Any], *, merged_into: str = "",
                map_type: bool) -> tuple[Any, ...]:
    """One ``customer_profiles_raw`` row."""
    contacts = pub["contacts_by_channel"]
    by_channel: Any = ({k: int(v) for k, v in contacts.items()} if map_type
                       else json.dumps(contacts, sort_keys=True))
    return (
        pub["customer_id"], pub["first_seen"], pub["last_seen"], pub["lifecycle_stage"],
        pub["value_tier"], pub["total_spend"], pub["spend_12m"], pub["orders"],
        pub["returns"], pub["last_purchase_at"],
        *(int(contacts.get(c, 0)) for c in _COLUMN_CHANNELS), by_channel,
        pub["avg_satisfaction"], pub["nps_avg"], pub["complaints"], pub["open_signals"],
        merged_into, pub["updated_at"], pub["revision"],
    )


class Send(NamedTuple):
    """A record the profiles stage sends on to ``<app_id>-resolved``."""

    key: str
    value: bytes
    awaiting: tuple[str, ...] = ()  # for events: aliases to fold in before applying


class ProfileStage:
    """What the profiles stage does with one record of ``<app_id>-resolved``.

    ``handle`` updates the table and returns the records to send on (absorbed state for
    the customer a merge led to, or records forwarded past a merged-away id); after it,
    ``changed`` and ``merged`` say which profiles to publish and which ids are gone.
    Kept apart from the agent so the ordering rules are tested without Kafka.
    """

    def __init__(self, table: MutableMapping[str, Any], stats: dict[str, int],
                 detector: Detector | None = None,
                 attribution: Attributor | None = None) -> None:
        self.table = table
        self.stats = stats
        self.detector = detector
        self.attribution = attribution
        self.changed: set[str] = set()
        self.merged: dict[str, str] = {}
        self.signals: list[dict[str, Any]] = []  # complaint-signal records to publish
        self._event, self._merge = codec_for("event"), codec_for("merge")
        self._absorb = codec_for("absorb")

    def _count(self, name: str) -> None:
        self.stats[name] = self.stats.get(name, 0) + 1

    def handle(self, key: str, value: bytes, partition: int = 0,
               awaiting: Iterable[str] = ()) -> list[Send]:
        """Apply one record keyed by customer ``key``; return the records to send on.

        ``partition`` is the record's partition: complaint signals of that partition's
        customers that fell due by its event-time watermark are concluded with it.
        ``awaiting`` (events only) are the aliases the customer must have folded in
        before the event is applied; until then it is held.
        """
        sent = self._handle(key, value, partition, tuple(awaiting))
        if self.detector is not None:
            for customer in self.detector.sweep(partition):
                state = self.table.get(customer)
                if state is None or MERGED_INTO in state:
                    self.detector.forget(customer, partition)
                    continue
                records = self.detector.expire(state, partition)
                if records:
                    self.table[customer] = state
                    self.changed.add(customer)
                    self.signals += records
        return sent

    def _handle(self, key: str, value: bytes, partition: int,
                awaiting: tuple[str, ...]) -> list[Send]:
        subject = subject_of(value)
        current = self.table.get(key)
        if current is not None and MERGED_INTO in current:
            # This id was merged away. What still arrives for it (the state of a customer
            # merged into it earlier, sent from another partition; a repeat of an old
            # event) belongs to the customer it became: pass it on.
            target = current[MERGED_INTO]
            if subject == "merge":
                return self._merge_again(key, current, value)
            if subject == "absorb":
                record = self._absorb.decode(value)
                record["into_id"] = target
                value = self._absorb.encode(record)
            if subject == "event":
                # It may be counted in this id's state, which is on its way to the target
                # (or still to be sent again, after a crash): it waits there until that
                # state is folded in, then counts once.
                awaiting = tuple(dict.fromkeys((*awaiting, key)))
            if subject in ("absorb", "event"):
                self._count("forwarded")
                return [Send(target, value, awaiting)]
            return []
        if subject == "event":
            state = current or new_profile(key)
            event = self._event.decode(value)
            if awaiting and not set(awaiting).issubset(state["merged_from"]):
                self._hold(key, state, event, awaiting)
            elif self._apply(key, state, event, partition):
                self.table[key] = state
            return []
        if subject == "merge":
            into = self._merge.decode(value)["into_id"]
            # Sent even when this id has no profile: the customer it became may hold
            # events until it knows this id is folded in.
            state = current or new_profile(key)
            self.table[key] = {MERGED_INTO: into, MERGED_STATE: state}
            self.merged[key] = into
            self._count("merged_away")
            if self.detector is not None:
                self.detector.forget(key, partition)
            return [self._handover(key, into, state)]
        if subject == "absorb":
            other = json.loads(self._absorb.decode(value)["state"])
            if other["customer_id"] not in (current or {}).get("merged_from", ()):
                state = combine(current or new_profile(key), other)
                if self.detector is not None:
                    self.signals += self.detector.absorb(state, other.get(SIGNAL_KEY),
                                                         partition)
                if self.attribution is not None:
                    self.attribution.absorb(state, other.get(ATTRIBUTION_KEY))
                self._release(key, state, partition)
                self.table[key] = state
                self.changed.add(key)
                self._count("absorbed")
        return []

    def _handover(self, key: str, into: str, state: Mapping[str, Any]) -> Send:
        return Send(into, self._absorb.encode({"from_id": key, "into_id": into,
                                               "state": json.dumps(state)}))

    def _merge_again(self, key: str, marker: dict[str, Any], value: bytes) -> list[Send]:
        """A merge of ``key``, already merged away: send its state again (see the top)."""
        into = self._merge.decode(value)["into_id"]
        if into != marker[MERGED_INTO] or MERGED_STATE not in marker:
            return []
        self.table[key] = marker  # again: the changelog may not have the first write
        self._count("merged_again")
        return [self._handover(key, into, marker[MERGED_STATE])]

    def _apply(self, key: str, state: dict[str, Any], event: Mapping[str, Any],
               partition: int) -> bool:
        if not apply_event(state, event):
            self._count("repeats")
            return False
        if self.detector is not None:
            self.signals += self.detector.observe(state, event, partition)
        if self.attribution is not None:
            self.attribution.observe(state, event)
        self.changed.add(key)
        self._count("applied")
        return True

    def _hold(self, key: str, state: dict[str, Any], event: dict[str, Any],
              awaiting: tuple[str, ...]) -> None:
        held = state.setdefault("held", [])
        if any(e["event_id"] == event["event_id"] for _, e in held):
            self._count("repeats")
            return
        held.append([list(awaiting), event])
        self.table[key] = state
        self._count("held")

    def _release(self, key: str, state: dict[str, Any], partition: int) -> None:
        """Apply the held events whose awaited aliases are all folded in now."""
        held = state.pop("held", None)
        if not held:
            return
        folded = set(state["merged_from"])
        waiting = []
        for awaiting, event in held:
            if folded.issuperset(awaiting):
                self._apply(key, state, event, partition)
                self._count("released")
            else:
                waiting.append([awaiting, event])
        if waiting:
            state["held"] = waiting


# --- the agent ---------------------------------------------------------------------------

def register(app: faust.App, *, resolved: faust.TopicT, updates: faust.TopicT,
             signals: faust.TopicT, writer: RetryingWriter, stored: Behind,
             rules: SegmentRules,
             signal_rules: complaints.Rules, signal_lateness_ms: int, emit_seconds: float,
             map_type: bool, partitions: int, stats: dict[str, int],
             attribution: Attributor | None = None) -> Any:
    """Add the profiles table, agent and emitter to ``app``; return the table.

    With ``attribution``, campaign attribution runs on every applied event and merge
    (``campaigns.py``), and the emitter writes the exposure rows of the customers it
    publishes. The agent also stores every record it reads (events, merges, aliases)
    through ``stored``, which acknowledges each once its rows are in the warehouse.
    """
    # the app's tables are changelog.Table (app.py)
    profiles = cast(changelog.Table, app.Table("touchpoint-profiles", partitions=partitions,
                                               key_type=str))
    profile_codec = codec_for("profile")
    signal_codec = codec_for("complaint_signal")
    estimator = TierEstimator(rules)
    dirty: dict[str, int] = {}  # changed profiles: customer id -> partition
    merged: dict[str, str] = {}

    detector = Detector(signal_rules, lambda p: rules.tier(p, estimator.cutoffs()),
                        lateness_ms=signal_lateness_ms)
    stage = ProfileStage(profiles, stats, detector, attribution)
    updates_name = updates.get_topic_name()
    # batched per partition, waited for once per emit (outbox.py)
    update_box = Outbox(app)

    @app.agent(resolved, name="touchpoint.profiles")
    async def profile_agent(stream: faust.StreamT[bytes]) -> None:
        # each record is acknowledged by `stored`, once applied and stored
        async with stored.running(stream):
            async for event in stream.events():
                if is_current(app, event.message):
                    await handle(event)
                    await stored.add(event)
                else:
                    # revoked meanwhile: the partition's next owner reads it again (the
                    # consumer does not count this acknowledgement)
                    await stream.ack(event)

    async def handle(event: faust.EventT) -> None:
        key = event.key.decode() if isinstance(event.key, bytes) else str(event.key)
        awaiting = _awaited(event.message.headers)
        for out in stage.handle(key, event.value, event.message.partition, awaiting):
            headers = ([(AWAIT_HEADER, ",".join(out.awaiting).encode())]
                       if out.awaiting else None)
            await resolved.send(key=out.key.encode(), value=out.value, headers=headers)
        for record in stage.signals:
            stats["signals"] = stats.get("signals", 0) + 1
            await signals.send(key=record["customer_id"].encode(),
                               value=signal_codec.encode(record, check=False))
        stage.signals.clear()
        # all of them in the event's partition: its customer, and those its sweep concluded
        dirty.update(dict.fromkeys(stage.changed, event.message.partition))
        for gone, into in stage.merged.items():
            merged[gone] = into
            dirty.pop(gone, None)
        stage.changed.clear()
        stage.merged.clear()

    async def emit(keys: Mapping[str, int]) -> int:
        """Publish the profiles of ``keys`` (customer id -> partition) and the merges."""
        rows, count = [], 0
        exposures: list[tuple[Any, ...]] = []
        cutoffs = estimator.cutoffs()
        published: dict[str, int] = {}
        tombstones: dict[str, str] = {}
        for key, partition in keys.items():
            state = profiles.get_in(partition, key)
            if state is None:
                continue
            if MERGED_INTO in state:
                merged[key] = state[MERGED_INTO]  # written below, again if need be
                continue
            estimator.observe(key, spend_12m(state))
            pub = public_profile(state, rules, cutoffs)
            await update_box.send(updates_name, key.encode(),
                                  profile_codec.encode(pub, check=False))
            published[key] = partition
            rows.append(profile_row(pub, map_type=map_type))
            if attribution is not None:
                exposures += attribution.rows(state)
            count += 1
        for gone, into in list(merged.items()):
            estimator.forget(gone)
            await update_box.send(updates_name, gone.encode(), None)  # tombstone: compacted
            pub = public_profile(new_profile(gone), rules, cutoffs)
            pub["revision"] = 2**62  # a merged-away id never comes back
            rows.append(profile_row(pub, merged_into=into, map_type=map_type))
            tombstones[gone] = into
            del merged[gone]
        try:
            await update_box.delivered()
        except Exception as exc:  # the producer has spent its retries
            log.warning("%s: %d profile records not delivered (%s); sent again at the next "
                        "emit", updates_name, len(published) + len(tombstones), exc)
            dirty.update(published)
            merged.update(tombstones)
        if rows:
            positions = [(r[0], r[-1], 0) for r in rows]
            await writer.write(Batch("customer_profiles_raw", PROFILE_COLUMNS, rows,
                                     Batch.token_for("customer_profiles_raw", positions)))
        if exposures:
            await writer.write(Batch("campaign_attribution_raw", ATTRIBUTION_COLUMNS, exposures,
                                     Batch.token_for_rows("campaign_attribution_raw",
                                                          exposures)))
        return count

    state_box: dict[str, Any] = {"everything": True}

    @app.timer(interval=emit_seconds, name="touchpoint.profiles.emit")
    async def emitter() -> None:
        # After a start or rebalance, everything this worker holds is published once:
        # changes made before a crash may not have been.
        if state_box["everything"]:
            state_box["everything"] = False
            keys = {}
            detector.reset()
            for held in profiles:
                key = held.decode() if isinstance(held, bytes) else held
                where = app.producer.key_partition(resolved.get_topic_name(), key.encode())
                keys[key] = where.partition
                state = profiles.get_in(where.partition, key)
                if state is not None and MERGED_INTO not in state:
                    detector.track(state, where.partition)
        else:
            keys = dict(sorted(dirty.items()))
        dirty.clear()
        started = time.monotonic()
        count = await emit(keys)
        stats["emitted"] = stats.get("emitted", 0) + count
        if count:
            log.debug("emitted %d profiles in %.2fs", count, time.monotonic() - started)

    @app.on_rebalance_complete.connect  # type: ignore[arg-type]  # mode types sync receivers
    async def _rebalanced(sender: Any, **kwargs: Any) -> None:
        state_box["everything"] = True

    profiles.estimator = estimator
    return profiles


def _awaited(headers: Any) -> tuple[str, ...]:
    """The aliases named by a record's await header (see ``identity.AWAIT_HEADER``)."""
    if not headers:
        return ()
    items = headers.items() if isinstance(headers, Mapping) else headers
    for name, value in items:
        if name == AWAIT_HEADER and value:
            return tuple(value.decode().split(","))
    return ()


def profile_lookup(profiles: Any, rules: SegmentRules) -> Callable[[str], dict[str, Any] | None]:
    """A function returning the public profile of a customer held by this worker."""
    def lookup(customer_id: str) -> dict[str, Any] | None:
        state = profiles.get(customer_id)
        if state is None or MERGED_INTO in state:
            return None
        pub = public_profile(state, rules, profiles.estimator.cutoffs())
        pub["merged_from"] = state["merged_from"]
        pub["scores"] = state["scores"]
        pub["complaint_cases"] = state["complaint_cases"]
        episode = (state.get(SIGNAL_KEY) or {}).get("episode")
        pub["signal"] = None if episode is None else {
            k: episode[k] for k in ("signal_id", "severity", "status", "reasons",
                                    "detected_at", "escalated_at")}
        return pub
    return lookup
