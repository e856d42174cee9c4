"""Benchmark: the stages' own work per event, in-process, on the simulator's traffic.

Not a test. No Kafka, no warehouse, no tables on disk: it times the rules a worker runs
for every event, on the events the throughput benchmark pre-loads (the simulator's mix,
fixed seed and event-time origin), so that a change to a rule can be measured without the
spread of a whole drain. Per event, median of ``--runs`` runs (and their spread):

* ingest: decode the Avro record, check it against the contract, normalize it
  (``Ingestor.process``);
* minutes: the per-minute windows of each of ``--partitions`` input partitions, fed in
  batches of 5,000 as the minutes stage takes them (``MinuteStage.add``);
* minutes-fetched: the same, with the events in the order a worker forwards them from a
  backlog: the client fetches up to 1 MiB of each inbound partition in turn, and ingest
  forwards each fetch whole, so most of them reach the windows late (printed);
* profiles: the profiles stage on each partition in batches of 1,000, its tables in
  memory (``ProfileStage.handle_batch``, the event decoded from its packed form), then the
  same without the complaint detector, then without attribution: the differences are
  what those two cost;
* profiles-fetched: the profiles stage with the events in a backlog's order, as for
  minutes-fetched (how the detector placed the contacts is printed for both orders);
* emitter: what the profiles emitter does to publish each profile the stage made of the
  traffic (``ProfilePublisher.publication``: the public profile and its Avro record, its
  warehouse row, its exposure rows, the tier estimator), per profile, not per event.

The garbage collector is tuned as in the worker (``streams/runtime/memory.py``) once the
inputs are prepared.

    .venv/bin/python bench/rules_bench.py                   # 200,000 events, 25,000 customers
    .venv/bin/python bench/rules_bench.py --events 50000    # quicker

Timings on a shared machine move by 20 % from run to run. ``--instructions`` counts
instead: for each part it runs this script under valgrind (``cachegrind``, no cache
simulation) twice, with the part run ``--runs`` times and not at all (``--only PART``),
and prints the difference in instructions per event, which is the same on every run
(``PYTHONHASHSEED=0``). About a minute a part for 10,000 events.

    .venv/bin/python bench/rules_bench.py --instructions --events 10000 --runs 2
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from typing import Any, cast

import throughput_bench as tb  # the sibling benchmark: its backlog, event for event

from touchpoint import compiled
from touchpoint.schemas import contract
from touchpoint.schemas.codec import codec_for
from touchpoint.settings import Settings, load_settings
from touchpoint.streams.rules import attribution, campaigns, complaints
from touchpoint.streams.rules.identity import provisional_customer_id
from touchpoint.streams.rules.minute_rows import MinuteStage
from touchpoint.streams.rules.normalize import Accepted, Ingestor
from touchpoint.streams.rules.profile_batches import MERGED_INTO, Applied, ProfileStage, Record
from touchpoint.streams.rules.segments import SegmentRules, TierEstimator
from touchpoint.streams.rules.signals import Detector
from touchpoint.streams.runtime import memory
from touchpoint.streams.runtime.partition import key_partition
from touchpoint.streams.stages.profiles import ProfilePublisher

MINUTE_BATCH = 5000
PROFILE_BATCH = 1000
PARTS = ("ingest", "minutes", "minutes-fetched", "profiles", "profiles-fetched",
         "profiles-without-detector", "profiles-bare", "emitter")


#: What the client fetches of a partition at a time (Kafka's ``max.partition.fetch.bytes``).
FETCH_BYTES = 1024 * 1024


def fetched_order(inbound: list[tuple[str, bytes, bytes]], outcomes: list[Any],
                  partitions: int) -> list[list[Accepted]]:
    """Each output partition's accepted events in the order ingest forwards a backlog.

    The inbound records of every channel topic are split over ``partitions`` by key, as
    the topics split them; then a fetch of each inbound partition in turn, up to
    :data:`FETCH_BYTES` of its records, is forwarded whole, until all are.
    """
    numbers = list(range(partitions))
    queues: dict[tuple[str, int], list[int]] = {}
    for index, (channel, key, _) in enumerate(inbound):
        queues.setdefault((channel, key_partition(key, numbers)), []).append(index)
    ordered: list[list[Accepted]] = [[] for _ in numbers]
    at = dict.fromkeys(queues, 0)
    while any(at[tp] < len(queue) for tp, queue in queues.items()):
        for tp, queue in sorted(queues.items()):
            size = 0
            while at[tp] < len(queue) and size < FETCH_BYTES:
                index = queue[at[tp]]
                at[tp] += 1
                size += len(inbound[index][2])
                outcome = outcomes[index]
                if isinstance(outcome, Accepted):
                    ordered[key_partition(outcome.key, numbers)].append(outcome)
    return ordered


def timed(runs: int, count: int, work: Callable[[], None]) -> list[float]:
    """Microseconds per event of ``runs`` runs of ``work`` over ``count`` events."""
    spent = []
    for _ in range(runs):
        began = time.perf_counter()
        work()
        spent.append((time.perf_counter() - began) / count * 1e6)
    return spent


def report(name: str, spent: list[float], unit: str = "event") -> float:
    median = statistics.median(spent)
    print(f"  {name:<34} {median:7.1f} µs/{unit}   ({', '.join(f'{s:.1f}' for s in spent)})")
    return median


def segment_rules(settings: Settings) -> SegmentRules:
    """The lifecycle and tier rules as the worker reads them from its settings."""
    return SegmentRules(
        at_risk_days=settings.at_risk_days, lapsed_days=settings.lapsed_days,
        key_share=settings.key_tier_share, growth_share=settings.growth_tier_share)


def attributor(settings: Settings, segments: SegmentRules,
               estimator: TierEstimator) -> campaigns.Attributor:
    """Campaign attribution as the worker sets it up."""
    return campaigns.Attributor(
        model=attribution.model_for(settings.attribution_model),
        window=timedelta(days=settings.attribution_window_days),
        tier_of=lambda p: segments.tier(p, estimator.cutoffs()))


def profile_stage(settings: Settings, rules: complaints.Rules, table: dict[str, Any], *,
                  detector: bool = True, attributor_on: bool = True) -> ProfileStage:
    """The profiles stage's rules as the worker sets them up, over ``table`` (no Kafka)."""
    segments = segment_rules(settings)
    estimator = TierEstimator(segments)
    found = Detector(rules, lambda p, at: segments.tier(p, estimator.cutoffs(), at),
                     lateness_ms=settings.signal_lateness_seconds * 1000)
    return ProfileStage(table, {}, found if detector else None,
                        attributor(settings, segments, estimator) if attributor_on else None,
                        applied=Applied())


