"""Topic names (CONTRACT §1, §4) and their creation with the configured partitions."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import faust
from faust.types import AppT, EventT, Message

from touchpoint.exceptions import ServiceError
from touchpoint.schemas.contract import CHANNELS
from touchpoint.settings import Settings

__all__ = ["LARGE_RECORD_BYTES", "TABLES", "RawSchema", "TopicNames", "changelog_topic",
           "ensure_topics", "raw_topic"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TopicNames:
    """Every topic the pipeline reads or writes, with the configured prefix applied.

    The contract's topics (inbound, dead letters, signals, profiles) and
    ``touchpoints.unresolved`` (normalized events, keyed by their strongest identifier:
    a replaying group reads the same events in the same order per partition) are shared
    by whoever uses the prefix. ``<app_id>-links`` and ``<app_id>-resolved`` belong to
    one consumer group, like Faust's changelogs: a second group on the same inbound
    topics (a replay into a fresh warehouse, a blue/green deployment) must never read the
    first one's links, merges, hand-overs and forwarded events, which are made against
    that group's own state.
    """

    prefix: str = ""
    app_id: str = "touchpoint"

    @classmethod
    def of(cls, settings: Settings) -> TopicNames:
        """The topics of the workers configured by ``settings``."""
        return cls(settings.topic_prefix, settings.app_id)

    def channel(self, channel: str) -> str:
        """Inbound topic of a channel, e.g. ``touchpoints.web``."""
        if channel not in CHANNELS:
            raise ValueError(f"unknown channel {channel!r}: use one of {', '.join(CHANNELS)}")
        return f"{self.prefix}touchpoints.{channel}"

    @property
    def inbound(self) -> dict[str, str]:
        """Channel name by inbound topic name."""
        return {self.channel(c): c for c in CHANNELS}

    @property
    def deadletter(self) -> str:
        """Rejected inbound records, with reasons (CONTRACT §3)."""
        return f"{self.prefix}touchpoints.deadletter"

    @property
    def replays(self) -> str:
        """Dead letters replayed, keyed by dead letter, compacted (``touchpoint/replay.py``)."""
        return f"{self.prefix}touchpoints.deadletter-replays"

    @property
    def unresolved(self) -> str:
        """Valid events after ingest, keyed by their strongest identifier."""
        return f"{self.prefix}touchpoints.unresolved"

    @property
    def links(self) -> str:
        """Events whose identifiers the identity graph must link: one partition, one graph."""
        return f"{self.prefix}{self.app_id}-links"

    @property
    def resolved(self) -> str:
        """Events keyed by resolved customer id, with merge and absorb records."""
        return f"{self.prefix}{self.app_id}-resolved"

    @property
    def signals(self) -> str:
        """Complaint signals (CONTRACT §4)."""
        return f"{self.prefix}signals.complaints"

    @property
    def profiles(self) -> str:
        """Latest profile per customer, compacted (CONTRACT §4)."""
        return f"{self.prefix}profiles.updates"

    def all(self) -> list[str]:
        """Every topic the pipeline creates."""
        return [*self.inbound, self.deadletter, self.replays, self.unresolved, self.links,
                self.resolved, self.signals, self.profiles]

    def compacted(self) -> set[str]:
        """Topics that keep only the latest record per key."""
        return {self.profiles, self.replays}

    def partitions(self, name: str, default: int) -> int:
        """Partitions a topic is created with: the graph's links go through one."""
        return 1 if name == self.links else default


#: The worker's Faust tables and their partitions (None: TOUCHPOINT_TOPIC_PARTITIONS).
TABLES: dict[str, int | None] = {
    "touchpoint-identity": 1,
    "touchpoint-profiles": None,
    "touchpoint-applied": None,
    "touchpoint-minutes": None,
}


#: Largest record, in bytes, on the changelog of a table that keeps one large value per key:
#: the minutes stage stores each input partition's windows (with the ids of the events
#: they counted) as one value, about 1 MB per 200 events/s of that partition's traffic,
#: beyond Kafka's default limit of 1 MB
#: (docs/design/aggregates-and-attribution.md). The producer's request limit follows it
#: (``app.py``).
LARGE_RECORD_BYTES = 64 * 1024 * 1024
_LARGE_VALUE_TABLES = frozenset({"touchpoint-minutes"})


