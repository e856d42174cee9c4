"""The Faust application: built from settings, with every stage wired in flow order."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import faust

from touchpoint.settings import Settings
from touchpoint.sinks.base import WarehouseSink
from touchpoint.sinks.clickhouse import Warehouse
from touchpoint.sinks.writer import RetryingWriter
from touchpoint.streams import ingest, store, web
from touchpoint.streams.topics import TopicNames

__all__ = ["Pipeline", "create_app"]

log = logging.getLogger(__name__)


@dataclass
class Pipeline:
    """The app and the parts a worker owns: stats, writer, warehouse."""

    app: faust.App
    topics: TopicNames
    ingest_stats: ingest.IngestStats
    writer: RetryingWriter
    warehouse: Warehouse

    def status(self) -> dict[str, Any]:
        """Counters for /status and the demo summary."""
        return {
            "worker": self.app.conf.web_port,
            "ingested": dict(self.ingest_stats.accepted),
            "rejected": dict(self.ingest_stats.rejected),
            "latest_rejections": self.ingest_stats.last_rejections,
            "sink": self.writer.stats.as_dict(),
            "warehouse": str(self.warehouse.url),
        }


def create_app(settings: Settings, warehouse: Warehouse, *,
               faust_options: dict[str, Any] | None = None) -> Pipeline:
    """Build the Faust app for ``settings`` writing into ``warehouse`` (already migrated)."""
    topics = TopicNames(settings.topic_prefix)
    datadir = settings.home / "worker" / f"{settings.app_id}-{settings.web_port}"
    datadir.mkdir(parents=True, exist_ok=True)
    options: dict[str, Any] = {
        "broker": ";".join(f"kafka://{server}" for server in settings.kafka_servers),
        "store": "memory://",
        "autodiscover": False,
        "datadir": str(datadir),
        "web_host": settings.web_host,
        "web_port": settings.web_port,
        "web_bind": settings.web_host,
        "topic_partitions": settings.topic_partitions,
        "topic_replication_factor": settings.topic_replication,
        "producer_acks": -1,
        "consumer_auto_offset_reset": "earliest",
        "broker_commit_every": 1000,
        "broker_commit_interval": 1.0,
        "stream_buffer_maxsize": 8192,
        "web_enabled": True,
    }
    options.update(faust_options or {})
    app = faust.App(settings.app_id, **options)
    ingest_stats = ingest.IngestStats()
    writer = RetryingWriter(
        WarehouseSink(warehouse), max_backoff=settings.sink_max_backoff_seconds
    )
    ingestor = ingest.Ingestor(pii_salt=settings.pii_salt, phone_region=settings.phone_region)

    ingest.register(app, topics, ingestor, ingest_stats)
    store.register(app, topics, writer, batch_size=settings.sink_batch_size,
                   flush_seconds=settings.sink_flush_seconds)
    pipeline = Pipeline(app, topics, ingest_stats, writer, warehouse)
    web.register(app, status=pipeline.status, warehouse=warehouse)
    return pipeline
