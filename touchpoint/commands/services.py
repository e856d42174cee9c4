"""``touchpoint services``: start, stop or show the local Kafka and ClickHouse server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import click

from touchpoint.commands.common import fail, settings_or_exit

__all__ = ["services"]

REPO = Path(__file__).resolve().parents[2]
SERVICES_SCRIPT = REPO / "deploy" / "local" / "services.sh"


@click.command()
@click.argument("action", type=click.Choice(["start", "stop", "status"]))
@click.argument("service", type=click.Choice(["all", "kafka", "clickhouse"]), default="all")
def services(action: str, service: str) -> None:
    """Start, stop or show the local Kafka broker and ClickHouse server.

    Data and logs live under TOUCHPOINT_HOME. The ClickHouse server is managed when
    Debian's clickhouse-server is installed (`deploy/local/clickhouse.sh install`); the
    default warehouse is embedded (chdb) and needs no server.
    """
    settings = settings_or_exit()
    if not SERVICES_SCRIPT.exists():
        fail(f"{SERVICES_SCRIPT} not found: run from a checkout of the touchpoint repository")
    env = {**os.environ, "TOUCHPOINT_HOME": str(settings.home)}
    result = subprocess.run(["bash", str(SERVICES_SCRIPT), action, service], env=env, check=False)
    sys.exit(result.returncode)
