"""The ``touchpoint`` command: services, worker, publish, simulate, migrate, query, demo."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from touchpoint import __version__
from touchpoint.exceptions import TouchpointError, WarehouseUnavailable
from touchpoint.schemas.contract import CHANNELS
from touchpoint.settings import LOCAL, Settings, load_settings, settings_markdown

F = TypeVar("F", bound=Callable[..., Any])
REPO = Path(__file__).resolve().parents[1]
SERVICES_SCRIPT = REPO / "deploy" / "local" / "services.sh"


def _fail(message: str, code: int = 1) -> NoReturn:
    click.echo(f"Error: {message}", err=True)
    sys.exit(code)


@contextmanager
def _errors() -> Iterator[None]:
    """Our errors become one ``Error: ...`` line and a non-zero exit, no traceback."""
    try:
        yield
    except TouchpointError as exc:
        _fail(str(exc))


def _settings(**overrides: Any) -> Settings:
    with _errors():
        return load_settings(**{k: v for k, v in overrides.items() if v is not None})


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="touchpoint")
def main() -> None:
    """Touchpoint: customer touchpoint events from Kafka, through Faust, into ClickHouse.

    Settings come from TOUCHPOINT_* environment variables (`touchpoint settings` lists
    them). A typical local session:

    \b
      touchpoint services start      # Kafka (and the ClickHouse server, if installed)
      touchpoint worker &            # ingest and store
      touchpoint simulate --events 10000
      touchpoint query "SELECT channel, count() FROM touchpoint_events GROUP BY channel"
    """


# --- services ---------------------------------------------------------------------------

@main.command()
@click.argument("action", type=click.Choice(["start", "stop", "status"]))
@click.argument("service", type=click.Choice(["all", "kafka", "clickhouse"]), default="all")
def services(action: str, service: str) -> None:
    """Start, stop or show the local Kafka broker and ClickHouse server.

    Data and logs live under TOUCHPOINT_HOME. The ClickHouse server is managed when
    Debian's clickhouse-server is installed (`deploy/local/clickhouse.sh install`); the
    default warehouse is embedded (chdb) and needs no server.
    """
    settings = _settings()
    if not SERVICES_SCRIPT.exists():
        _fail(f"{SERVICES_SCRIPT} not found: run from a checkout of the touchpoint repository")
    env = {**os.environ, "TOUCHPOINT_HOME": str(settings.home)}
    result = subprocess.run(["bash", str(SERVICES_SCRIPT), action, service], env=env, check=False)
    sys.exit(result.returncode)


# --- worker -----------------------------------------------------------------------------

@main.command()
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

    settings = _settings(web_port=web_port, log_level=log_level)
    configure_logging(settings.log_level)
    with _errors():
        pipeline = _prepare_worker(settings)
    from faust.worker import Worker

    from touchpoint.streams.rules import sentiment
    from touchpoint.streams.runtime import memory

    # The text analyzers take 0.45-0.6 s to load (jieba's dictionary; worker logs here).
    # Loaded lazily, that happened at the first note with text, with every stage waiting
    # behind it: at 2,000 events/s, ~900-1,200 events piled up that a busy worker may
    # never work off.
    sentiment.shared()
    memory.tune()  # after loading: what start-up built is frozen out of the collector's way
    click.echo(f"touchpoint worker: {settings.kafka_bootstrap} -> {pipeline.warehouse.url}; "
               f"status at http://{settings.web_host}:{settings.web_port}/status", err=True)
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


# --- publish and simulate -----------------------------------------------------------------

@main.command()
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

    settings = _settings()
    # Bytes, decoded line by line: a line that is not UTF-8 is that line's refusal.
    lines = list(read_lines(source)) if strict else read_lines(source)
    with _errors():
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


@main.command()
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
    (touchpoint.scenarios): the channel files publish with `touchpoint publish -c
    CHANNEL`, truth.json says what became of each customer. The same --seed,
    --customers, --start and --days give the same files.
    """
    if scenario is not None:
        if out is None:
            _fail("--scenario needs --out DIR, the folder for the files", 2)
        if rate is not None or duration is not None or events is not None:
            _fail("--rate, --duration and --events are for live traffic, not --scenario", 2)
        if scenario == "campaigns":
            if days is not None:
                _fail("--days is for --scenario complaints (campaign stories span two "
                      "weeks)", 2)
            _write_campaign_scenario(out, seed=seed, customers=customers or 120, start=start,
                                     publish=publish_scenario, quiet=quiet)
            return
        _write_scenario(out, seed=seed, customers=customers or 3000, start=start,
                        days=days or 28.0, publish=publish_scenario, quiet=quiet)
        return
    if out is not None or days is not None or publish_scenario:
        _fail("--out, --days and --publish go with --scenario", 2)
    customers = customers or 25000
    if duration is None and events is None:
        _fail("give --duration SECONDS or --events N (or both)", 2)
    if start is not None and start.tzinfo is None:
        _fail("--start needs a UTC offset, e.g. 2026-11-22T09:30+08:00", 2)
    settings = _settings()
    start_ms = None if start is None else int(start.timestamp() * 1000)
    with _errors():
        sent = _simulate(settings, rate=rate, duration=duration, events=events, seed=seed,
                         customers=customers, quiet=quiet, start_ms=start_ms,
                         speedup=speedup, faulty=faulty)
    click.echo(f"{sent} events published", err=True)


