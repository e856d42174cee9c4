"""``touchpoint collect`` (the HTTP collector) and ``touchpoint keys`` (its write keys)."""

from __future__ import annotations

import os
import shutil
import tempfile
from datetime import UTC, datetime

import click

from touchpoint.commands.common import one_line_errors, settings_or_exit, text_table
from touchpoint.schemas.contract import CHANNELS

__all__ = ["collect", "keys"]


@click.command()
@click.option("--host", help="Address to bind (default: TOUCHPOINT_COLLECT_HOST).")
@click.option("--port", type=click.IntRange(1, 65535),
              help="Port (default: TOUCHPOINT_COLLECT_PORT).")
@click.option("--workers", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Processes serving the port; one per core.")
def collect(host: str | None, port: int | None, workers: int) -> None:
    """Run the HTTP collector: POST /v1/events puts JSON events on the channel topics.

    Each event is checked as ingest checks it; the answer lists every event as accepted
    or refused with its reason, and comes only once Kafka has acknowledged the accepted
    ones (503 with Retry-After while Kafka is unreachable). Senders need a write key
    (`touchpoint keys create`). Also serves /health, /ready and /metrics.
    """
    import uvicorn

    from touchpoint.collector.metrics import MULTIPROCESS_ENV

    settings = settings_or_exit(collect_host=host, collect_port=port)
    if not settings.collect_keys_path.exists():
        click.echo(f"touchpoint collect: no write keys yet ({settings.collect_keys_path}); "
                   "every request gets 401 until `touchpoint keys create`", err=True)
    metrics_dir = None
    if workers > 1:  # every process's figures in one folder, so any /metrics shows all
        settings.home.mkdir(parents=True, exist_ok=True)
        metrics_dir = tempfile.mkdtemp(prefix="collect-metrics-", dir=settings.home)
        os.environ[MULTIPROCESS_ENV] = metrics_dir
    click.echo(f"touchpoint collect: http://{settings.collect_host}:{settings.collect_port}"
               f"/v1/events -> {settings.kafka_bootstrap} ({workers} process(es))", err=True)
    try:
        uvicorn.run("touchpoint.collector.app:from_environment", factory=True,
                    host=settings.collect_host, port=settings.collect_port, workers=workers,
                    access_log=False, log_level="warning", server_header=False,
                    # a slow or idle client must not hold a connection for long
                    timeout_keep_alive=15, limit_concurrency=2048)
    finally:
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)


@click.group()
def keys() -> None:
    """Create, list and revoke the collector's write keys (one per source)."""


@keys.command("create")
@click.argument("name")
@click.option("--channel", "-c", "channels", multiple=True, required=True,
              type=click.Choice(list(CHANNELS)), help="A channel the key may send (repeat).")
@click.option("--origin", "origins", multiple=True,
              help="A browser origin whose pages may use the key, e.g. "
                   "https://shop.example.com (repeat). None: not for browsers.")
def create_key(name: str, channels: tuple[str, ...], origins: tuple[str, ...]) -> None:
    """Create a write key for the source NAME; its secret is printed once, here only."""
    from touchpoint.collector.keys import KeyFile

    settings = settings_or_exit()
    with one_line_errors():
        key, secret = KeyFile(settings.collect_keys_path).create(name, channels, origins)
    click.echo(f"created write key {key.key_id} ({key.name}) for {', '.join(key.channels)}; "
               "its secret, shown only now:", err=True)
    click.echo(secret)


@keys.command("list")
def list_keys() -> None:
    """List the write keys (never their secrets)."""
    from touchpoint.collector.keys import KeyFile

    settings = settings_or_exit()
    with one_line_errors():
        found = KeyFile(settings.collect_keys_path).all()
    rows = [(k.key_id, k.name, ",".join(k.channels), ",".join(k.origins) or "-",
             _when(k.created_at), _when(k.revoked_at) if k.revoked_at else "active")
            for k in found]
    click.echo(text_table(("id", "name", "channels", "origins", "created", "status"), rows))


@keys.command("revoke")
@click.argument("key_id")
def revoke_key(key_id: str) -> None:
    """Revoke the write key KEY_ID; collectors refuse it within 2 seconds."""
    from touchpoint.collector.keys import KeyFile

    settings = settings_or_exit()
    with one_line_errors():
        key = KeyFile(settings.collect_keys_path).revoke(key_id)
    click.echo(f"revoked write key {key.key_id} ({key.name})")


def _when(epoch_s: int | None) -> str:
    if epoch_s is None:
        return "-"
    return datetime.fromtimestamp(epoch_s, UTC).strftime("%Y-%m-%d %H:%M:%SZ")
