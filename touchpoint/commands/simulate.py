"""``touchpoint simulate``: live simulated traffic, or a scenario with known truth."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click

from touchpoint.commands.common import (
    fail,
    one_line_errors,
    settings_or_exit,
    show_progress,
)
from touchpoint.settings import Settings

__all__ = ["publish_traffic", "simulate"]


@click.command()
@click.option("--rate", type=float, help="Events per second (default: as fast as possible).")
@click.option("--duration", type=float, help="Stop after this many seconds.")
@click.option("--events", type=int, help="Stop after this many events.")
@click.option("--seed", type=int, default=1, show_default=True, help="Random seed.")
@click.option("--customers", type=click.IntRange(1),
              help="Size of the simulated CRM customer population.  [default: 25000; "
                   "3000 with --scenario]")
@click.option("--start", type=click.DateTime(["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M%z"]),
              help="Event time of the first event, with offset (default: now; with "
                   "--scenario 2026-11-02T00:00+00:00), e.g. 2026-11-22T09:30+08:00.")
@click.option("--speedup", type=click.FloatRange(min=0, min_open=True), default=60.0,
              show_default=True, help="Simulated seconds per wall-clock second when paced.")
@click.option("--faulty", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="Share of records sent broken (JSON, unknown type, no identifier, bad "
                   "time), bypassing checks, as a buggy producer would.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.option("--scenario", type=click.Choice(["complaints", "campaigns"]),
              help="Write a scenario with known truth instead of live traffic. "
                   "complaints: satisfied and noisy customers, and customers heading to a "
                   "formal complaint or a cancel call (truth.json); campaigns: customers "
                   "answering campaigns, with the exact campaign and per-minute reports "
                   "they must give (expected.json). Needs --out.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="With --scenario: folder for events.jsonl, one <channel>.jsonl per "
                   "channel and truth.json (expected.json for campaigns).")
@click.option("--days", type=click.FloatRange(min=2),
              help="With --scenario: days the journeys fill.  [default: 28]")
@click.option("--publish", "publish_scenario", is_flag=True,
              help="With --scenario: also publish the events, in event-time order.")
def simulate(rate: float | None, duration: float | None, events: int | None, seed: int,
             customers: int | None, start: Any, speedup: float, faulty: float, quiet: bool,
             scenario: str | None, out: Path | None, days: float | None,
             publish_scenario: bool) -> None:
    """Publish realistic mixed traffic for all five channels.

    Customers browse anonymously and later log in, visit stores and queue, call the
    call center, receive campaigns and answer surveys. The same seed and --start give
    the same events. Give --duration or --events (or both).

    With --scenario complaints it writes labelled journeys instead
    (touchpoint.sim.scenarios): the channel files publish with `touchpoint publish -c
    CHANNEL`, truth.json says what became of each customer. The same --seed,
    --customers, --start and --days give the same files.
    """
    if scenario is not None:
        if out is None:
            fail("--scenario needs --out DIR, the folder for the files", 2)
        if rate is not None or duration is not None or events is not None:
            fail("--rate, --duration and --events are for live traffic, not --scenario", 2)
        if scenario == "campaigns":
            if days is not None:
                fail("--days is for --scenario complaints (campaign stories span two "
                      "weeks)", 2)
            _write_campaign_scenario(out, seed=seed, customers=customers or 120, start=start,
                                     publish=publish_scenario, quiet=quiet)
            return
        _write_scenario(out, seed=seed, customers=customers or 3000, start=start,
                        days=days or 28.0, publish=publish_scenario, quiet=quiet)
        return
    if out is not None or days is not None or publish_scenario:
        fail("--out, --days and --publish go with --scenario", 2)
    customers = customers or 25000
    if duration is None and events is None:
        fail("give --duration SECONDS or --events N (or both)", 2)
    if start is not None and start.tzinfo is None:
        fail("--start needs a UTC offset, e.g. 2026-11-22T09:30+08:00", 2)
    settings = settings_or_exit()
    start_ms = None if start is None else int(start.timestamp() * 1000)
    with one_line_errors():
        sent = publish_traffic(settings, rate=rate, duration=duration, events=events,
                               seed=seed, customers=customers, quiet=quiet,
                               start_ms=start_ms, speedup=speedup, faulty=faulty)
    click.echo(f"{sent} events published", err=True)


def _write_scenario(out: Path, *, seed: int, customers: int, start: Any, days: float,
                    publish: bool, quiet: bool) -> None:
    """Write the labelled complaint scenario to ``out``; publish its events if asked."""
    from datetime import UTC, datetime

    from touchpoint.sim import scenarios

    if start is not None and start.tzinfo is None:
        fail("--start needs a UTC offset, e.g. 2026-11-02T00:00+00:00", 2)
    settings = settings_or_exit() if publish else None  # a bad setting fails before any work
    # A fixed origin, so the files are the same every time unless --start is given.
    begin = start or datetime(2026, 11, 2, tzinfo=UTC)
    made = scenarios.generate(seed=seed, customers=customers, start=begin, days=days)
    scenarios.write(made, out)
    counts = ", ".join(f"{n} {label}" for label, n in made.counts().items())
    click.echo(f"{len(made.events)} events of {customers} customers ({counts}) written to "
               f"{out}: events.jsonl, <channel>.jsonl, truth.json")
    if settings is not None:
        # In event-time order; the channels are separate topics, so a worker reads them
        # side by side and one channel may run ahead (bench/signals_bench.py publishes
        # in slices).
        _publish_events(settings, made.events, quiet=quiet)


def _write_campaign_scenario(out: Path, *, seed: int, customers: int, start: Any,
                             publish: bool, quiet: bool) -> None:
    """Write the campaign scenario and its expected reports to ``out``; publish if asked."""
    from datetime import UTC, datetime

    from touchpoint.sim import campaign_scenario

    if start is not None and start.tzinfo is None:
        fail("--start needs a UTC offset, e.g. 2026-11-02T00:00+00:00", 2)
    settings = settings_or_exit() if publish else None  # a bad setting fails before any work
    begin = start or datetime(2026, 11, 2, tzinfo=UTC)
    made = campaign_scenario.generate(seed=seed, customers=customers, start=begin)
    made.write(out)
    exposures = sum(c["exposed"] for c in made.expected["campaigns"])
    click.echo(f"{len(made.events)} events of {customers} customers ({exposures} campaign "
               f"exposures) written to {out}: events.jsonl, <channel>.jsonl, expected.json")
    if settings is not None:
        # In publish order (event time, a few events up to 90 s late: within the grace).
        _publish_events(settings, made.events, quiet=quiet)


def _publish_events(settings: Settings, events: Sequence[tuple[str, dict[str, Any]]], *,
                    quiet: bool) -> None:
    """Publish (channel, event) pairs in the order given, with progress."""
    from touchpoint.publish import Publisher

    with one_line_errors(), Publisher.from_settings(settings) as publisher, \
            show_progress(len(events), None, quiet) as progress:
        for sent, (channel, event) in enumerate(events, start=1):
            publisher.publish(channel, event)
            progress(sent)
    click.echo(f"{len(events)} events published", err=True)


def publish_traffic(settings: Settings, *, rate: float | None, duration: float | None,
                    events: int | None, seed: int, customers: int, quiet: bool,
                    start_ms: int | None = None, speedup: float = 60.0,
                    faulty: float = 0.0, extra: Callable[[], str] | None = None) -> int:
    """Publish simulated traffic (:mod:`touchpoint.sim.simulate`) with progress; return the count.

    ``faulty`` is the share of records sent broken; ``extra`` adds to the progress line.
    Ctrl-C stops it early and returns what was sent so far.
    """
    import random

    from touchpoint.publish import Publisher
    from touchpoint.sim.simulate import Simulator, run
    from touchpoint.sim.simulate import faulty as broken

    simulator = Simulator(seed=seed, customers=customers, start_ms=start_ms, speedup=speedup)
    faults = random.Random(seed)
    with Publisher.from_settings(settings) as publisher:
        def send(sim_event: Any) -> None:
            if faulty and faults.random() < faulty:
                publisher.send_raw(*broken(sim_event, faults))
                return
            publisher.publish(sim_event.channel, sim_event.event)

        with show_progress(events, duration, quiet, extra) as progress:
            try:
                return run(simulator, send, rate=rate, duration=duration, events=events,
                           progress=progress)
            except KeyboardInterrupt:
                return progress.last