def changelog_topic(app_id: str, table: str) -> str:
    """Faust's name for a table's changelog topic."""
    return f"{app_id}-{table}-changelog"


def ensure_topics(settings: Settings, names: Iterable[str] | None = None) -> list[str]:
    """Create missing topics with the configured partitions; return the ones created.

    Besides the pipeline's topics, the tables' changelog topics are created here, before
    the worker starts: Faust would create them itself once running, but its consumer then
    keeps a view of the cluster without them until the next metadata refresh (minutes),
    and a table write in between fails with "changelog topic has 0 partitions".

    Existing topics are left as they are (a partition count is never changed behind a
    running pipeline's back).
    """
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    from kafka.errors import KafkaError, TopicAlreadyExistsError

    topics = TopicNames.of(settings)
    changelogs = {changelog_topic(settings.app_id, table): partitions or settings.topic_partitions
                  for table, partitions in TABLES.items()}
    wanted = list(names) if names is not None else [*topics.all(), *changelogs]
    try:
        admin = KafkaAdminClient(
            bootstrap_servers=settings.kafka_servers, client_id=f"{settings.app_id}-admin",
            request_timeout_ms=15000,
        )
    except KafkaError as exc:
        raise ServiceError(
            f"cannot reach Kafka at {settings.kafka_bootstrap} ({exc}): start it with "
            "`touchpoint services start` or set TOUCHPOINT_KAFKA_BOOTSTRAP"
        ) from exc
    try:
        existing = set(admin.list_topics())
        missing = [name for name in wanted if name not in existing]
        compacted = topics.compacted() | set(changelogs)
        large = {changelog_topic(settings.app_id, table) for table in _LARGE_VALUE_TABLES}

        def configs(name: str) -> dict[str, str]:
            found = {"cleanup.policy": "compact"} if name in compacted else {}
            if name in large:
                found["max.message.bytes"] = str(LARGE_RECORD_BYTES)
            return found

        new = [
            NewTopic(
                name, changelogs.get(name) or topics.partitions(name, settings.topic_partitions),
                settings.topic_replication, topic_configs=configs(name),
            )
            for name in missing
        ]
        created = []
        for topic in new:
            try:
                admin.create_topics([topic])
                created.append(topic.name)
            except TopicAlreadyExistsError:
                pass  # another process created it meanwhile
        if created:
            log.info("created topics %s with %d partitions", created, settings.topic_partitions)
        return created
    except KafkaError as exc:
        raise ServiceError(f"cannot create topics on {settings.kafka_bootstrap}: {exc}") from exc
    finally:
        admin.close()


class RawSchema(faust.Schema):
    """Records as they are: key and value bytes in, the same bytes out.

    The stages decode records themselves (``schemas/codec.py``). Faust's "raw" decoding
    passes key and value through its serializer registry and codec layers, which hand
    them back unchanged. At 2,000 events/s Faust's decode was 3.0 % of the worker's
    GIL samples and this one is 2.3 % (py-spy): most of both is Faust's ``Event``.
    Sending is unchanged (the schema's serializers are "raw").
    """

    def __init__(self) -> None:
        super().__init__(key_serializer="raw", value_serializer="raw")

    def compile(self, app: AppT, *, on_key_decode_error: Any = None,
                on_value_decode_error: Any = None,
                default_propagate: bool = False) -> Any:
        """The event of a record, built directly (nothing to decode, nothing can fail)."""
        create_event = app.create_event

        async def decode(message: Message, *, propagate: bool = default_propagate) -> EventT:
            return create_event(message.key, message.value, message.headers, message)

        return decode


def raw_topic(app: faust.App, *names: str, **options: Any) -> faust.TopicT:
    """The topic(s) ``names`` of ``app``, read and written as bytes (:class:`RawSchema`)."""
    return app.topic(*names, schema=RawSchema(), **options)
