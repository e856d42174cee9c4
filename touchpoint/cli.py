"""The ``touchpoint`` command: services, worker, publish, backfill, deadletters, query, demo, ...

One module per command (or pair of commands) in :mod:`touchpoint.commands`; this module
only gathers them. ``python -m touchpoint.cli worker`` runs a worker, as the demo and the
integration tests do.
"""

from __future__ import annotations

import click

from touchpoint import __version__
from touchpoint.commands.backfill import backfill
from touchpoint.commands.collect import collect, keys
from touchpoint.commands.customer import customer
from touchpoint.commands.deadletters import deadletters
from touchpoint.commands.demo import demo
from touchpoint.commands.publish import publish
from touchpoint.commands.reports import report, signals
from touchpoint.commands.sentiment import sentiment
from touchpoint.commands.services import services
from touchpoint.commands.settings import show_settings
from touchpoint.commands.simulate import simulate
from touchpoint.commands.warehouse import migrate, query
from touchpoint.commands.worker import worker

__all__ = ["main"]


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


for command in (services, worker, publish, backfill, simulate, migrate, query, signals, report,
                customer, deadletters, show_settings, demo, sentiment):
    main.add_command(command)
main.add_command(collect)
main.add_command(keys)


if __name__ == "__main__":
    main()
