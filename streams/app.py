"""The Faust application: built from settings, with every stage wired in flow order.

inbound topics ─▶ ingest ─▶ touchpoints.unresolved ─▶ identity ───────────▶ <app_id>-resolved
│                   └─▶ minutes (touchpoint_minute)   └─▶ <app_id>-links ─▶ links ─┘  │
└─▶ touchpoints.deadletter ─▶ store                     (graph: one partition)         │
                                            profiles ◀─────────────────────────────────┘
                                            ─▶ profiles.updates (+ campaign attribution,
                                               + the events stored: runtime.Behind)

The Faust ``App`` subclass and everything else that overrides Faust is in ``runtime/``.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import faust

from touchpoint import compiled
from touchpoint.settings import Settings
from touchpoint.sinks import tables
from touchpoint.sinks.base import WarehouseSink
from touchpoint.sinks.clickhouse import Warehouse
from touchpoint.sinks.writer import RetryingWriter
from touchpoint.streams.ops import access, web
from touchpoint.streams.ops.dashboard import register as register_dashboard
from touchpoint.streams.ops.lag import OffsetMonitor
from touchpoint.streams.ops.metrics import register as register_metrics
from touchpoint.streams.rules import attribution, campaigns, complaints, normalize, segments
from touchpoint.streams.runtime import changelog, compression, consumer, tablestore
from touchpoint.streams.runtime.app import App
from touchpoint.streams.runtime.behind import behind
from touchpoint.streams.runtime.replica import Replica
from touchpoint.streams.stages import identity, ingest, minutes, profiles, store
from touchpoint.streams.topics import LARGE_RECORD_BYTES, TopicNames, changelog_topic, raw_topic

__all__ = ["Pipeline", "create_app", "new_app", "worker_options"]

log = logging.getLogger(__name__)


@dataclass
class Pipeline:
    """The app and the parts a worker owns: stats, writer, warehouse, tables."""

    app: faust.App
    topics: TopicNames
    ingest_stats: normalize.IngestStats
    writer: RetryingWriter
    warehouse: Warehouse
    identity_stats: dict[str, int] = field(default_factory=dict)
    profile_stats: dict[str, int] = field(default_factory=dict)
    #: the connection people's SQL is read through: ``warehouse`` itself on chdb
    reader: Warehouse | None = None
    minute_stats: dict[str, int] = field(default_factory=dict)

    def close(self) -> None:
        """Close the writer (and the warehouse with it) and the reader's own connection."""
        try:
            self.writer.close()
        finally:
            if self.reader is not None and self.reader is not self.warehouse:
                self.reader.close()

    def status(self) -> dict[str, Any]:
        """Counters for /status and the demo summary."""
        return {
            "worker": self.app.conf.web_port,
            "build": compiled.state(),  # compiled rules, or their Python sources and why
            "ingested": dict(self.ingest_stats.accepted),
            "rejected": dict(self.ingest_stats.rejected),
            "latest_rejections": self.ingest_stats.last_rejections,
            "identity": dict(self.identity_stats),
            "profiles": dict(self.profile_stats),
            "minutes": dict(self.minute_stats),
            "sink": self.writer.stats.as_dict(),
            "warehouse": str(self.warehouse.url),
            "stale_acks_refused": getattr(self.app.consumer, "stale_acks", 0),
            "batches_abandoned": getattr(self.app.consumer, "batches_abandoned", 0),
            "records_refetched": getattr(self.app.consumer, "records_refetched", 0),
            "offsets_taken_as_gaps": getattr(self.app.consumer, "offsets_taken_as_gaps", 0),
            "records_in_recovery": getattr(self.app.consumer, "records_in_recovery", 0),
        }