def _write_scenario(out: Path, *, seed: int, customers: int, start: Any, days: float,
                    publish: bool, quiet: bool) -> None:
    """Write the labelled complaint scenario to ``out``; publish its events if asked."""
    from datetime import UTC, datetime

    from touchpoint import scenarios

    if start is not None and start.tzinfo is None:
        _fail("--start needs a UTC offset, e.g. 2026-11-02T00:00+00:00", 2)
    settings = _settings() if publish else None  # a bad setting fails before any work
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

    from touchpoint import campaign_scenario

    if start is not None and start.tzinfo is None:
        _fail("--start needs a UTC offset, e.g. 2026-11-02T00:00+00:00", 2)
    settings = _settings() if publish else None  # a bad setting fails before any work
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

    with _errors(), Publisher.from_settings(settings) as publisher, \
            _progress(len(events), None, quiet) as progress:
        for sent, (channel, event) in enumerate(events, start=1):
            publisher.publish(channel, event)
            progress(sent)
    click.echo(f"{len(events)} events published", err=True)


def _simulate(settings: Settings, *, rate: float | None, duration: float | None,
              events: int | None, seed: int, customers: int, quiet: bool,
              start_ms: int | None = None, speedup: float = 60.0,
              faulty: float = 0.0, extra: Callable[[], str] | None = None) -> int:
    import random

    from touchpoint.publish import Publisher
    from touchpoint.simulate import Simulator, run
    from touchpoint.simulate import faulty as broken

    simulator = Simulator(seed=seed, customers=customers, start_ms=start_ms, speedup=speedup)
    faults = random.Random(seed)
    with Publisher.from_settings(settings) as publisher:
        def send(sim_event: Any) -> None:
            if faulty and faults.random() < faulty:
                publisher.send_raw(*broken(sim_event, faults))
                return
            publisher.publish(sim_event.channel, sim_event.event)

        with _progress(events, duration, quiet, extra) as progress:
            try:
                return run(simulator, send, rate=rate, duration=duration, events=events,
                           progress=progress)
            except KeyboardInterrupt:
                return progress.last


class _Progress:
    """Events sent, rate, and how far along: a live line on a terminal, else a line every 10 s.

    ``extra`` adds more to the line (the demo shows the worker's figures there).
    """

    def __init__(self, events: int | None, duration: float | None, quiet: bool, *,
                 live: bool, extra: Callable[[], str] | None = None) -> None:
        self.events, self.duration, self.quiet, self.live = events, duration, quiet, live
        self.extra = extra
        self.started = time.monotonic()
        self.last = 0
        self._shown = 0.0

    def __call__(self, sent: int) -> None:
        self.last = sent
        now = time.monotonic()
        if self.quiet or (not self.live and now - self._shown < 10):
            return
        self._shown = now
        elapsed = max(now - self.started, 1e-6)
        parts = [f"{sent:>9,} events", f"{sent / elapsed:>8,.0f}/s"]
        if self.events:
            parts.append(f"{100 * sent / self.events:5.1f}%")
        elif self.duration:
            parts.append(f"{min(elapsed, self.duration):5.0f}/{self.duration:.0f}s")
        if self.extra is not None:
            parts.append(self.extra())
        line = "  ".join(parts)
        if self.live:
            click.echo("\r" + line + "\x1b[K", nl=False, err=True)
        else:
            click.echo(line, err=True)

    def close(self) -> None:
        if self.live and not self.quiet:
            click.echo("", err=True)


