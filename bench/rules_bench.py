"""Benchmark: the stages' own work per event, in-process, on the simulator's traffic.

Not a test. No Kafka, no warehouse, no tables on disk: it times the rules a worker runs
for every event, on the events the throughput benchmark pre-loads (the simulator's mix,
fixed seed and event-time origin), so that a change to a rule can be measured without the
spread of a whole drain. Per event, median of ``--runs`` runs (and their spread):

* ingest: decode the Avro record, check it against the contract, normalize it
  (``Ingestor.process``);
* minutes: the per-minute windows of each of ``--partitions`` input partitions, fed in
  batches of 5,000 as the minutes stage takes them (``MinuteStage.add``);
* profiles: the profiles stage on each partition in batches of 1,000, its tables in
  memory (``ProfileStage.handle_batch``, the event decoded from its packed form), then the
  same without the complaint detector, then without attribution: the differences are
  what those two cost.

    .venv/bin/python bench/rules_bench.py                   # 200,000 events, 25,000 customers
    .venv/bin/python bench/rules_bench.py --events 50000    # quicker
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import throughput_bench as tb  # the sibling benchmark: its backlog, event for event

from touchpoint import compiled
from touchpoint.schemas import contract
from touchpoint.schemas.codec import codec_for
from touchpoint.settings import load_settings
from touchpoint.streams.rules import attribution, campaigns, complaints
from touchpoint.streams.rules.identity import provisional_customer_id
from touchpoint.streams.rules.minute_rows import MinuteStage
from touchpoint.streams.rules.normalize import Accepted, Ingestor
from touchpoint.streams.rules.segments import SegmentRules, TierEstimator
from touchpoint.streams.rules.signals import Detector
from touchpoint.streams.runtime.partition import key_partition
from touchpoint.streams.stages.profiles import Applied, ProfileStage, Record

MINUTE_BATCH = 5000
PROFILE_BATCH = 1000


def timed(runs: int, count: int, work: Callable[[], None]) -> list[float]:
    """Microseconds per event of ``runs`` runs of ``work`` over ``count`` events."""
    spent = []
    for _ in range(runs):
        began = time.perf_counter()
        work()
        spent.append((time.perf_counter() - began) / count * 1e6)
    return spent


def report(name: str, spent: list[float]) -> float:
    median = statistics.median(spent)
    print(f"  {name:<34} {median:7.1f} µs/event   ({', '.join(f'{s:.1f}' for s in spent)})")
    return median


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000, help="simulated events")
    parser.add_argument("--customers", type=int, default=25_000, help="CRM customers")
    parser.add_argument("--seed", type=int, default=1, help="simulator seed")
    parser.add_argument("--start-ms", type=int, default=tb.DEFAULT_START_MS,
                        help="event-time origin of the simulation (epoch ms)")
    parser.add_argument("--partitions", type=int, default=6,
                        help="input partitions the events are split over, by their key")
    parser.add_argument("--runs", type=int, default=3, help="timed runs of each part")
    args = parser.parse_args()

    # the defaults; a fixed salt (the bench must not create the local secret files)
    settings = load_settings({}, create_secrets=False, pii_salt="bench-salt-0123456789")
    print(f"rules benchmark: {args.events:,} events over {args.customers:,} customers "
          f"(seed {args.seed}), {args.partitions} partitions, {args.runs} runs each; "
          f"build: {compiled.state()}")
    began = time.perf_counter()
    backlog = tb.Backlog(args.events, args.customers, args.seed, args.start_ms,
                         settings.phone_region, hot_customer="", hot_events=0, memory=False)
    inbound = [(channel, key, value) for channel, value, key in backlog.records()]
    ingestor = Ingestor(pii_salt=settings.pii_salt, phone_region=settings.phone_region,
                        worker="bench")
    outcomes: list[Any] = []

    def ingest() -> None:
        outcomes.clear()
        contract._phone_digits.cache_clear()  # each run parses the phones again
        for offset, (channel, key, value) in enumerate(inbound):
            outcomes.append(ingestor.process(channel, key, value, topic=channel, partition=0,
                                             offset=offset, timestamp_ms=None))

    for channel, key, value in inbound[:2000]:  # loads what loads on first use (phone data)
        ingestor.process(channel, key, value, topic=channel, partition=0, offset=0,
                         timestamp_ms=None)
    print(f"  prepared in {time.perf_counter() - began:.1f} s")
    report("ingest (decode, check, normalize)", timed(args.runs, len(inbound), ingest))
    accepted = [o for o in outcomes if isinstance(o, Accepted)]
    codec = codec_for("event")
    parts: list[list[Accepted]] = [[] for _ in range(args.partitions)]
    for outcome in accepted:
        parts[key_partition(outcome.key, list(range(args.partitions)))].append(outcome)
    count = len(accepted)
    rules = complaints.Rules.load(settings.signal_rules or None)

    def minutes() -> None:
        for number, part in enumerate(parts):
            stage = MinuteStage(rules, grace=timedelta(seconds=settings.aggregate_grace_seconds),
                                part=number)
            events = [codec.decode(o.value) for o in part]
            for at in range(0, len(events), MINUTE_BATCH):
                stage.add(events[at:at + MINUTE_BATCH])

    report("minutes (incl. unpacking)", timed(args.runs, count, minutes))

    def profiles(detector: bool, attributor: bool) -> Callable[[], None]:
        def run() -> None:
            segments = SegmentRules(
                at_risk_days=settings.at_risk_days, lapsed_days=settings.lapsed_days,
                key_share=settings.key_tier_share, growth_share=settings.growth_tier_share)
            estimator = TierEstimator(segments)
            found = Detector(rules, lambda p, at: segments.tier(p, estimator.cutoffs(), at),
                             lateness_ms=settings.signal_lateness_seconds * 1000)
            attributed = campaigns.Attributor(
                model=attribution.model_for(settings.attribution_model),
                window=timedelta(days=settings.attribution_window_days),
                tier_of=lambda p: segments.tier(p, estimator.cutoffs()))
            stage = ProfileStage({}, {}, found if detector else None,
                                 attributed if attributor else None, applied=Applied())
            for number, part in enumerate(parts):
                for at in range(0, len(part), PROFILE_BATCH):
                    stage.handle_batch(
                        [Record(provisional_customer_id(o.event), o.value, (), at + n,
                                codec.decode(o.value))
                         for n, o in enumerate(part[at:at + PROFILE_BATCH])], number)
                    stage.changed.clear()
        return run

    whole = report("profiles stage (incl. unpacking)", timed(args.runs, count,
                                                             profiles(True, True)))
    without = report("  without the complaint detector", timed(args.runs, count,
                                                               profiles(False, True)))
    bare = report("  without attribution either", timed(args.runs, count,
                                                        profiles(False, False)))
    print(f"  so: the detector about {whole - without:.1f} µs/event, attribution about "
          f"{without - bare:.1f} µs/event")


if __name__ == "__main__":
    main()