def worker_options(settings: Settings, datadir: Path) -> dict[str, Any]:
    """The Faust settings of a worker for ``settings``, its tables under ``datadir``.

    Also what ``bench/floor_bench.py`` runs its framework-only worker with.
    """
    # RocksDB (through rocksdict) keeps tables on disk; memory works everywhere.
    table_store = "rocksdb://" if importlib.util.find_spec("rocksdict") else "memory://"
    return {
        "broker": ";".join(f"kafka://{server}" for server in settings.kafka_servers),
        "store": table_store,
        "autodiscover": False,
        "datadir": str(datadir),
        "web_host": settings.web_host,
        "web_port": settings.web_port,
        "web_bind": settings.web_host,
        # how other workers reach this one when they route a lookup here
        "canonical_url": f"http://{settings.web_host}:{settings.web_port}",
        "topic_partitions": settings.topic_partitions,
        "topic_replication_factor": settings.topic_replication,
        "producer_acks": -1,
        # Batch what the stages produce (events, merges, table changelogs) for 5 ms:
        # without it every message is a request of its own, and sending dominates.
        "producer_linger": 0.005,
        "producer_max_batch_size": 512 * 1024,
        # Profiles rewritten as JSON make most of the bytes the workers produce; LZ4 cuts
        # them 4-8x for less CPU than the socket writes it saves (docs/design/runtime.md),
        # at its fast level (compression.py).
        "producer_compression_type": "lz4",
        # the minutes stage's window state is one large changelog record (topics.py)
        "producer_max_request_size": LARGE_RECORD_BYTES,
        "consumer_auto_offset_reset": "earliest",
        # Faust's 60 s would hold a killed worker's partitions, unprocessed, for a minute
        # (also against its own restart, which waits for the group to drop it).
        "broker_session_timeout": settings.session_timeout_seconds,
        # each standby has every worker read and store the others' table changelogs
        # (docs/design/runtime.md)
        "table_standby_replicas": settings.standby_replicas,
        "broker_commit_every": 1000,
        "broker_commit_interval": 1.0,
        # Faust pauses a partition whose stream buffer is nearly full and fetches it
        # again when it drains; a smaller buffer cut the profiles stage's throughput
        # (docs/design/runtime.md).
        "stream_buffer_maxsize": 4096,
        # records made of fetched data as the delivery loop takes them (consumer.py)
        "broker_max_poll_records": consumer.UNPACK_RECORDS,
        "web_enabled": True,
        # The store stages hold records unacknowledged until their rows are stored, so
        # waiting for "every record acknowledged" on stop or rebalance would wait
        # forever. Unacknowledged records are simply not committed and are read again
        # by the next owner; every stage is idempotent for that. Records of the old
        # generation still in flight cannot be acknowledged into the new one's commits
        # (see consumer.py).
        "stream_wait_empty": False,
        # tables send their changelogs in batches (changelog.py)
        "Table": changelog.Table,
    }


def new_app(name: str, settings: Settings, options: dict[str, Any]) -> App:
    """A Faust app called ``name`` with ``options``, in a process set up for ``settings``."""
    tablestore.share_memory(settings.rocksdb_memory_mb)
    compression.use_fast_lz4()
    app = App(name, **options)
    app.fetch_wait_ms = settings.fetch_wait_ms
    return app


