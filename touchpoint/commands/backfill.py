"""``touchpoint backfill``: publish history from many files in event-time order, resumably."""

from __future__ import annotations

import signal
import sys
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Any

import click

from touchpoint.commands.common import fail, one_line_errors, progress_bar, settings_or_exit

__all__ = ["backfill"]


@click.command()
@click.argument("inputs", nargs=-1, required=True, metavar="[CHANNEL=]FILE...")
@click.option("--sort", is_flag=True,
              help="Sort inputs that are not in event-time order, in chunks on disk "
                   "(default: refuse them, naming the first line out of order).")
@click.option("--since", help="Only events at or after this event time: a UTC day, "
                              "2026-11-01, or a time with offset, 2026-11-01T09:00+08:00.")
@click.option("--until", help="Only events before this event time: a day (inclusive: up to "
                              "its end) or a time (exclusive).")
@click.option("--rate", type=click.FloatRange(min=0, min_open=True),
              help="Most events a second (default: as fast as Kafka takes them).")
@click.option("--checkpoint", "checkpoint", type=click.Path(dir_okay=False, path_type=Path),
              help="Checkpoint file. Default: one per list of inputs, under "
                   "$TOUCHPOINT_HOME/backfill/.")
@click.option("--restart", is_flag=True,
              help="Ignore an existing checkpoint and publish everything again.")
@click.option("--progress/--no-progress", default=None,
              help="Show a progress bar (events, rate, ETA) on stderr. Default: on a terminal.")
@click.option("--show", type=click.IntRange(0), default=20, show_default=True,
              help="How many rejected lines to list.")
def backfill(inputs: tuple[str, ...], sort: bool, since: str | None, until: str | None,
             rate: float | None, checkpoint: Path | None, restart: bool,
             progress: bool | None, show: int) -> None:
    """Publish history from many files, merged into event-time order.

    Each input is JSON Lines: CHANNEL=FILE for one channel's events (as `touchpoint
    publish` reads them), or FILE whose events each have a "channel" field. Every line
    is checked as `publish` checks it; refused lines are listed with file, line number
    and reason (exit 1), the rest are published. Each input must be in event-time
    order (--sort sorts those that are not); big files stream, memory does not grow
    with them. --since and --until publish one slice of event time, so history can go
    in slices while workers keep up.

    Ctrl-C stops after the events sent so far are acknowledged and saved in the
    checkpoint; the same command resumes there and publishes nothing twice. After a
    crash, events sent since the last checkpoint are sent again, and the pipeline
    stores each event_id once.

    \b
      touchpoint backfill web=web-2026-11.jsonl store=pos-2026-11.jsonl callcenter=calls.jsonl
      touchpoint backfill --sort --rate 2000 export.jsonl    # mixed channels, unsorted
      touchpoint backfill --until 2026-11-07 web=web.jsonl store=pos.jsonl   # a week, then
      touchpoint backfill --since 2026-11-08 web=web.jsonl store=pos.jsonl   # the rest
      touchpoint backfill --restart web=web.jsonl            # again, from the start
    """  # noqa: D301 - click needs a real backspace in "\b"
    from touchpoint import backfill as fill
    from touchpoint.publish import Publisher
    from touchpoint.report import parse_period

    settings = settings_or_exit()
    sources = [fill.Source.parse(text) for text in inputs]
    try:
        period = parse_period(since, until)
    except ValueError as exc:
        fail(str(exc))
    window = (_millis(period.since), _millis(period.until))
    path = checkpoint or fill.checkpoint_path(settings.home, sources, window)
    with one_line_errors():
        total_bytes = sum(s.path.stat().st_size for s in sources if s.path.is_file())
        # a resumed run reads no input ahead: no bar for that
        checking = progress if restart or not path.exists() else False
        with progress_bar(total_bytes, enabled=checking, unit="B", unit_scale=True,
                          desc="checking order") as bar:
            planned = fill.plan(sources, path, restart=restart, sort=sort, window=window,
                                progress=lambda n: bar.update(n - bar.n))
        state = planned.checkpoint
        if state.done:
            fail(f"this backfill is complete ({state.published:,} published; checkpoint "
                 f"{path}): pass --restart to publish it again")
        if planned.resumed:
            click.echo(f"resuming from checkpoint {path}: {state.published:,} published, "
                       f"{state.rejected:,} refused before", err=True)
        stop = _Interrupt()
        with Publisher.from_settings(settings) as publisher, stop, \
                progress_bar(state.total, enabled=progress, desc="backfill") as bar:
            report = fill.run(planned, publisher, stop=stop, rate=rate,
                              progress=lambda n: bar.update(n - bar.n))
    outside = f", {report.outside:,} outside --since/--until" if report.outside else ""
    click.echo(f"{report.published:,} published, {report.rejected:,} rejected{outside} "
               f"of {report.total:,} lines")
    for code, count in report.reasons.most_common():
        click.echo(f"  {code}: {count}")
    for label, number, code, reason in report.errors[:show]:
        click.echo(f"  {label} line {number} [{code}]: {reason}", err=True)
    if report.rejected > min(show, len(report.errors)):
        click.echo(f"  ... and {report.rejected - min(show, len(report.errors))} more", err=True)
    if report.interrupted:
        click.echo(f"Stopped; the same command resumes from checkpoint {path}.", err=True)
        sys.exit(130)
    sys.exit(1 if report.rejected else 0)


def _millis(moment: datetime | None) -> int | None:
    return None if moment is None else int(moment.timestamp() * 1000)


class _Interrupt:
    """The first Ctrl-C (or SIGTERM) asks the backfill to stop cleanly; a second one exits."""

    def __init__(self) -> None:
        self.asked = False
        self._previous: dict[int, Any] = {}

    def __call__(self) -> bool:
        return self.asked

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.asked:
            raise KeyboardInterrupt
        self.asked = True
        click.echo("\nStopping after the events sent so far are acknowledged "
                   "(Ctrl-C again to quit at once)", err=True)

    def __enter__(self) -> _Interrupt:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
