"""Every output the compiled modules give for ten simulated days, printed as JSON lines.

Run as ``python -m tests.unit.rules_outputs``; ``test_compiled.py`` runs it on the
compiled build and on the Python sources (``TOUCHPOINT_PURE_PYTHON=1``) and requires the
same text. JSON keeps what a compiled build could change unseen: ``1`` against ``1.0``,
key order, rounding. The traffic goes the way the worker takes it, without Kafka:
ingest (codec, contract checks, normalization, the key's murmur2), the identity graph
(and the partition of the customer's records), the profiles stage
with its complaint detector and attribution (batches of 50, events passed on after a
merge fed back), profile rows, and the per-minute rows in batches.
"""

from __future__ import annotations

import json
import sys
from collections import deque
from datetime import UTC, datetime, timedelta
from typing import Any

from touchpoint.schemas.codec import codec_for
from touchpoint.schemas.contract import CHANNELS, COMMON_FIELDS
from touchpoint.sim import scenarios
from touchpoint.streams.rules import identity
from touchpoint.streams.rules.campaigns import Attributor
from touchpoint.streams.rules.complaints import Rules
from touchpoint.streams.rules.minute_rows import MinuteStage
from touchpoint.streams.rules.normalize import Accepted, Ingestor
from touchpoint.streams.rules.profile import profile_row, public_profile
from touchpoint.streams.rules.profile_batches import Record
from touchpoint.streams.rules.segments import SegmentRules
from touchpoint.streams.runtime.partition import key_partition, murmur2

from .streams.stages.test_profile_batches import JsonTable, _stage

BATCH = 50
PARTITIONS = [0, 1, 2, 3, 4, 5]


def _line(kind: str, value: Any) -> str:
    return json.dumps([kind, value], sort_keys=True, default=repr)


def outputs(*, customers: int, seed: int) -> list[str]:
    scenario = scenarios.generate(seed=seed, customers=customers,
                                  start=datetime(2026, 3, 1, tzinfo=UTC), days=10.0)
    ingestor = Ingestor(pii_salt="twin", phone_region="CN", worker="twin",
                        clock=lambda: 1_780_000_000.0)
    codecs = {channel: codec_for(channel) for channel in CHANNELS}
    merge_codec = codec_for("merge")
    graph = identity.IdentityGraph({}, {})
    rules = Rules.load()
    minutes = MinuteStage(rules, grace=timedelta(minutes=2))
    table = JsonTable()
    stage = _stage(table)
    attribution: Attributor = stage.attribution
    lines: list[str] = []
    pending: deque[Record] = deque()
    normalized: list[dict[str, Any]] = []

    def drain() -> None:
        while pending:
            batch = [pending.popleft() for _ in range(min(BATCH, len(pending)))]
            for handled in stage.handle_batch(batch):
                lines.append(_line("signals", handled.signals))
                pending.extend(Record(s.key, s.value, s.awaiting) for s in handled.sends)

    for offset, (channel, event) in enumerate(scenario.events):
        record = {name: event.get(name) for name in (*COMMON_FIELDS, *CHANNELS[channel].fields)}
        record["attributes"] = dict(event.get("attributes") or {})
        outcome = ingestor.process(channel, None, codecs[channel].encode(record),
                                   topic=f"touchpoints.{channel}", partition=0, offset=offset,
                                   timestamp_ms=None)
        if not isinstance(outcome, Accepted):
            lines.append(_line("rejected", outcome))
            continue
        lines.append(_line("accepted", [outcome.key.hex(), outcome.value.hex(), outcome.event,
                                        murmur2(outcome.key)]))
        normalized.append(outcome.event)
        resolution = graph.resolve(identity.identifiers_of(outcome.event),
                                   outcome.event["event_id"])
        lines.append(_line("resolved", [resolution, key_partition(
            resolution.customer_id.encode(), PARTITIONS)]))
        for merge in (*resolution.merges, *resolution.repeated):
            pending.append(Record(merge.merged_id, merge_codec.encode({
                "merged_id": merge.merged_id, "into_id": merge.into_id,
                "merged_at": outcome.event["occurred_at"], "event_id": outcome.event["event_id"],
                "identifiers": list(merge.identifiers), "aliases": list(merge.aliases),
                "recorded_at": 0})))
        pending.append(Record(resolution.customer_id, outcome.value, resolution.awaits))
        if len(pending) >= BATCH:
            drain()
    drain()
    for start in range(0, len(normalized), BATCH):
        lines.append(_line("minutes", minutes.add(normalized[start:start + BATCH])))
    segment_rules = SegmentRules()
    for customer, raw in sorted(table.raw().items()):
        state = json.loads(raw)
        lines.append(_line("profile state", [customer, state]))
        if "customer_id" in state and "merged_into" not in state:
            public = public_profile(state, segment_rules, (500.0, 100.0))
            lines.append(_line("profile", public))
            lines.append(_line("profile row", profile_row(public, map_type=False)))
            lines.append(_line("attribution rows", attribution.rows(state)))
    lines.append(_line("stats", [stage.stats, minutes.stats]))
    return lines


def main() -> None:
    customers, seed = (int(arg) for arg in sys.argv[1:3])
    sys.stdout.write("\n".join(outputs(customers=customers, seed=seed)) + "\n")


if __name__ == "__main__":
    main()