def create_app(settings: Settings, warehouse: Warehouse, *, reader: Warehouse | None = None,
               faust_options: dict[str, Any] | None = None) -> Pipeline:
    """Build the Faust app for ``settings`` writing into ``warehouse`` (already migrated).

    People's SQL over HTTP is read through ``reader``
    (:func:`~touchpoint.sinks.query_guard.open_reader`), by default ``warehouse``.
    """
    topics = TopicNames.of(settings)
    datadir = settings.home / "worker" / f"{settings.app_id}-{settings.web_port}"
    datadir.mkdir(parents=True, exist_ok=True)
    options = worker_options(settings, datadir)
    options.update(faust_options or {})
    access.install(options, access.Access.of(settings))
    app = new_app(settings.app_id, settings, options)
    ingest_stats = normalize.IngestStats()
    # Rows the warehouse refuses for their values go to the dead-letter topic, and the
    # rest of their batch is stored; refused dead letters themselves are retried (a dead
    # letter of a dead letter would come back to the same table).
    writer = RetryingWriter(
        WarehouseSink(warehouse), max_backoff=settings.sink_max_backoff_seconds,
        refused=store.deadletter_refused(app, topics, noted=ingest_stats.note_rejection),
        retry_refused=(tables.DEADLETTER_RAW,),
    )
    unresolved = raw_topic(app, topics.unresolved, partitions=settings.topic_partitions)
    links = raw_topic(app, topics.links, partitions=1)
    resolved = raw_topic(app, topics.resolved, partitions=settings.topic_partitions)
    updates = raw_topic(app, topics.profiles, partitions=settings.topic_partitions)
    signals = raw_topic(app, topics.signals, partitions=settings.topic_partitions)
    signal_rules = complaints.Rules.load(settings.signal_rules or None)
    rules = segments.SegmentRules(
        at_risk_days=settings.at_risk_days, lapsed_days=settings.lapsed_days,
        key_share=settings.key_tier_share, growth_share=settings.growth_tier_share)

    pipeline = Pipeline(app, topics, ingest_stats, writer, warehouse)
    ingestor = normalize.Ingestor(pii_salt=settings.pii_salt, phone_region=settings.phone_region)
    ingest.register(app, topics, ingestor, ingest_stats)
    # every worker's copy of the identity graph, for the partitioned identity stage
    replica = app.add_dependency(Replica(
        bootstrap=settings.kafka_servers, topic=changelog_topic(settings.app_id, identity.TABLE),
        path=datadir / "identity-replica", key=identity.replica_key,
        transform=identity.replica_value))
    graph = identity.register(app, unresolved=unresolved, links=links, resolved=resolved,
                              replica=replica, stats=pipeline.identity_stats)
    attributor = campaigns.Attributor(
        model=attribution.model_for(settings.attribution_model),
        window=timedelta(days=settings.attribution_window_days))
    # the profiles stage also stores the events it reads (see store.py)
    stored = behind(app, writer, store.resolved_batches, name="touchpoint.store_events",
                    batch_size=settings.sink_batch_size,
                    flush_seconds=settings.sink_flush_seconds)
    table = profiles.register(
        app, resolved=resolved, updates=updates, signals=signals, writer=writer,
        stored=stored, rules=rules,
        signal_rules=signal_rules, signal_lateness_ms=settings.signal_lateness_seconds * 1000,
        emit_seconds=settings.profile_emit_seconds,
        map_type=warehouse.capabilities.map_type, partitions=settings.topic_partitions,
        stats=pipeline.profile_stats, attribution=attributor)
    # exposures record the customer's value tier, by the cut-offs the profiles estimate
    attributor.tier_of = lambda p: rules.tier(p, table.estimator.cutoffs())
    minutes.register(app, unresolved=unresolved, writer=writer, rules=signal_rules,
                     grace=timedelta(seconds=settings.aggregate_grace_seconds),
                     partitions=settings.topic_partitions,
                     batch_size=settings.sink_batch_size,
                     flush_seconds=settings.sink_flush_seconds, stats=pipeline.minute_stats)
    store.register(app, topics, writer, batch_size=settings.sink_batch_size,
                   flush_seconds=settings.sink_flush_seconds)
    pipeline.reader = reader or warehouse
    web.register(app, status=pipeline.status, warehouse=warehouse, reader=pipeline.reader,
                 limits=web.QueryLimits(settings.query_timeout_seconds, settings.query_max_rows))
    web.register_customers(
        app, graph=graph, profiles=table, lookup=profiles.profile_lookup(table, rules),
        warehouse=warehouse, identify=web.Identify(settings.pii_salt, settings.phone_region))
    # Operations: /metrics and /health of this worker; the dashboard (/) of the whole group,
    # from Kafka's offsets and the warehouse.
    offsets = app.add_dependency(OffsetMonitor.for_workers(settings))
    register_metrics(app, pipeline=pipeline, monitor=offsets)
    register_dashboard(app, warehouse=warehouse, topics=topics, monitor=offsets)
    return pipeline
