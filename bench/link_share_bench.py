"""Benchmark: how many events of the throughput backlog need the one-partition link stage.

Not a test, and no Kafka. It builds the same backlog as ``throughput_bench.py`` (same
options, same seed, so the same events), normalizes each event as ingest does, and
resolves it in order against an identity graph that is always up to date: the identity
stage's answer with a copy of the graph that never lags (``resolve_known``), then the
graph's own (``IdentityGraph.resolve``), as the link stage would give it. An event the
copy cannot answer needs the link stage whatever the timing; the rest of what a
throughput run sends there (its ``identity`` line) follows an earlier event still on its
way through it (``docs/design/identity.md``).

    .venv/bin/python bench/link_share_bench.py                        # 200,000 / 25,000
    .venv/bin/python bench/link_share_bench.py --events 1000000 --customers 100000

It prints the events resolved, how many need the link stage and why (only new
identifiers, a new one beside a known one, identifiers of two customers, a known
customer without its group), and the merges the graph made. With ``--lag`` it also
prints how many would go there if the link stage ran that many events behind the
identity stage: an event then follows any event of its identifiers sent there within
the lag, by the identity stage's own ``Waiting``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from typing import Any

import throughput_bench as tb  # the sibling benchmark: its backlog, event for event


def _lags(text: str) -> list[int]:
    """``--lag``'s value: event counts, comma-separated, none negative."""
    try:
        lags = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give whole numbers of events, "
                                         "comma-separated (e.g. 0,100,1000)") from None
    if any(lag < 0 for lag in lags):
        raise argparse.ArgumentTypeError(f"{text!r}: a lag is 0 or more events")
    return lags


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000,
                        help="simulated events, as throughput_bench.py --events")
    parser.add_argument("--customers", type=int, default=25_000,
                        help="simulated CRM customers, as throughput_bench.py --customers")
    parser.add_argument("--seed", type=int, default=1, help="simulator seed")
    parser.add_argument("--start-ms", type=int, default=tb.DEFAULT_START_MS,
                        help="event-time origin of the simulation (epoch ms)")
    parser.add_argument("--lag", type=_lags, default=_lags("0,100,300,1000,3000,7000"),
                        help="comma-separated: for each, how many events the link stage "
                             "runs behind the identity stage; prints the share sent there")
    args = parser.parse_args(argv)

    from touchpoint.settings import load_settings
    from touchpoint.streams.rules.identity import IdentityGraph, identifiers_of, resolve_known
    from touchpoint.streams.rules.normalize import Accepted, Ingestor
    from touchpoint.streams.stages.identity import Waiting

    settings = load_settings({}, create_secrets=False)
    backlog = tb.Backlog(args.events, args.customers, args.seed, args.start_ms,
                         settings.phone_region, hot_customer="", hot_events=0, memory=False)
    ingestor = Ingestor(pii_salt="link-share", phone_region=settings.phone_region)
    owner: dict[str, str] = {}
    members: dict[str, dict[str, Any]] = {}
    graph = IdentityGraph(owner, members)

    def aliases(customer: str) -> tuple[str, ...] | None:
        group = members.get(customer)
        return None if group is None else tuple(group["aliases"])

    lags: list[int] = args.lag
    # per lag, the identity stage's own record of identifiers on their way through the
    # link stage (positions for offsets), and how many events went there: those that
    # need it, and those that follow them
    waiting = {lag: Waiting() for lag in lags}
    sent: Counter[int] = Counter()
    resolved = refused = merges = 0
    why: Counter[str] = Counter()
    started = time.monotonic()
    for offset, (channel, value, key) in enumerate(backlog.records()):
        outcome = ingestor.process(channel, key, value, topic=f"touchpoints.{channel}",
                                   partition=0, offset=offset, timestamp_ms=None)
        if not isinstance(outcome, Accepted):
            refused += 1  # a dead letter: never resolved
            continue
        identifiers = identifiers_of(outcome.event)
        resolved += 1
        needs_link = resolve_known(identifiers, owner.get, aliases) is None
        for lag in lags:
            pending = waiting[lag]
            pending.passed(resolved - lag)  # forwarded: what was sent over ``lag`` events ago
            if needs_link or any(i in pending for i in identifiers):
                sent[lag] += 1
                pending.update(set(identifiers), resolved)
        if needs_link:
            owners = {owner.get(i) for i in identifiers}
            why["only new identifiers" if owners == {None}
                else "a new identifier beside a known one" if None in owners
                else "identifiers of two customers" if len(owners) > 1
                else "a known customer without its group"] += 1
        merges += len(graph.resolve(identifiers, outcome.event["event_id"]).merges)
        if resolved % 50_000 == 0:
            print(f"  {resolved:,} events resolved ({time.monotonic() - started:.0f} s)",
                  flush=True)

    linking = sum(why.values())
    print(f"backlog      {args.events:,} events over {args.customers:,} customers "
          f"(seed {args.seed}, start_ms {args.start_ms}); {backlog.refused:,} refused by the "
          f"contract, {refused:,} by ingest")
    print(f"resolved     {resolved:,} events; {merges:,} merges")
    print(f"link stage   {linking:,} need it with a copy of the graph always up to date "
          f"({100 * linking / max(resolved, 1):.1f} %)")
    for reason, count in why.most_common():
        print(f"  {reason:40s} {count:,}")
    for lag in lags:
        print(f"lag {lag:>6,}   {sent[lag]:,} sent to the link stage when it runs {lag:,} events "
              f"behind ({100 * sent[lag] / max(resolved, 1):.1f} %)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
