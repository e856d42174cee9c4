"""``touchpoint publish``: check and publish events from a JSON Lines file."""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Iterable, Iterator
from typing import Any

import click

from touchpoint.commands.common import one_line_errors, progress_bar, settings_or_exit
from touchpoint.schemas.contract import CHANNELS

__all__ = ["publish"]


@click.command()
@click.option("--channel", "-c", required=True,
              type=click.Choice(list(CHANNELS)),
              help="Channel of every event in the input.")
@click.argument("source", type=click.File("rb"), default="-")
@click.option("--dry-run", is_flag=True, help="Check every line; publish nothing.")
@click.option("--strict", is_flag=True,
              help="Publish only if every line is valid (checks the whole input first).")
@click.option("--show", type=click.IntRange(0), default=20, show_default=True,
              help="How many rejected lines to list.")
@click.option("--progress/--no-progress", default=None,
              help="Show a progress bar (bytes, rate, ETA) on stderr. Default: on a terminal.")
def publish(channel: str, source: Any, dry_run: bool, strict: bool, show: int,
            progress: bool | None) -> None:
    """Publish touchpoint events from a JSON Lines file (or - for standard input).

    The file is UTF-8, one event (a JSON object) a line. Every line is checked against
    the event contract and its limits (docs/contract.md). Valid lines are published keyed
    by the customer's strongest identifier; invalid ones are listed with their line
    number, reason code and reason, and the command exits 1. With --strict nothing is
    published unless every line is valid.

    \b
      touchpoint publish -c web events.jsonl
      touchpoint publish -c store --strict --progress pos-2026-11.jsonl 2> progress.log
      zcat web.jsonl.gz | touchpoint publish -c web -
    """  # noqa: D301 - click needs a real backspace in "\b"
    from touchpoint.publish import Publisher, publish_lines, read_lines

    settings = settings_or_exit()
    # Bytes, decoded line by line: a line that is not UTF-8 is that line's refusal.
    lines = list(read_lines(source)) if strict else read_lines(source)
    with one_line_errors(), progress_bar(_size(source), enabled=progress, unit="B",
                                         unit_scale=True, desc="publish") as bar:
        if strict or dry_run:
            report = publish_lines(None, channel, _read(lines, bar) if dry_run else lines,
                                   region=settings.phone_region)
            if dry_run or report.rejected:
                bar.close()
                _print_report(report, show, published=False)
                sys.exit(1 if report.rejected else 0)
        with Publisher.from_settings(settings) as publisher:
            report = publish_lines(publisher, channel, _read(lines, bar))
    _print_report(report, show, published=True)
    sys.exit(1 if report.rejected else 0)


def _size(source: Any) -> int | None:
    """The input's size in bytes when it is a file (standard input may be a pipe)."""
    try:
        found = os.fstat(source.fileno())
    except (AttributeError, OSError, ValueError):
        return None
    return found.st_size if stat.S_ISREG(found.st_mode) else None


def _read(lines: Iterable[bytes], bar: Any) -> Iterator[bytes]:
    """The lines, moving the progress bar by the bytes each took."""
    for line in lines:
        bar.update(len(line))
        yield line


def _print_report(report: Any, show: int, *, published: bool) -> None:
    verb = "published" if published else "valid"
    click.echo(f"{report.accepted} {verb}, {report.rejected} rejected")
    for code, count in report.reasons.most_common():
        click.echo(f"  {code}: {count}")
    for error in report.errors[:show]:
        click.echo(f"  line {error.line} [{error.code}]: {error.reason}", err=True)
    if len(report.errors) > show:
        click.echo(f"  ... and {len(report.errors) - show} more (use --show)", err=True)
    if report.rejected and not published:
        click.echo("Nothing was published.", err=True)