def publisher(settings: Settings) -> ProfilePublisher:
    """The profiles emitter as the worker sets it up, without Kafka or a warehouse."""
    segments = segment_rules(settings)
    estimator = TierEstimator(segments)
    return ProfilePublisher(
        cast(Any, object()), cast(Any, {}), updates="profiles.updates",
        writer=cast(Any, None), rules=segments, estimator=estimator,
        map_type=True, attribution=attributor(settings, segments, estimator))


def count_instructions(args: argparse.Namespace) -> None:
    """Instructions per event of each part: this script under cachegrind, with and without it."""
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        sys.exit("--instructions needs valgrind (Debian: apt-get install valgrind)")
    common = [sys.executable, __file__, "--events", str(args.events), "--customers",
              str(args.customers), "--seed", str(args.seed), "--start-ms", str(args.start_ms),
              "--partitions", str(args.partitions)]
    env = {**os.environ, "PYTHONHASHSEED": "0"}  # the same dict orders on every run

    def instructions(only: str, runs: int) -> tuple[int, int]:
        """Instructions of a run, and the events the part handles once a run."""
        done = subprocess.run(
            [valgrind, "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null",
             *common, "--only", only, "--runs", str(runs)],
            env=env, capture_output=True, text=True, check=False)
        found = re.search(r"I\s+refs:\s+([\d,]+)", done.stderr)
        events = re.search(r"events: (\d+) inbound, (\d+) accepted, (\d+) profiles",
                           done.stdout)
        if done.returncode or found is None or events is None:
            sys.exit(f"valgrind run of --only {only} --runs {runs} failed:\n"
                     f"{done.stderr[-2000:]}")
        handled = int(events.group(1) if only == "ingest" else
                      events.group(3) if only == "emitter" else events.group(2))
        return int(found.group(1).replace(",", "")), handled

    runs = max(args.runs, 1)
    print(f"rules benchmark, instructions: {args.events:,} events over {args.customers:,} "
          f"customers (seed {args.seed}), {args.partitions} partitions, {runs} run(s) a part "
          f"against none; build: {compiled.state()}")
    base, _ = instructions(PARTS[0], 0)
    for name in (args.only,) if args.only else PARTS:
        if name == "emitter":  # it needs the profiles made first, in its baseline too
            base, _ = instructions(name, 0)
        spent, events = instructions(name, runs)
        unit = "profile" if name == "emitter" else "event"
        print(f"  {name:<28} {(spent - base) / runs / events:12,.0f} instructions/{unit}",
              flush=True)


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
    parser.add_argument("--only", choices=PARTS,
                        help="run only this part (after one untimed ingest); --runs 0 "
                             "runs none, for an instruction count's baseline")
    parser.add_argument("--instructions", action="store_true",
                        help="count instructions per event under valgrind instead of "
                             "timing (each part, or --only's)")
    args = parser.parse_args()
    if args.instructions:
        count_instructions(args)
        return
    if args.runs < (0 if args.only else 1):
        parser.error("--runs must be at least 1 (0 only with --only)")

    def part(name: str, label: str, count: int, work: Callable[[], None]) -> float | None:
        """Time ``work`` if the part is wanted; its median µs/event."""
        if args.only not in (None, name):
            return None
        if not args.runs:
            return None
        return report(label, timed(args.runs, count, work),
                      "profile" if name == "emitter" else "event")

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

    ingest()  # the other parts need its outcomes; it also loads what loads on first use
    print(f"  prepared in {time.perf_counter() - began:.1f} s")
    # the worker's garbage collector; freezing also keeps the prepared inputs, which a
    # worker does not hold, out of every collection
    memory.tune()
    part("ingest", "ingest (decode, check, normalize)", len(inbound), ingest)
    accepted = [o for o in outcomes if isinstance(o, Accepted)]
    codec = codec_for("event")
    parts: list[list[Accepted]] = [[] for _ in range(args.partitions)]
    for outcome in accepted:
        parts[key_partition(outcome.key, list(range(args.partitions)))].append(outcome)
    count = len(accepted)
    rules = complaints.Rules.load(settings.signal_rules or None)

    # a backlog's order, for the two parts that use it (made once, and only for them)
    fetched = fetched_order(inbound, outcomes, args.partitions) \
        if args.only in (None, "minutes-fetched", "profiles-fetched") else []
    late = [0]  # events the last run of windows counted late

    def windows(partitioned: list[list[Accepted]]) -> Callable[[], None]:
        def run() -> None:
            late[0] = 0
            for number, part in enumerate(partitioned):
                stage = MinuteStage(
                    rules, grace=timedelta(seconds=settings.aggregate_grace_seconds),
                    part=number, stats={})
                events = [codec.decode(o.value) for o in part]
                for at in range(0, len(events), MINUTE_BATCH):
                    stage.add(events[at:at + MINUTE_BATCH])
                late[0] += stage.stats.get("late", 0)
        return run

    part("minutes", "minutes (incl. unpacking)", count, windows(parts))
    if part("minutes-fetched", "minutes, in a backlog's order (incl. unpacking)", count,
            windows(fetched)) is not None:
        print(f"  of which late: {late[0]:,} of {count:,} ({100 * late[0] / count:.1f} %)")

    placed: list[Counter[str]] = [Counter()]  # how the last run's detector placed contacts

    def profiles(detector: bool, attributed: bool, partitioned: list[list[Accepted]] | None = None,
                 into: dict[str, Any] | None = None) -> Callable[[], None]:
        def run() -> None:
            stage = profile_stage(settings, rules, {} if into is None else into,
                                  detector=detector, attributor_on=attributed)
            for number, part in enumerate(parts if partitioned is None else partitioned):
                for at in range(0, len(part), PROFILE_BATCH):
                    stage.handle_batch(
                        [Record(provisional_customer_id(o.event), o.value, (), at + n,
                                codec.decode(o.value))
                         for n, o in enumerate(part[at:at + PROFILE_BATCH])], number)
                    stage.changed.clear()
            if stage.detector is not None:
                placed[0] = stage.detector.placed
        return run

    made: dict[str, Any] = {}  # the profiles the stage made of the traffic, for the emitter
    if args.only in (None, "emitter"):
        profiles(True, True, into=made)()
    published = {key: state for key, state in made.items() if MERGED_INTO not in state}
    if args.only:  # what --instructions divides by
        print(f"  events: {len(inbound)} inbound, {count} accepted, {len(published)} profiles")

    def print_placed() -> None:
        print("    contacts placed: " + ", ".join(
            f"{how} {n:,}" for how, n in sorted(placed[0].items())))

    whole = part("profiles", "profiles stage (incl. unpacking)", count, profiles(True, True))
    if whole is not None:
        print_placed()
    if part("profiles-fetched", "profiles stage, in a backlog's order", count,
            profiles(True, True, fetched)) is not None:
        print_placed()
    without = part("profiles-without-detector", "  without the complaint detector", count,
                   profiles(False, True))
    bare = part("profiles-bare", "  without attribution either", count,
                profiles(False, False))
    if whole is not None and without is not None and bare is not None:
        print(f"  so: the detector about {whole - without:.1f} µs/event, attribution about "
              f"{without - bare:.1f} µs/event")

    def emit() -> None:
        emitter = publisher(settings)
        cutoffs = emitter.estimator.cutoffs()
        for key, state in published.items():
            emitter.publication(key, state, cutoffs)

    if part("emitter", f"emitter ({len(published):,} profiles)", len(published),
            emit) is not None:
        exposed = sum(1 for state in published.values()
                      if (state.get(campaigns.ATTRIBUTION_KEY) or {}).get("rows"))
        print(f"    of them with exposure rows: {exposed:,} "
              f"({100 * exposed / max(len(published), 1):.0f} %)")


if __name__ == "__main__":
    main()