@contextmanager
def _progress(events: int | None, duration: float | None, quiet: bool,
              extra: Callable[[], str] | None = None) -> Iterator[_Progress]:
    progress = _Progress(events, duration, quiet, live=sys.stderr.isatty(), extra=extra)
    try:
        yield progress
    finally:
        progress.close()


# --- warehouse ----------------------------------------------------------------------------

@main.command()
def migrate() -> None:
    """Create the warehouse database and tables (idempotent; workers do it at start)."""
    from touchpoint.sinks.clickhouse import connect
    from touchpoint.sinks.migrate import applied
    from touchpoint.sinks.migrate import migrate as run_migrations

    settings = _settings()
    with _errors(), connect(settings.warehouse) as warehouse:
        done = run_migrations(warehouse)
        versions = sorted(applied(warehouse))
        caps = warehouse.capabilities
    for migration in done:
        click.echo(f"applied {migration.version:04d}_{migration.name}")
    click.echo(f"{settings.warehouse}: ClickHouse {caps.version_text}, "
               f"migrations {versions[0]:04d}..{versions[-1]:04d} applied")


@main.command()
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

    settings = _settings()
    with _errors():
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
        click.echo(_table(result.columns, result.rows))


def _table(columns: tuple[str, ...] | list[str], rows: list[Any]) -> str:
    cells = [[str(c) for c in columns]] + [["" if v is None else str(v) for v in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


@main.command()
@click.option("--status", type=click.Choice(["open", "resolved", "breached", "any"]),
              default="open", show_default=True, help="Signals in this status.")
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

    settings = _settings()
    which = SignalFilter(status=status, min_severity=severity, customer=customer,
                         reason=reason, channel=channel, limit=limit)
    with _errors():
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
    click.echo(_table(columns, rows))
    click.echo(f"\n{len(found)} signal(s); event time now {now:%Y-%m-%d %H:%M} UTC" if now
               else f"\n{len(found)} signal(s)")


@main.command()
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
    """
    from touchpoint.report import build_report, parse_period, render
    from touchpoint.warehouse_client import run_query

    settings = _settings()
    try:
        built = build_report(name, parse_period(since, until), campaign=campaign,
                             by_tier=by_tier)
    except ValueError as exc:
        _fail(str(exc), 2)
    with _errors():
        result = run_query(settings, built.sql)
    click.echo(render(built, result.rows, fmt))


@main.command()
@click.argument("identifier")
@click.option("--json", "as_json", is_flag=True, help="Print the answer as JSON.")
def customer(identifier: str, as_json: bool) -> None:
    """Look a customer up by any identifier: customer id, phone, e-mail or cookie id.

    Shows the profile, the customer's identifiers (e-mail and phone hashed) and the last
    20 touchpoints: what a call-center agent sees when the customer calls. Asks the
    worker at TOUCHPOINT_WEB_PORT, which routes to the worker holding the customer.
    """
    from touchpoint.worker_api import WorkerAPI, WorkerRefused, WorkerUnreachable

    api = WorkerAPI(_settings())
    try:
        found = api.call(api.path_of("/customers/", identifier))
    except WorkerRefused as exc:
        known = " (set TOUCHPOINT_API_TOKEN to a token the worker knows)"
        _fail(f"{exc}{known if exc.status == 401 else ''}")
    except WorkerUnreachable as exc:
        _fail(f"{exc}: start one with `touchpoint worker` or set TOUCHPOINT_WEB_PORT")
    if as_json:
        click.echo(json.dumps(found, indent=1, ensure_ascii=False))
        return
    click.echo(_customer_text(found))


def _customer_text(found: dict[str, Any]) -> str:
    from datetime import UTC, datetime

    def when(ms: int | None) -> str:
        if not ms:
            return "-"
        return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")

    profile = found.get("profile") or {}
    lines = [f"customer   {found['customer_id']}"]
    if profile:
        contacts = ", ".join(f"{k} {v}" for k, v in sorted(profile["contacts_by_channel"].items()))
        satisfaction = profile.get("avg_satisfaction")
        lines += [
            f"stage      {profile['lifecycle_stage']}, tier {profile['value_tier']}",
            f"seen       {when(profile['first_seen'])} .. {when(profile['last_seen'])}",
            f"orders     {profile['orders']}, spend {profile['total_spend']:,.2f} "
            f"(12 months {profile['spend_12m']:,.2f}), returns {profile['returns']}",
            f"contacts   {contacts}",
            f"rating     {'-' if satisfaction is None else satisfaction} of 5, complaints "
            f"{profile['complaints']}, open signals {profile['open_signals']}",
        ]
    else:
        lines.append("profile    (not built yet)")
    lines.append(f"ids        {', '.join(found['identifiers'])}")
    if found.get("merged_ids"):
        lines.append(f"merged     {', '.join(found['merged_ids'])}")
    touchpoints = found.get("touchpoints") or []
    if touchpoints and "error" not in touchpoints[0]:
        lines.append("last touchpoints:")
        rows = [[str(t["occurred_at"])[:19].replace("T", " "), t["channel"], t["type"],
                 t.get("store_id") or t.get("campaign_id") or "",
                 "" if t.get("amount") is None else f"{t['amount']:,.2f}",
                 t.get("outcome") or ""] for t in touchpoints]
        lines.append(_table(["time (UTC)", "channel", "type", "where", "amount", "outcome"],
                            rows))
    return "\n".join(lines)


# --- settings and demo --------------------------------------------------------------------

@main.command("settings")
@click.option("--markdown", is_flag=True, help="Print the README's configuration table.")
def show_settings(markdown: bool) -> None:
    """Show every setting: its variable, default and current value."""
    if markdown:
        click.echo(settings_markdown())
        return
    from touchpoint.settings import SETTINGS

    current = _settings(create_secrets=False)  # shows the settings, makes no secret file

    def secret(value: str, file: str) -> str:
        if value != LOCAL:
            return "(set)"
        return "(local file)" if (current.home / file).exists() else \
            "(local file, not made yet)"

    for setting in SETTINGS:
        value = getattr(current, setting.name)
        if setting.name == "pii_salt":  # secrets: never shown
            value = secret(value, "pii_salt")
        elif setting.name == "api_tokens":
            value = ", ".join(f"{name}={secret(token, 'api_token')}"
                              for name, token in value.items())
        elif setting.name == "api_token":
            value = secret(value, "api_token")
        elif setting.name in {"clickhouse_url", "clickhouse_query_url"} and value:
            value = _without_password(value)
        click.echo(f"{setting.env}={value}")
        click.echo(f"    {setting.help} Default: {setting.default or '(empty)'}")


def _without_password(url: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


@main.command()
@click.option("--duration", type=float, default=60, show_default=True,
              help="Seconds of simulated traffic.")
@click.option("--rate", type=float, default=200, show_default=True,
              help="Events per second (a worker on 2 cores keeps up with a few hundred).")
@click.option("--seed", type=int, default=1, show_default=True,
              help="Random seed of the simulated traffic.")
def demo(duration: float, rate: float, seed: int) -> None:
    """Run the whole pipeline locally: services, a worker, and simulated traffic.

    Stops after --duration seconds or on Ctrl-C, waits for the worker to store what was
    published, prints what happened, and stops what it started.
    """
    from touchpoint.demo import run_demo

    settings = _settings()
    with _errors():
        sys.exit(run_demo(settings, duration=duration, rate=rate, seed=seed))


if __name__ == "__main__":
    main()
