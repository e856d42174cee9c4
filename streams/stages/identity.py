"""Identity stage: the agent that resolves every event to one customer, across touchpoints.

It reads the one ordered log of normalized events (``touchpoints.unresolved``, one
partition), resolves each event's identifiers with the identity graph
(``streams/rules/identity.py``), kept in one changelog-backed table, and forwards the
event unchanged to ``<app_id>-resolved`` keyed by its customer id. A merge the event
caused is published first, keyed by the merged-away id; an event of a customer with
aliases names them in a header, for the profiles stage to fold in first. A replayed
event that caused a merge publishes it again. Why this loses and double-counts nothing,
across replays, crashes and rebalances, is in ``docs/design/identity.md``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping, MutableMapping
from typing import Any, cast

import faust

from touchpoint.schemas.codec import codec_for
from touchpoint.streams.rules.identity import IdentityGraph, Keyspace, Merge, identifiers_of
from touchpoint.streams.runtime.consumer import only_current
from touchpoint.streams.runtime.outbox import Outbox, make_current

__all__ = ["AWAIT_HEADER", "TABLE", "ReadThrough", "register"]

log = logging.getLogger(__name__)


class ReadThrough(MutableMapping[str, Any]):
    """A Faust table with the entries read recently kept as Python objects.

    A table read decodes JSON from RocksDB; the identity stage reads an identifier's
    owner for every event. Only the identity agent writes these tables and it writes
    through this mapping, so the copy stays true while this worker holds the partition;
    it is dropped on every rebalance (the table may have been changed elsewhere) and
    when it outgrows ``limit`` entries.
    """

    def __init__(self, table: MutableMapping[str, Any], limit: int = 500_000) -> None:
        self.table = table
        self.limit = limit
        self._kept: dict[str, Any] = {}

    def clear_kept(self) -> None:
        """Forget the kept entries (after a rebalance)."""
        self._kept.clear()

    def get(self, key: str, default: Any = None) -> Any:
        """The value of ``key``, from the kept copy if it is there, else ``default``."""
        try:
            return self._kept[key]
        except KeyError:
            pass
        value = self.table.get(key)
        if value is not None:
            self._keep(key, value)
        return default if value is None else value

    def _keep(self, key: str, value: Any) -> None:
        if len(self._kept) >= self.limit:
            self._kept.clear()
        self._kept[key] = value

    def __getitem__(self, key: str) -> Any:
        value = self.get(key)
        if value is None:
            raise KeyError(key)
        return value

    def __setitem__(self, key: str, value: Any) -> None:
        self.table[key] = value
        self._keep(key, value)

    def __delitem__(self, key: str) -> None:
        self._kept.pop(key, None)
        del self.table[key]

    def pop(self, key: str, default: Any = None) -> Any:
        """Remove ``key`` from the table and the kept copy; its value, else ``default``."""
        self._kept.pop(key, None)
        return self.table.pop(key, default)

    def __iter__(self) -> Iterator[str]:
        return iter(self.table)

    def __len__(self) -> int:
        return len(self.table)


#: The Faust table of the identity graph (owners and groups, see :class:`Keyspace`).
TABLE = "touchpoint-identity"
#: Records one identity batch takes at most, and how long it waits to fill one (seconds).
BATCH_RECORDS = 1000
BATCH_WITHIN = 0.02
#: Kafka header on ``<app_id>-resolved`` events: the customer's aliases (comma-separated)
#: that the profiles stage must have folded in before it applies the event.
AWAIT_HEADER = "touchpoint-await"


def register(app: faust.App, *, unresolved: faust.TopicT, resolved: faust.TopicT,
             stats: dict[str, int]) -> IdentityGraph:
    """Add the identity agent and its tables to ``app``; return the graph (for lookups)."""
    # keys raw (utf-8), values JSON: Faust's defaults for tables. One table, one changelog
    # (see Keyspace): "o:<identifier>" -> customer id, "m:<customer id>" -> its group.
    table = ReadThrough(app.Table(TABLE, partitions=1, key_type=str), limit=1_000_000)
    graph = IdentityGraph(Keyspace(table, "o:"), Keyspace(table, "m:"))

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]  # mode types sync receivers
    async def _forget(sender: Any, *args: Any, **kwargs: Any) -> None:
        table.clear_kept()
    event_codec = codec_for("event")
    merge_codec = codec_for("merge")
    outbox = Outbox(app)
    resolved_name = resolved.get_topic_name()

    async def publish(merge: Merge, event: Mapping[str, Any]) -> None:
        record = {
            "merged_id": merge.merged_id, "into_id": merge.into_id,
            "merged_at": event["occurred_at"], "event_id": event["event_id"],
            "identifiers": list(merge.identifiers), "aliases": list(merge.aliases),
            "recorded_at": int(time.time() * 1000),
        }
        await outbox.send(resolved_name, merge.merged_id.encode(), merge_codec.encode(record))

    @app.agent(unresolved, name="touchpoint.identity")
    async def identity(stream: faust.StreamT[bytes]) -> None:
        # In batches (the tables have one partition, so Faust's changelog partition does
        # not depend on which record is current); outputs are delivered before the batch
        # is acknowledged (see outbox.py).
        concrete = cast(faust.Stream[bytes], stream)
        async for events in concrete.take_events(BATCH_RECORDS, within=BATCH_WITHIN):
            # revoked mid-batch, it handles no more of it: this worker's tables and outputs would
            # otherwise interleave with the partition's next owner's
            for message in only_current(app, events):
                make_current(message)  # for the tables' changelog (see outbox.py)
                value = message.value
                event = event_codec.decode(value)
                resolution = graph.resolve(identifiers_of(event), event["event_id"])
                for merge in resolution.merges:
                    stats["merges"] = stats.get("merges", 0) + 1
                    await publish(merge, event)
                for merge in resolution.repeated:
                    # A replay of the event that caused this merge: publish it again (the
                    # first copy may have died with the worker); downstream, a repeat is
                    # a no-op.
                    stats["merges_repeated"] = stats.get("merges_repeated", 0) + 1
                    await publish(merge, event)
                if resolution.conflicts:
                    log.info("event %s: %s stay with another CRM customer than %s",
                             event["event_id"], len(resolution.conflicts),
                             resolution.customer_id)
                stats["resolved"] = stats.get("resolved", 0) + 1
                headers = ([(AWAIT_HEADER, ",".join(resolution.aliases).encode())]
                           if resolution.aliases else None)
                await outbox.send(resolved_name, resolution.customer_id.encode(), value,
                                  headers)
            await outbox.delivered()

    return graph
