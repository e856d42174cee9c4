"""Identity: every identifier of an event resolves to one customer, across touchpoints.

Identifiers are ``kind:value`` strings: ``customer_id:C1``, ``phone:<hash>``,
``email:<hash>``, ``anonymous_id:<cookie>``. An event that carries two or more links
them: from then on all resolve to the same customer.

**Which id a customer has.** A group of linked identifiers is one customer. Its id is
its CRM ``customer_id`` when it has one; otherwise the smallest of its identifiers'
generated ids (``u-`` + a digest of the identifier). Both rules depend only on *which*
identifiers are linked, not on the order in which links were seen, so the result is
the same whatever partitions or workers processed the events, and after any replay.
Two different CRM ids are two customers and are never merged; an identifier both
claim stays with the customer that claimed it first (the only order-dependent case).

**How it runs.** Resolution needs one view of all identifiers, so it reads one
ordered log (``touchpoints.unresolved``, one partition) and keeps its graph in one
changelog-backed table. It forwards each event unchanged to ``<app_id>-resolved``
keyed by the resolved customer id, so all of one customer's state lives in one
partition downstream. When a link merges customers, a merge record keyed by the
merged-away id is published first; it reaches that customer's partition after all of
its earlier events, and the profiles stage moves the state over (see ``profiles.py``).

**Replays.** After a crash or a rebalance the stage reads again from its last commit,
with tables that already hold what it did since. A replayed event that caused a merge
publishes that merge again (remembered with the event's id; downstream a repeated merge
does nothing), so a merge is never lost with a worker. A replayed event whose customer
has aliases goes out naming them, and the profiles stage applies it only once their
states are folded in: it may have been counted on one of them the first time.

**Crashes between writes.** Resolving one event may write several entries, and a crash
can keep any prefix of them. Owners and groups share one table, hence one changelog in
write order (:class:`Keyspace`); a customer's group, with its new aliases, is written
before any identifier is pointed at it, and a merged-away group is dropped last. So a
replayed event that finds its identifiers pointing at a customer also finds the aliases
it may have been counted under, and replaying the event that caused a merge finishes
it. A stage that loses its partition mid-batch handles none of its records after that
(``consumer.only_current``), so two workers never write the graph at the same time.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import faust

from touchpoint.schemas.codec import codec_for
from touchpoint.streams.runtime.consumer import only_current
from touchpoint.streams.runtime.outbox import Outbox, make_current

__all__ = [
    "AWAIT_HEADER",
    "GENERATED_PREFIX",
    "TABLE",
    "IdentityGraph",
    "Keyspace",
    "Merge",
    "Resolution",
    "generated_id",
    "identifiers_of",
    "is_crm",
    "provisional_customer_id",
    "register",
    "strongest_identifier",
]

log = logging.getLogger(__name__)

GENERATED_PREFIX = "u-"
# Strongest first (CONTRACT §2); e-mail and phone arrive here already hashed.
_ORDER = (("customer_id", "customer_id"), ("phone_hash", "phone"), ("email_hash", "email"),
          ("anonymous_id", "anonymous_id"))


def identifiers_of(event: Mapping[str, Any]) -> list[str]:
    """The ``kind:value`` identifiers of a normalized event, strongest first."""
    return [f"{kind}:{event[name]}" for name, kind in _ORDER if event.get(name)]


def strongest_identifier(event: Mapping[str, Any]) -> tuple[str, str]:
    """The (kind, value) of the strongest identifier of a normalized event."""
    for name, kind in _ORDER:
        value = event.get(name)
        if value:
            return kind, value
    raise ValueError(f"event {event.get('event_id')!r} has no identifier")


def generated_id(identifier: str) -> str:
    """The stable id of a customer known only by ``identifier`` (``u-`` + 20 hex)."""
    return GENERATED_PREFIX + hashlib.blake2b(identifier.encode(), digest_size=10).hexdigest()


def is_crm(customer_id: str) -> bool:
    """Whether a customer id is a CRM id (as opposed to a generated one)."""
    return not customer_id.startswith(GENERATED_PREFIX)


def own_id(identifier: str) -> str:
    """The id an identifier would have on its own: the CRM id, or a generated one."""
    kind, _, value = identifier.partition(":")
    return value if kind == "customer_id" else generated_id(identifier)


def provisional_customer_id(event: Mapping[str, Any]) -> str:
    """The customer an event would belong to on its own, before any linking."""
    kind, value = strongest_identifier(event)
    return own_id(f"{kind}:{value}")


@dataclass(frozen=True)
class Merge:
    """Customer ``merged_id`` became part of ``into_id``."""

    merged_id: str
    into_id: str
    identifiers: tuple[str, ...]
    aliases: tuple[str, ...]


@dataclass(frozen=True)
class Resolution:
    """Who an event belongs to, and the merges its identifiers caused.

    ``aliases`` are the ids merged into the customer so far: the event may have been
    counted on one of them before (a replay), so the profiles stage applies it only once
    all of them are folded in (see ``profiles.py``). ``repeated`` are merges this same
    event caused when it was first resolved (it is being replayed): they are published
    again, in case the first publication was lost with the worker.
    """

    customer_id: str
    merges: tuple[Merge, ...] = ()
    conflicts: tuple[str, ...] = field(default=())  # identifiers kept by another CRM id
    aliases: tuple[str, ...] = ()
    repeated: tuple[Merge, ...] = ()


class IdentityGraph:
    """Union of identifiers into customers, over two key-value stores.

    ``owner`` maps identifier → customer id; ``members`` maps customer id →
    ``{"identifiers": [...], "aliases": [...], "merges": {...}}`` (aliases: ids merged
    into it earlier; merges: for each of them, the merge and the event that caused it).
    Faust tables in the worker, plain dicts in unit tests.
    """

    def __init__(self, owner: MutableMapping[str, str],
                 members: MutableMapping[str, dict[str, Any]]) -> None:
        self.owner = owner
        self.members = members

    def lookup(self, identifier: str) -> str | None:
        """The customer an identifier belongs to, if it has been seen."""
        return self.owner.get(identifier)

    def resolve(self, identifiers: Sequence[str], event_id: str = "") -> Resolution:
        """Resolve the identifiers (strongest first) of event ``event_id``, linking them."""
        if not identifiers:
            raise ValueError("an event needs at least one identifier")
        known = {i: self.owner.get(i) for i in identifiers}
        found = set(known.values())
        if len(found) == 1 and None not in found:
            # The common case: every identifier is known and they agree; nothing to link.
            (customer,) = found
            assert customer is not None
            group = self.members.get(customer)
            if not group or not group["aliases"]:
                return Resolution(customer)
            repeated = self._repeated(customer, group, event_id)
            return Resolution(customer, aliases=tuple(group["aliases"]), repeated=repeated)
        customers = {c for c in known.values() if c is not None}
        candidates = customers | {own_id(i) for i, c in known.items() if c is None}
        event_crm = next((own_id(i) for i in identifiers if i.startswith("customer_id:")), None)
        crm = sorted(c for c in candidates if is_crm(c))
        target = event_crm or (crm[0] if crm else min(candidates))

        conflicts = [i for i, c in known.items() if c is not None and c != target and is_crm(c)]
        merging = sorted(c for c in customers if c != target and not is_crm(c))
        # The group as it will be, written first: the changelog may keep any prefix of
        # this record's writes (a crash), and an identifier that already names the target
        # must find the aliases it came with there (see test_identity's crash test).
        target_members = self._members(target)
        repeated = self._repeated(target, target_members, event_id, skip=merging)
        identifiers_now = dict.fromkeys(target_members["identifiers"])
        aliases_now = dict.fromkeys(target_members["aliases"])
        fresh = [i for i, c in known.items() if c is None]
        identifiers_now.update(dict.fromkeys(fresh))
        merges = []
        for merged in merging:
            moved = self.members.get(merged) or {"identifiers": [], "aliases": []}
            identifiers_now.update(dict.fromkeys(moved["identifiers"]))
            aliases_now.update(dict.fromkeys([merged, *moved["aliases"]]))
            target_members["merges"].update(moved.get("merges") or {})
            target_members["merges"][merged] = {
                "into_id": target, "event_id": event_id,
                "identifiers": list(moved["identifiers"]), "aliases": list(moved["aliases"])}
            merges.append(Merge(merged, target, tuple(moved["identifiers"]),
                                tuple(moved["aliases"])))
        target_members["identifiers"] = list(identifiers_now)
        target_members["aliases"] = list(aliases_now)
        if merges or fresh:
            self.members[target] = target_members  # write back: tables persist on set
        for identifier in fresh:
            self.owner[identifier] = target
        for merge in merges:
            self._finish(target, merge)
        return Resolution(target, tuple(merges), tuple(conflicts),
                          aliases=tuple(target_members["aliases"]), repeated=repeated)

    def _repeated(self, customer: str, group: Mapping[str, Any], event_id: str,
                  skip: Sequence[str] = ()) -> tuple[Merge, ...]:
        """The merges event ``event_id`` caused before (it is being replayed), finished.

        Finishing them again completes a merge whose writes a crash cut short.
        """
        if not event_id:
            return ()
        repeated = tuple(
            Merge(merged, m["into_id"], tuple(m["identifiers"]), tuple(m["aliases"]))
            for merged, m in (group.get("merges") or {}).items()
            if m["event_id"] == event_id and merged not in skip)
        for merge in repeated:
            self._finish(customer, merge)
        return repeated

    def _finish(self, customer: str, merge: Merge) -> None:
        """Point the merged-away customer's identifiers at ``customer``, its group now.

        Idempotent, and run again when the event that caused the merge is replayed: that
        completes a merge whose writes a crash cut short. Only identifiers still naming a
        merged-away id move (the customer may have been merged on since; an identifier
        that already names it, or its successor, stays).
        """
        gone = {merge.merged_id, *merge.aliases}
        for identifier in merge.identifiers:
            if self.owner.get(identifier) in gone:
                self.owner[identifier] = customer
        if self.members.get(merge.merged_id) is not None:
            self.members.pop(merge.merged_id, None)

    def _members(self, customer: str) -> dict[str, Any]:
        found = self.members.get(customer)
        if found is None:
            return {"identifiers": [], "aliases": [], "merges": {}}
        return {"identifiers": list(found["identifiers"]), "aliases": list(found["aliases"]),
                "merges": dict(found.get("merges") or {})}


class Keyspace(MutableMapping[str, Any]):
    """The entries of one kind in a shared table: key ``k`` is stored as ``prefix + k``.

    The identity graph keeps owners and groups in one table so that both go to one
    changelog partition, in the order they were written: whatever prefix of it a crash
    leaves, a replay finds a graph it can continue from (see ``IdentityGraph.resolve``).
    Two tables would be two changelogs, restored each to its own point.
    """

    def __init__(self, table: MutableMapping[str, Any], prefix: str) -> None:
        self.table = table
        self.prefix = prefix

    def get(self, key: str, default: Any = None) -> Any:
        """The value of ``key`` in this keyspace, else ``default``."""
        return self.table.get(self.prefix + key, default)

    def __getitem__(self, key: str) -> Any:
        return self.table[self.prefix + key]

    def __setitem__(self, key: str, value: Any) -> None:
        self.table[self.prefix + key] = value

    def __delitem__(self, key: str) -> None:
        del self.table[self.prefix + key]

    def pop(self, key: str, default: Any = None) -> Any:
        """Remove ``key`` from this keyspace; its value, else ``default``."""
        return self.table.pop(self.prefix + key, default)

    def __iter__(self) -> Iterator[str]:
        size = len(self.prefix)
        return (key[size:] for key in self.table if key.startswith(self.prefix))

    def __len__(self) -> int:
        return sum(1 for _ in self)


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
