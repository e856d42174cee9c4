"""``touchpoint worker``: prepare topics and warehouse, then run a Faust worker."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import click

from touchpoint import compiled
from touchpoint.commands.common import one_line_errors, settings_or_exit
from touchpoint.exceptions import WarehouseUnavailable
from touchpoint.settings import Settings

__all__ = ["worker"]


@click.command()
@click.option("--web-port", type=int, help="Web server port (default: TOUCHPOINT_WEB_PORT).")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]),
              help="Log level (default: TOUCHPOINT_LOG_LEVEL).")
def worker(web_port: int | None, log_level: str | None) -> None:
    """Run a pipeline worker (a Faust worker; start several to share the load).

    It creates missing topics, applies warehouse migrations, then ingests every channel
    topic and stores events and dead letters. Ctrl-C or SIGTERM stops it cleanly: stored
    rows are committed, the rest is read again on the next start. A second Ctrl-C exits
    at once.
    """
    from touchpoint.logs import configure_logging

    settings = settings_or_exit(web_port=web_port, log_level=log_level)
    configure_logging(settings.log_level)
    with one_line_errors():
        pipeline = _prepare_worker(settings)
    from faust.worker import Worker

    from touchpoint.streams.rules import sentiment
    from touchpoint.streams.runtime import memory

    # Loading the text analyzers is slow (jieba's dictionary). Loaded lazily, that
    # happened at the first note with text, with every stage waiting behind it and a
    # backlog piling up that a busy worker may never work off (docs/design/signals.md).
    sentiment.shared()
    memory.tune()  # after loading: what start-up built is frozen out of the collector's way
    click.echo(f"touchpoint worker: {settings.kafka_bootstrap} -> {pipeline.warehouse.url}; "
               f"status at http://{settings.web_host}:{settings.web_port}/status; "
               f"rules {compiled.state()}", err=True)
    try:
        Worker(pipeline.app, loglevel=settings.log_level, quiet=True,
               redirect_stdouts=False).execute_from_commandline()
    finally:
        pipeline.close()


def _prepare_worker(settings: Settings) -> Any:
    from touchpoint.sinks.clickhouse import connect
    from touchpoint.sinks.migrate import migrate
    from touchpoint.sinks.query_guard import open_reader
    from touchpoint.streams.app import create_app
    from touchpoint.streams.topics import ensure_topics

    ensure_topics(settings)
    warehouse = _connect_with_retry(settings, connect)
    migrate(warehouse)
    warehouse.use_database()  # bare table names in queries served by the worker
    # people's SQL: on a server, a read-only connection of its own
    reader = open_reader(settings, warehouse)
    return create_app(settings, warehouse, reader=reader)


def _connect_with_retry(settings: Settings, connect: Callable[[Any], Any]) -> Any:
    """Wait for a ClickHouse server that is still starting; fail fast on anything else."""
    delay, deadline = 0.5, time.monotonic() + 60
    while True:
        try:
            return connect(settings.warehouse)
        except WarehouseUnavailable as exc:
            if settings.warehouse.backend == "chdb" or time.monotonic() > deadline:
                raise
            click.echo(f"waiting for the warehouse: {exc}", err=True)
            time.sleep(delay)
            delay = min(delay * 2, 5)
