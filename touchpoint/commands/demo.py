"""``touchpoint demo``: the whole pipeline on one machine, and a summary of what it did."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from datetime import time as dt_time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from touchpoint.commands.common import one_line_errors, settings_or_exit
from touchpoint.commands.customer import customer_text
from touchpoint.commands.simulate import publish_traffic
from touchpoint.exceptions import ServiceError, TouchpointError
from touchpoint.settings import Settings
from touchpoint.sinks.tables import (
    COMPLAINT_SIGNALS,
    CUSTOMER_PROFILES,
    DEADLETTER,
    DEADLETTER_RAW,
    EVENTS,
    EVENTS_RAW,
    IDENTITY_MERGES,
)

if TYPE_CHECKING:
    from touchpoint.worker_api import WorkerAPI

__all__ = ["SUMMARY_SQL", "demo", "run_demo"]

REPO = Path(__file__).resolve().parents[2]
KAFKA_SCRIPT = REPO / "deploy" / "local" / "kafka.sh"

# What the summary asks the worker.
EVENTS_BY_CHANNEL_SQL = (f"SELECT channel, count() AS events FROM {EVENTS} "
                         "GROUP BY channel ORDER BY channel")
DEADLETTERS_SQL = f"SELECT count() FROM {DEADLETTER}"
CUSTOMERS_SQL = ("SELECT count(), countIf(lifecycle_stage != 'prospect') "
                 f"FROM {CUSTOMER_PROFILES}")
MERGES_SQL = f"SELECT count() FROM {IDENTITY_MERGES}"
OPEN_SIGNALS_SQL = (f"SELECT severity, count() FROM {COMPLAINT_SIGNALS} "
                    "WHERE status = 'open' GROUP BY severity")
BUSIEST_CUSTOMER_SQL = (
    f"SELECT customer_id FROM {CUSTOMER_PROFILES} ORDER BY contacts_web + contacts_store "
    "+ contacts_callcenter + contacts_feedback DESC, customer_id LIMIT 1")
#: Every query the demo sends (the query guard's tests check each is accepted).
SUMMARY_SQL = (EVENTS_BY_CHANNEL_SQL, DEADLETTERS_SQL, CUSTOMERS_SQL, MERGES_SQL,
               OPEN_SIGNALS_SQL, BUSIEST_CUSTOMER_SQL)


@click.command()
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
    settings = settings_or_exit()
    with one_line_errors():
        sys.exit(run_demo(settings, duration=duration, rate=rate, seed=seed))


def run_demo(settings: Settings, *, duration: float, rate: float, seed: int) -> int:
    """Start Kafka and a worker, simulate traffic, drain, summarize, stop. Returns exit code."""
    # Imported here, as every command does, so `touchpoint --help` stays quick.
    from touchpoint.worker_api import WorkerAPI

    env = {**os.environ, "TOUCHPOINT_HOME": str(settings.home)}
    started_kafka = _start_kafka(env)
    log_path = settings.home / "logs" / "worker.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    worker = None
    try:
        with log_path.open("ab") as log:
            worker = subprocess.Popen(
                [sys.executable, "-m", "touchpoint.cli", "worker"], env=env,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        api = WorkerAPI(settings)
        _wait_for_worker(worker, api, log_path)
        click.echo(f"worker running; status: {api.url('/status')}  (log: {log_path})")
        click.echo(f"live dashboard: http://{settings.web_host}:{settings.web_port}/  "
                   "(Prometheus metrics at /metrics; the page asks for the API token in "
                   f"{settings.home / 'api_token'} unless TOUCHPOINT_API_TOKENS names others)")
        click.echo(f"publishing simulated traffic: {rate:.0f} events/s for {duration:.0f}s "
                   "(Ctrl-C to stop early)")
        began = time.monotonic()
        try:
            published = publish_traffic(settings, rate=rate, duration=duration, events=None,
                                        seed=seed, customers=25000, quiet=False,
                                        start_ms=_business_hours(), faulty=0.002,
                                        extra=_WorkerFigures(api))
        except KeyboardInterrupt:
            published = -1
        elapsed = time.monotonic() - began
        status = _drain(api, published, settings.profile_emit_seconds)
        _summary(settings, published, elapsed, status)
        _show_a_customer(settings)
        return 0
    except KeyboardInterrupt:
        click.echo("\ninterrupted; stopping", err=True)
        return 130
    finally:
        if worker is not None:
            _stop(worker)
        if started_kafka:
            subprocess.run(["bash", str(KAFKA_SCRIPT), "stop"], env=env, check=False)


def _business_hours() -> int:
    """Today 09:30 in China (UTC+8), in epoch ms: stores are open, the day is young."""
    china = timezone(timedelta(hours=8))
    today = datetime.now(china).date()
    return int(datetime.combine(today, dt_time(9, 30), tzinfo=china).timestamp() * 1000)


def _start_kafka(env: dict[str, str]) -> bool:
    """Start Kafka unless it runs; return whether this demo started it."""
    running = subprocess.run(["bash", str(KAFKA_SCRIPT), "status"], env=env, check=False,
                             capture_output=True).returncode == 0
    if running:
        return False
    if subprocess.run(["bash", str(KAFKA_SCRIPT), "start"], env=env, check=False).returncode:
        raise ServiceError("Kafka did not start; see the log named above")
    return True


def _wait_for_worker(worker: subprocess.Popen[bytes], api: WorkerAPI, log_path: Path) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if worker.poll() is not None:
            tail = log_path.read_text(errors="replace").splitlines()[-20:]
            raise TouchpointError("the worker exited at start:\n" + "\n".join(tail))
        if api.status() is not None:
            return
        time.sleep(0.5)
    raise TouchpointError(f"the worker did not answer at {api.base} within 120 s; "
                          f"see {log_path}")


def _drain(api: WorkerAPI, published: int, emit_seconds: float,
           timeout: float = 120) -> dict[str, Any]:
    """Wait until the worker has ingested and stored everything published."""
    click.echo("waiting for the worker to store everything published...")
    deadline = time.monotonic() + timeout
    status: dict[str, Any] = {}
    while time.monotonic() < deadline:
        status = api.status() or status
        ingested = sum(status.get("ingested", {}).values())
        rejected = sum(status.get("rejected", {}).values())
        stored = status.get("sink", {}).get("rows", {}).get(EVENTS_RAW, 0)
        profiles = status.get("profiles", {})
        profiled = profiles.get("applied", 0) + profiles.get("repeats", 0)
        if ingested + rejected >= published >= 0 and stored >= ingested \
                and profiled >= ingested:
            time.sleep(2 * emit_seconds + 0.5)  # the last changed profiles are published
            status = api.status() or status
            break
        time.sleep(0.5)
    else:
        click.echo("the worker has not caught up yet; figures below are partial", err=True)
    return status


def _summary(settings: Settings, published: int, elapsed: float,
             status: dict[str, Any]) -> None:
    from touchpoint.warehouse_client import query_worker

    ingested = status.get("ingested", {})
    rejected = status.get("rejected", {})
    by_channel = query_worker(settings, EVENTS_BY_CHANNEL_SQL)
    dead = query_worker(settings, DEADLETTERS_SQL).rows[0][0]
    customers = query_worker(settings, CUSTOMERS_SQL).rows[0]
    merges = query_worker(settings, MERGES_SQL).rows[0][0]
    signals = dict(query_worker(settings, OPEN_SIGNALS_SQL).rows)
    total = sum(row[1] for row in by_channel.rows)
    click.echo("")
    click.echo("=== touchpoint demo: what happened ===")
    if published >= 0:
        click.echo(f"published     {published:>9,}  ({published / max(elapsed, 1e-6):,.0f} "
                   f"events/s over {elapsed:.0f}s)")
    click.echo(f"ingested      {sum(ingested.values()):>9,}  "
               + ", ".join(f"{k} {v:,}" for k, v in sorted(ingested.items())))
    click.echo(f"dead-lettered {sum(rejected.values()):>9,}  "
               + ", ".join(f"{k} {v:,}" for k, v in sorted(rejected.items())))
    rows = status.get("sink", {}).get("rows", {})
    click.echo(f"stored        {rows.get(EVENTS_RAW, 0):>9,}  events and "
               f"{rows.get(DEADLETTER_RAW, 0):,} dead letters written by this run")
    click.echo(f"warehouse     {total:>9,}  events in {EVENTS} in all ("
               + ", ".join(f"{c} {n:,}" for c, n in by_channel.rows)
               + f"); {dead:,} in {DEADLETTER}")
    click.echo(f"customers     {customers[0]:>9,}  profiles ({customers[1]:,} have bought); "
               f"{merges:,} merges of identities (e.g. a visitor who logged in)")
    click.echo(f"signals       {sum(signals.values()):>9,}  open complaint signals ("
               + ", ".join(f"{s} {signals.get(s, 0):,}" for s in ("critical", "high", "watch"))
               + "); list them: touchpoint signals")
    click.echo(f"              {settings.warehouse}")
    click.echo("while a worker runs, ask it: touchpoint query \"SELECT type, count() FROM "
               f"{EVENTS} GROUP BY type\"")


class _WorkerFigures:
    """What the worker has done so far, for the progress line (asked at most every 2 s)."""

    def __init__(self, api: WorkerAPI) -> None:
        self.api = api
        self.asked = 0.0
        self.text = ""

    def __call__(self) -> str:
        if time.monotonic() - self.asked >= 2:
            self.asked = time.monotonic()
            status = self.api.status()
            if status is not None:
                rows = status.get("sink", {}).get("rows", {})
                profiles = status.get("profiles", {})
                self.text = (f"| stored {rows.get(EVENTS_RAW, 0):,}"
                             f"  profiles updated {profiles.get('applied', 0):,}"
                             f"  merges {status.get('identity', {}).get('merges', 0):,}"
                             f"  dead letters {sum(status.get('rejected', {}).values()):,}")
        return self.text


def _show_a_customer(settings: Settings) -> None:
    """Look up the busiest customer, as a call-center agent would."""
    from touchpoint.warehouse_client import query_worker
    from touchpoint.worker_api import WorkerAPI

    busiest = query_worker(settings, BUSIEST_CUSTOMER_SQL).rows
    if not busiest:
        return
    customer_id = busiest[0][0]
    api = WorkerAPI(settings)
    found = api.call(api.path_of("/customers/", customer_id))
    click.echo(f"\n$ touchpoint customer {customer_id}      # while a worker runs")
    click.echo(customer_text(found))


def _stop(worker: subprocess.Popen[bytes]) -> None:
    if worker.poll() is not None:
        return
    worker.send_signal(signal.SIGTERM)
    try:
        worker.wait(timeout=60)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait()
