"""Shared by the campaign tests: scenario events as the pipeline sees them, and reports.

Events go through the real ingest normalization (Avro encode, contract check, hashing,
epoch ms); attribution and aggregates are the pure stages; the reports are computed
here from their rows the way the warehouse views compute them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from touchpoint.schemas.codec import codec_for
from touchpoint.schemas.contract import CHANNELS, COMMON_FIELDS
from touchpoint.sim.scenarios import ScenarioEvent
from touchpoint.streams.rules.aggregates import MinuteWindows
from touchpoint.streams.rules.attribution import (
    LAST_TOUCH,
    AttributionModel,
    AttributionState,
    combine,
    observe,
)
from touchpoint.streams.rules.identity import IdentityGraph, identifiers_of
from touchpoint.streams.rules.normalize import Accepted, Ingestor

FLAGS = ("exposed", "delivered", "opened", "clicked", "responded", "converted")


def normalize(events: Sequence[ScenarioEvent]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(raw event, normalized event) pairs, through the real ingest code."""
    ingestor = Ingestor(pii_salt="test-salt", phone_region="CN", sentiment=lambda text: None,
                        clock=lambda: 1_800_000_000.0)
    out = []
    for offset, (channel, event) in enumerate(events):
        record = {name: event.get(name) for name in (*COMMON_FIELDS, *CHANNELS[channel].fields)}
        record["attributes"] = dict(event.get("attributes") or {})
        accepted = ingestor.process(channel, None, codec_for(channel).encode(record),
                                    topic=f"touchpoints.{channel}", partition=0,
                                    offset=offset, timestamp_ms=None)
        assert isinstance(accepted, Accepted), accepted
        out.append((event, accepted.event))
    return out


def final_customer(expected: Mapping[str, Any]) -> Callable[[Mapping[str, Any]], str]:
    """Who a raw scenario event belongs to in the end (the scenario's final mapping)."""
    owner = {identifier: c["customer_id"] for c in expected["customers"]
             for identifier in c["identifiers"]}

    def of(event: Mapping[str, Any]) -> str:
        for kind in ("customer_id", "email", "anonymous_id"):
            if event.get(kind):
                return owner.get(f"{kind}:{event[kind]}", event[kind])
        raise AssertionError(f"no identifier in {event}")
    return of


def attribute(items: Iterable[tuple[str, Mapping[str, Any]]], *,
              model: AttributionModel = LAST_TOUCH
              ) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
    """Run attribution over (customer, event) in order; (stored rows by id, all rows).

    The stored row per exposure is the one a ReplacingMergeTree keeps: highest version,
    the last written among equals.
    """
    states: dict[str, AttributionState] = {}
    emitted: list[dict[str, Any]] = []
    for customer, event in items:
        state = states.setdefault(customer, AttributionState(customer))
        _, rows = observe(state, event, model=model)
        emitted.extend(rows)
    return stored(emitted), emitted


def attribute_through_identity(events: Iterable[Mapping[str, Any]]
                               ) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
    """Route normalized events as the identity stage does; merges combine states."""
    graph = IdentityGraph({}, {})
    states: dict[str, AttributionState] = {}
    emitted: list[dict[str, Any]] = []
    for event in events:
        resolution = graph.resolve(identifiers_of(event))
        for merge in resolution.merges:
            gone = states.pop(merge.merged_id, None)
            into = states.setdefault(merge.into_id, AttributionState(merge.into_id))
            if gone is not None:
                emitted.extend(combine(into, gone)[1])
        state = states.setdefault(resolution.customer_id,
                                  AttributionState(resolution.customer_id))
        emitted.extend(observe(state, event)[1])
    return stored(emitted), emitted


