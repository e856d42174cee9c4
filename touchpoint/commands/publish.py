"""``touchpoint publish``: check and publish events from a JSON Lines file."""

from __future__ import annotations

import sys
from typing import Any

import click

from touchpoint.commands.common import one_line_errors, settings_or_exit
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
def publish(channel: str, source: Any, dry_run: bool, strict: bool, show: int) -> None:
    """Publish touchpoint events from a JSON Lines file (or - for standard input).

    The file is UTF-8, one event (a JSON object) a line. Every line is checked against
    the event contract and its limits (docs/contract.md). Valid lines are published keyed
    by the customer's strongest identifier; invalid ones are listed with their line
    number, reason code and reason, and the command exits 1. With --strict nothing is
    published unless every line is valid.
    """
    from touchpoint.publish import Publisher, publish_lines, read_lines

    settings = settings_or_exit()
    # Bytes, decoded line by line: a line that is not UTF-8 is that line's refusal.
    lines = list(read_lines(source)) if strict else read_lines(source)
    with one_line_errors():
        if strict or dry_run:
            report = publish_lines(None, channel, lines, region=settings.phone_region)
            if dry_run or report.rejected:
                _print_report(report, show, published=False)
                sys.exit(1 if report.rejected else 0)
        with Publisher.from_settings(settings) as publisher:
            report = publish_lines(publisher, channel, lines)
    _print_report(report, show, published=True)
    sys.exit(1 if report.rejected else 0)


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
