"""``touchpoint migrate`` and ``touchpoint query``: the warehouse's tables and plain SQL."""

from __future__ import annotations

import json
import sys

import click

from touchpoint.commands.common import one_line_errors, settings_or_exit, text_table

__all__ = ["migrate", "query"]


@click.command()
def migrate() -> None:
    """Create the warehouse database and tables (idempotent; workers do it at start)."""
    from touchpoint.sinks.clickhouse import connect
    from touchpoint.sinks.migrate import applied
    from touchpoint.sinks.migrate import migrate as run_migrations

    settings = settings_or_exit()
    with one_line_errors(), connect(settings.warehouse) as warehouse:
        done = run_migrations(warehouse)
        versions = sorted(applied(warehouse))
        caps = warehouse.capabilities
    for migration in done:
        click.echo(f"applied {migration.version:04d}_{migration.name}")
    click.echo(f"{settings.warehouse}: ClickHouse {caps.version_text}, "
               f"migrations {versions[0]:04d}..{versions[-1]:04d} applied")


@click.command()
@click.argument("sql")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table",
              show_default=True, help="Output format.")
def query(sql: str, fmt: str) -> None:
    """Run one SQL query on the warehouse and print the result.

    Table names may be written bare (touchpoint_events); they are read from the
    configured database. With the embedded warehouse open in a running worker, the
    query is answered by that worker: one SELECT of the project's tables, run read-only
    within TOUCHPOINT_QUERY_TIMEOUT_SECONDS and TOUCHPOINT_QUERY_MAX_ROWS, with the
    token TOUCHPOINT_API_TOKEN.
    """
    from touchpoint.warehouse_client import run_query

    settings = settings_or_exit()
    with one_line_errors():
        result = run_query(settings, sql)
    if fmt == "json":
        click.echo(json.dumps([dict(zip(result.columns, r, strict=True)) for r in result.rows],
                              default=str, ensure_ascii=False, indent=1))
    elif fmt == "csv":
        import csv

        writer = csv.writer(sys.stdout)
        writer.writerow(result.columns)
        writer.writerows(result.rows)
    else:
        click.echo(text_table(result.columns, result.rows))