def stored(rows: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """What the table keeps per exposure id: the highest version, last written on ties."""
    kept: dict[str, dict[str, Any]] = {}
    for row in rows:
        old = kept.get(row["exposure_id"])
        if old is None or row["version"] >= old["version"]:
            kept[row["exposure_id"]] = dict(row)
    return kept


def campaign_report(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The campaign report over stored rows (retracted ones left out), as expected.json."""
    groups: dict[tuple[str, str, str], dict[str, Any]] = {}
    for row in rows:
        if row["retracted"]:
            continue
        key = (row["campaign_id"], row["medium"], row["variant"])
        group = groups.setdefault(key, {**dict.fromkeys(FLAGS, 0), "revenue": 0.0})
        group["exposed"] += 1
        for flag in ("delivered", "opened", "clicked"):
            group[flag] += row[flag]
        group["responded"] += row["responded_at"] is not None
        group["converted"] += row["converted_at"] is not None
        group["revenue"] += row["revenue"]
    return [{"campaign_id": c, "medium": m, "variant": v, **{f: g[f] for f in FLAGS},
             "revenue": round(g["revenue"], 2)} for (c, m, v), g in sorted(groups.items())]


def aggregate(events: Iterable[tuple[str, Mapping[str, Any]]], windows: MinuteWindows
              ) -> list[dict[str, Any]]:
    """Feed (customer, event) to ``windows``; every row written, then the open minutes."""
    rows: list[dict[str, Any]] = []
    for customer, event in events:
        added = windows.add(event, negative=False, customer_id=customer)
        rows.extend(added.closed)
        rows.extend({**r, "late": True} for r in added.late)
    return rows + windows.snapshot()


def minute_report(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Events and revenue per minute x channel from minute rows (highest version per key)."""
    kept: dict[tuple[Any, ...], Mapping[str, Any]] = {}
    for row in rows:
        key = (row["minute"], row["channel"], row["type"], row["store_id"], row["campaign_id"],
               row["part"], row.get("batch"))
        if key not in kept or row["version"] >= kept[key]["version"]:
            kept[key] = row
    totals: dict[tuple[int, str], list[float]] = defaultdict(lambda: [0, 0.0])
    for row in kept.values():
        cell = totals[row["minute"], row["channel"]]
        cell[0] += row["events"]
        cell[1] += row["revenue"]
    return [{"minute": datetime.fromtimestamp(m / 1000, UTC).isoformat(timespec="milliseconds"),
             "channel": ch, "events": int(n), "revenue": round(amount, 2)}
            for (m, ch), (n, amount) in sorted(totals.items())]


# --- a warehouse loaded with a scenario ------------------------------------------------------

def load_warehouse(warehouse: Any, events: Sequence[ScenarioEvent], *,
                   batches: int = 4) -> dict[str, Any]:
    """Store a scenario as the pipeline would: events, attribution, minutes, aliases.

    Every attribution row the stages emitted is inserted, in order, over ``batches``
    inserts (old versions included, and the last batch twice, as after a retried write):
    the tables must resolve them to the exact figures. Returns what was computed.
    """
    from touchpoint.streams.rules.aggregates import (
        LATE_COLUMNS,
        MINUTE_COLUMNS,
        is_negative,
        row_values,
    )
    from touchpoint.streams.rules.attribution import ATTRIBUTION_COLUMNS
    from touchpoint.streams.rules.attribution import row_values as attribution_values
    from touchpoint.streams.rules.complaints import Rules
    from touchpoint.streams.rules.rows import ALIAS_COLUMNS, EVENT_COLUMNS, event_row

    pairs = normalize(events)
    graph = IdentityGraph({}, {})
    states: dict[str, AttributionState] = {}
    emitted: list[dict[str, Any]] = []
    event_rows, aliases = [], []
    windows = MinuteWindows()
    rules = Rules.load()
    minute_rows: list[dict[str, Any]] = []
    late_rows: list[dict[str, Any]] = []
    for _, event in pairs:
        resolution = graph.resolve(identifiers_of(event))
        for merge in resolution.merges:
            aliases.append((merge.merged_id, merge.into_id, event["occurred_at"]))
            gone = states.pop(merge.merged_id, None)
            into = states.setdefault(merge.into_id, AttributionState(merge.into_id))
            if gone is not None:
                emitted.extend(combine(into, gone)[1])
        customer = resolution.customer_id
        event_rows.append(event_row(event, 1, customer))
        state = states.setdefault(customer, AttributionState(customer))
        emitted.extend(observe(state, event)[1])
        added = windows.add(event, negative=is_negative(event, rules), customer_id=customer)
        minute_rows.extend(added.closed)
        late_rows.extend(added.late)
    minute_rows.extend(windows.snapshot())
    warehouse.insert("touchpoint_events_raw", EVENT_COLUMNS, event_rows)
    warehouse.insert("customer_aliases", ALIAS_COLUMNS, aliases)
    size = max(1, -(-len(emitted) // batches))
    chunks = [emitted[i:i + size] for i in range(0, len(emitted), size)]
    for chunk in [*chunks, chunks[-1]]:
        warehouse.insert("campaign_attribution_raw", ATTRIBUTION_COLUMNS,
                         [attribution_values(r) for r in chunk])
    warehouse.insert("touchpoint_minute_raw", MINUTE_COLUMNS,
                     [row_values(r) for r in minute_rows])
    if late_rows:
        warehouse.insert("touchpoint_minute_late_raw", LATE_COLUMNS,
                         [row_values(r, LATE_COLUMNS) for r in late_rows])
    return {"pairs": pairs, "emitted": emitted, "stored": stored(emitted),
            "minute_rows": minute_rows, "late_rows": late_rows}
