"""``touchpoint signals`` and ``touchpoint report``: complaint signals and period reports."""

from __future__ import annotations

import json
import sys

import click

from touchpoint.commands.common import fail, one_line_errors, settings_or_exit, text_table
from touchpoint.signals_view import STATUSES

__all__ = ["report", "signals"]


@click.command()
@click.option("--status", type=click.Choice(STATUSES), default="open", show_default=True,
              help="Signals in this status (any: every signal not withdrawn).")
@click.option("--severity", type=click.Choice(["watch", "high", "critical"]), default="watch",
              show_default=True, help="Lowest severity listed.")
@click.option("--customer", help="Only this customer (its id now, or an id merged into it).")
@click.option("--reason", help="Only signals with this reason code, e.g. long_wait.")
@click.option("--channel", help="Only signals with evidence from this channel.")
@click.option("--limit", type=click.IntRange(1), default=50, show_default=True,
              help="Most signals listed.")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table",
              show_default=True, help="Output format.")
def signals(status: str, severity: str, customer: str | None, reason: str | None,
            channel: str | None, limit: int, fmt: str) -> None:
    """List complaint signals: most severe first, then the nearest breach.

    Age and time left before breach are measured on event time (the newest event in
    the warehouse), so they read right during a replay or the demo's fast traffic too.
    Reason codes: repeat_contact, long_wait, transfers, unresolved, abandoned,
    low_rating, negative_text, channel_hopping, web_errors, escalated,
    formal_complaint, cancel_request.
    """
    from touchpoint.signals_view import SignalFilter, list_signals, table_rows
    from touchpoint.warehouse_client import run_query

    settings = settings_or_exit()
    which = SignalFilter(status=status, min_severity=severity, customer=customer,
                         reason=reason, channel=channel, limit=limit)
    with one_line_errors():
        now, found = list_signals(lambda sql: run_query(settings, sql), which)
    if fmt == "json":
        click.echo(json.dumps({"now": now, "signals": found}, default=str,
                              ensure_ascii=False, indent=1))
        return
    if fmt == "csv":
        import csv

        out = csv.writer(sys.stdout)
        out.writerow(found[0].keys() if found else ["signal_id"])
        out.writerows([[";".join(v) if isinstance(v, list | tuple) else v for v in s.values()]
                       for s in found])
        return
    if not found:
        click.echo(f"no {'' if status == 'any' else status + ' '}signals"
                   f"{' at ' + severity + ' or above' if severity != 'watch' else ''}")
        return
    columns, rows = table_rows(found)
    click.echo(text_table(columns, rows))
    click.echo(f"\n{len(found)} signal(s); event time now {now:%Y-%m-%d %H:%M} UTC" if now
               else f"\n{len(found)} signal(s)")


@click.command()
@click.argument("name", metavar="REPORT",
                type=click.Choice(["campaigns", "touchpoints", "ads", "channels", "signals"]))
@click.option("--since", help="Start (inclusive): a UTC day, 2026-11-01, or a time with "
                              "offset, 2026-11-01T09:00+08:00.")
@click.option("--until", help="End: a day (inclusive: up to its end) or a time (exclusive).")
@click.option("--campaign", help="Only this campaign id (campaigns and ads reports).")
@click.option("--by-tier", is_flag=True,
              help="campaigns: one line per customer value tier as well.")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table",
              show_default=True, help="Output format (csv and json keep raw numbers).")
def report(name: str, since: str | None, until: str | None, campaign: str | None,
           by_tier: bool, fmt: str) -> None:
    """Print a report from the warehouse for a period of event time.

    \b
      campaigns    response per campaign, medium and variant: exposed, opened, clicked,
                   responded, converted, revenue, response and conversion rates
      touchpoints  scorecard per event type, category and 4S stage, ranked by the
                   negative experiences (points lost) and their share
      ads          web ads: impressions, clicks, unique clickers, repeat rate, dwell
      channels     per channel: customers reached, contacts, purchases, revenue, and
                   the campaign responses, conversions and revenue it carried
      signals      complaint signals detected in the period, open ones first

    Like `touchpoint query`, it reads a ClickHouse server directly, and the embedded
    warehouse through the worker that holds it. docs/reports.md explains every column.
    """  # noqa: D301 - click needs a real backspace in "\b"
    from touchpoint.report import build_report, parse_period, render
    from touchpoint.warehouse_client import run_query

    settings = settings_or_exit()
    try:
        built = build_report(name, parse_period(since, until), campaign=campaign,
                             by_tier=by_tier)
    except ValueError as exc:
        fail(str(exc), 2)
    with one_line_errors():
        result = run_query(settings, built.sql)
    click.echo(render(built, result.rows, fmt))
