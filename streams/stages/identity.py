"""Identity stages: every event resolved to one customer, across touchpoints, on every partition.

Two agents. ``touchpoint.identity`` reads the normalized events (``touchpoints.unresolved``,
partitioned like the inbound topics) and resolves each with this worker's copy of the
identity graph (:class:`~touchpoint.streams.runtime.replica.Replica` of the graph's
changelog): an event whose identifiers all name one customer, or whose one identifier is
new, goes on to ``<app_id>-resolved`` keyed by its customer id. The rest, events that
link identifiers, go to ``<app_id>-links`` (one partition), where ``touchpoint.links``
resolves them with the identity graph itself (``streams/rules/identity.py``, one
changelog-backed table), publishes the merges they cause and forwards them. A merge is
published before any event keyed by the customer it led to; an event of a customer with
aliases names them in a header, for the profiles stage to fold in first. A replayed
event that caused a merge publishes it again. Why this loses and double-counts nothing,
across replays, crashes, rebalances and a copy of the graph that lags behind it, is in
``docs/design/identity.md``.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Iterator, Mapping, MutableMapping
from typing import Any

import faust
import orjson

from touchpoint.schemas.codec import codec_for
from touchpoint.streams.rules.identity import (
    IdentityGraph,
    Keyspace,
    Merge,
    Resolution,
    identifiers_of,
    resolve_known,
)
from touchpoint.streams.runtime.batches import FORWARD_WITHIN, batch_stream, decoded
from touchpoint.streams.runtime.consumer import first_topics, is_current, only_current
from touchpoint.streams.runtime.outbox import Outbox, make_current
from touchpoint.streams.runtime.replica import Replica

__all__ = ["AWAIT_HEADER", "TABLE", "ReadThrough", "Waiting", "register", "replica_key",
           "replica_value"]

log = logging.getLogger(__name__)


class ReadThrough(MutableMapping[str, Any]):
    """A Faust table with the entries read recently kept as Python objects.

    A table read decodes JSON from RocksDB; the link stage reads the owner of every
    identifier of every event it gets. Only the link agent writes the graph and it writes
    through this mapping, so the copy stays true while this worker holds the partition;
    it is dropped on every rebalance (the table may have been changed elsewhere) and
    when it outgrows ``limit`` entries (a worker's memory must not grow with the
    customers it has seen: the copy keeps what recent links touched).
    """

    def __init__(self, table: MutableMapping[str, Any], limit: int = 100_000) -> None:
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


class Waiting:
    """Identifiers of events on their way through the link stage, each with its last offset.

    ``update`` names the identifiers of a batch's events sent to ``<app_id>-links`` with
    the offset of the batch's last one there; ``passed(linked)`` forgets those whose
    last event is before ``linked`` (the link stage has forwarded it). Offsets come in
    order, so forgetting costs what is forgotten, not what is still waiting.
    """

    def __init__(self) -> None:
        self._last: dict[str, int] = {}
        self._sent: deque[tuple[int, set[str]]] = deque()  # (offset, identifiers), in order

    def __contains__(self, identifier: object) -> bool:
        return identifier in self._last

    def __len__(self) -> int:
        return len(self._last)

    def update(self, identifiers: set[str], offset: int) -> None:
        """``identifiers`` have an event sent to the link stage, the last at ``offset``."""
        self._last.update(dict.fromkeys(identifiers, offset))
        self._sent.append((offset, identifiers))

    def passed(self, linked: int) -> None:
        """Forget the identifiers whose last event is before offset ``linked``."""
        while self._sent and self._sent[0][0] < linked:
            offset, identifiers = self._sent.popleft()
            for identifier in identifiers:
                if self._last.get(identifier) == offset:  # not sent again since
                    del self._last[identifier]


#: The Faust table of the identity graph (owners and groups, see :class:`Keyspace`).
TABLE = "touchpoint-identity"
#: Records one identity or link batch takes at most (it waits up to ``FORWARD_WITHIN``).
BATCH_RECORDS = 1000
#: The identity table's key for the offset of ``<app_id>-links`` before which the link
#: stage has forwarded every event (every worker's copy of the graph has it too).
LINKED_KEY = "linked"
#: Kafka header on ``<app_id>-resolved`` events: the customer's aliases (comma-separated)
#: that the profiles stage must have folded in before it applies the event.
AWAIT_HEADER = "touchpoint-await"


def replica_key(key: bytes) -> bytes:
    """The key a worker's copy of the graph keeps for a changelog key (its text, UTF-8).

    Faust writes a table's text keys JSON-encoded (``"o:anonymous_id:ck-1"``, quoted).
    """
    return str(orjson.loads(key)).encode()


def replica_value(key: bytes, value: bytes) -> bytes | None:
    """What a worker's copy of the graph keeps of a changelog record (see :class:`Replica`).

    ``o:<identifier>``: its customer id; ``m:<customer>``: the ids merged into it,
    comma-separated (empty: a group without aliases). ``key`` is :func:`replica_key`'s.
    """
    decoded = orjson.loads(value)
    if key == LINKED_KEY.encode():
        return str(int(decoded)).encode()
    if key.startswith(b"o:"):
        return str(decoded).encode()
    if key.startswith(b"m:"):
        return ",".join(decoded["aliases"]).encode()
    return None


def _await_headers(aliases: tuple[str, ...]) -> list[tuple[str, bytes]] | None:
    return [(AWAIT_HEADER, ",".join(aliases).encode())] if aliases else None


def register(app: faust.App, *, unresolved: faust.TopicT, links: faust.TopicT,
             resolved: faust.TopicT, replica: Replica, stats: dict[str, int]) -> IdentityGraph:
    """Add the identity agents and the graph's table to ``app``; return the graph (for lookups).

    ``replica`` follows the graph's changelog (``TABLE``) on this worker.
    """
    # keys and values JSON: Faust's defaults for tables. One table, one changelog
    # (see Keyspace): "o:<identifier>" -> customer id, "m:<customer id>" -> its group.
    table = ReadThrough(app.Table(TABLE, partitions=1, key_type=str))
    graph = IdentityGraph(Keyspace(table, "o:"), Keyspace(table, "m:"))

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]  # mode types sync receivers
    async def _forget(sender: Any, *args: Any, **kwargs: Any) -> None:
        table.clear_kept()
    event_codec = codec_for("event")
    merge_codec = codec_for("merge")
    resolved_name, links_name = resolved.get_topic_name(), links.get_topic_name()
    # a quarter or more of a backlog's events pass the link stage on their way to the
    # profiles stage: its records go out of each fetch first (consumer.py)
    first_topics(app).add(links_name)
    # in batches, past Faust's streams (batches.py)
    unresolved_records, links_records = batch_stream(app, unresolved), batch_stream(app, links)

    def owner(identifier: str) -> str | None:
        found = replica.get(b"o:" + identifier.encode())
        return None if found is None else found.decode()

    def aliases(customer: str) -> tuple[str, ...] | None:
        found = replica.get(b"m:" + customer.encode())
        if found is None:
            return None
        return tuple(found.decode().split(",")) if found else ()

    def linked_up_to() -> int:
        """The offset of ``<app_id>-links`` the link stage has forwarded everything before."""
        found = replica.get(LINKED_KEY.encode())
        return -1 if found is None else int(found)

    @app.agent(unresolved, name="touchpoint.identity")
    async def identity(stream: faust.StreamT[bytes]) -> None:
        # Stateless but for the graph's copy, read as it stands: any partition, any worker.
        # It never waits for the link stage: the worker's one delivery loop would stop
        # feeding that stage once this one's buffer is full. Instead an event that names
        # an identifier of one still on its way through the link stage follows it there
        # (``waiting``: identifier -> offset of its last event sent to link), so a
        # customer's later events do not overtake it.
        outbox = Outbox(app)
        await replica.caught_up.wait()  # else every known customer would look new
        waiting = Waiting()
        async for events in unresolved_records.take_acked(BATCH_RECORDS, within=FORWARD_WITHIN):
            if waiting:
                waiting.passed(linked_up_to())
            linking: set[str] = set()  # identifiers of this batch's events sent to link
            known = 0
            for message in only_current(app, events):
                value = message.value
                identifiers = identifiers_of(decoded(message, event_codec.decode))
                resolution = None
                if not any(i in linking or i in waiting for i in identifiers):
                    resolution = resolve_known(identifiers, owner, aliases)
                if resolution is None:
                    linking.update(identifiers)
                    stats["to_link"] = stats.get("to_link", 0) + 1
                    await outbox.send(links_name, message.key, value)
                else:
                    known += 1
                    await outbox.send(resolved_name, resolution.customer_id.encode(), value,
                                      _await_headers(resolution.awaits))
            await outbox.delivered()
            if linking:
                waiting.update(linking, outbox.last_offsets.get(links_name, -1))
            stats["resolved"] = stats.get("resolved", 0) + known

    links_outbox = Outbox(app)

    async def publish(merge: Merge, event: Mapping[str, Any]) -> None:
        record = {
            "merged_id": merge.merged_id, "into_id": merge.into_id,
            "merged_at": event["occurred_at"], "event_id": event["event_id"],
            "identifiers": list(merge.identifiers), "aliases": list(merge.aliases),
            "recorded_at": int(time.time() * 1000),
        }
        await links_outbox.send(resolved_name, merge.merged_id.encode(),
                                merge_codec.encode(record, check=False))

    async def forward(resolution: Resolution, event: Mapping[str, Any], value: bytes) -> None:
        for merge in resolution.merges:
            stats["merges"] = stats.get("merges", 0) + 1
            await publish(merge, event)
        for merge in resolution.repeated:
            # A replay of the event that caused this merge: publish it again (the first
            # copy may have died with the worker); downstream, a repeat is a no-op.
            stats["merges_repeated"] = stats.get("merges_repeated", 0) + 1
            await publish(merge, event)
        if resolution.conflicts:
            log.info("event %s: %s stay with another CRM customer than %s",
                     event["event_id"], len(resolution.conflicts), resolution.customer_id)
        stats["linked"] = stats.get("linked", 0) + 1  # of "resolved": through the graph
        stats["resolved"] = stats.get("resolved", 0) + 1
        await links_outbox.send(resolved_name, resolution.customer_id.encode(), value,
                                _await_headers(resolution.awaits))

    @app.agent(links, name="touchpoint.links")
    async def link(stream: faust.StreamT[bytes]) -> None:
        # In batches (the table has one partition, so Faust's changelog partition does
        # not depend on which record is current); outputs are delivered before the batch
        # is acknowledged (see outbox.py).
        async for events in links_records.take_acked(BATCH_RECORDS, within=FORWARD_WITHIN):
            # revoked mid-batch, it handles no more of it: this worker's tables and outputs
            # would otherwise interleave with the partition's next owner's
            for message in only_current(app, events):
                make_current(message)  # for the table's changelog (see outbox.py)
                event = event_codec.decode(message.value)
                await forward(graph.resolve(identifiers_of(event), event["event_id"]), event,
                              message.value)
            await links_outbox.delivered()
            if not events:
                # taken while flow was suspended (a stop or a rebalance, batches.py):
                # nothing was forwarded. Raising here crashed the stage, and in a stop
                # Faust then waited for ever for a replacement it never started.
                continue
            last = events[-1]
            if is_current(app, last.message):
                # everything before is forwarded: the identity stage may resolve those
                # events' identifiers itself again (see identity())
                make_current(last)
                table[LINKED_KEY] = last.message.offset + 1

    return graph
