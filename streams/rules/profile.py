"""Profile arithmetic: a customer's state, events and merges folded in, its published rows.

A profile is a plain JSON-able dict (it lives in the profiles stage's changelog-backed
table). Every field is a sum, a minimum or maximum of event times, or a value chosen by
event time, so applying the same events in any order, or combining two customers'
profiles, gives the state of the whole history. Its size does not depend on how many
events it counts: which events those are is kept by the profiles stage, one key per
event (:func:`event_digest`), so that a repeat counts once however late it comes (see
``docs/design/identity.md``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from touchpoint.streams.rules.complaint_replay import episode_of

# the one digest of an event id, shared with the complaint detector
from touchpoint.streams.rules.complaints import event_digest
from touchpoint.streams.rules.segments import SegmentRules, month_key, spend_12m
from touchpoint.streams.rules.signals import SIGNAL_KEY

__all__ = [
    "PROFILE_COLUMNS",
    "apply_event",
    "combine",
    "detailed_profile",
    "event_digest",
    "merged_away_row",
    "new_profile",
    "profile_row",
    "public_profile",
]

RECENT_SCORES = 10
# The channels with a contacts_<channel> column of their own in customer_profiles_raw. Not
# contract.CHANNELS: these columns are fixed by migration 0003, so a channel added to the
# contract is counted in contacts_by_channel (which has every channel) until a migration
# gives it a column and it is added here.
_COLUMN_CHANNELS = ("web", "store", "callcenter", "campaign", "feedback")
# The revision of a merged-away id's row: higher than any real one, so it is kept
MERGED_AWAY_REVISION = 2**62


def new_profile(customer_id: str) -> dict[str, Any]:
    """An empty profile."""
    return {
        "customer_id": customer_id, "first_seen": None, "last_seen": None,
        "contacts_by_channel": {}, "contacts_by_category": {}, "last_contact": {},
        "total_spend": 0.0, "orders": 0, "returns": 0, "first_purchase_at": None,
        "last_purchase_at": None, "spend_by_month": {},
        "csat_sum": 0, "csat_n": 0, "review_sum": 0, "review_n": 0, "nps_sum": 0, "nps_n": 0,
        "scores": [], "complaints": 0, "complaint_cases": [], "open_signals": 0,
        "revision": 0, "merged_from": [],
    }


def _min(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else min(a, b)


def _max(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else max(a, b)


def apply_event(profile: dict[str, Any], event: dict[str, Any]) -> None:
    """Add one normalized event to ``profile`` in place (the caller knows it is new)."""
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
            _add(profile["spend_by_month"], month_key(when), amount)
    elif kind == "return" and channel == "store":
        profile["returns"] += 1
        if amount:
            profile["total_spend"] = round(profile["total_spend"] - amount, 2)
            _add(profile["spend_by_month"], month_key(when), -amount)
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
    into["merged_from"] = sorted({*into["merged_from"], other["customer_id"],
                                  *other["merged_from"]})
    if other.get("held"):  # events the merged-away customer was still holding
        into["held"] = [*into.get("held", []), *other["held"]]
    into["revision"] = max(into["revision"], other["revision"]) + 1
    return into


def _add(counter: dict[str, Any], key: str, amount: int | float) -> None:
    value = counter.get(key, 0) + amount
    counter[key] = round(value, 2) if isinstance(value, float) else value


def _latest(items: list[list[Any]], keep: int) -> list[list[Any]]:
    # sorted by (time, rest) so the same set always gives the same list
    return sorted(items, key=lambda item: [item[0], *map(str, item[1:])])[-keep:]


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


def merged_away_row(customer_id: str, into: str, rules: SegmentRules,
                    cutoffs: tuple[float, float], *, map_type: bool) -> tuple[Any, ...]:
    """The ``customer_profiles_raw`` row of a customer merged ``into`` another one."""
    pub = public_profile(new_profile(customer_id), rules, cutoffs)
    pub["revision"] = MERGED_AWAY_REVISION  # a merged-away id never comes back
    return profile_row(pub, merged_into=into, map_type=map_type)


def detailed_profile(state: Mapping[str, Any], rules: SegmentRules,
                     cutoffs: tuple[float, float]) -> dict[str, Any]:
    """The public profile with what the customer API adds: merges, scores, the signal."""
    pub = public_profile(state, rules, cutoffs)
    pub["merged_from"] = state["merged_from"]
    pub["scores"] = state["scores"]
    pub["complaint_cases"] = state["complaint_cases"]
    episode = episode_of(state.get(SIGNAL_KEY))
    pub["signal"] = None if episode is None else {
        k: episode[k] for k in ("signal_id", "severity", "status", "reasons",
                                "detected_at", "escalated_at")}
    return pub
