"""The identity graph: which customer each identifier belongs to, and how groups merge.

Identifiers are ``kind:value`` strings (``customer_id:C1``, ``phone:<hash>``,
``email:<hash>``, ``anonymous_id:<cookie>``); an event that carries two or more links
them into one customer. A customer's id is its CRM ``customer_id`` when it has one, else
the smallest generated id (``u-`` + a digest) of its identifiers, so it depends only on
which identifiers are linked, never on the order links were seen; two CRM ids are never
merged. The graph runs over any two mappings (plain dicts in unit tests, one Faust table
through :class:`Keyspace` in the worker) and writes them in an order that a replay can
continue from wherever a crash cuts the writes. The reasoning is in
``docs/design/identity.md``; the agent is ``streams/stages/identity.py``.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Iterator, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "GENERATED_PREFIX",
    "IdentityGraph",
    "Keyspace",
    "Merge",
    "Resolution",
    "generated_id",
    "identifiers_of",
    "is_crm",
    "own_id",
    "provisional_customer_id",
    "resolve_known",
    "strongest_identifier",
]

GENERATED_PREFIX = "u-"
# Strongest first (CONTRACT §2); e-mail and phone arrive here already hashed.
_ORDER = (("customer_id", "customer_id"), ("phone_hash", "phone"), ("email_hash", "email"),
          ("anonymous_id", "anonymous_id"))


def identifiers_of(event: dict[str, Any]) -> list[str]:
    """The ``kind:value`` identifiers of a normalized event, strongest first."""
    return [f"{kind}:{event[name]}" for name, kind in _ORDER if event.get(name)]


def strongest_identifier(event: dict[str, Any]) -> tuple[str, str]:
    """The (kind, value) of the strongest identifier of a normalized event."""
    for name, kind in _ORDER:
        value = event.get(name)
        if value:
            return kind, value
    raise ValueError(f"event {event.get('event_id')!r} has no identifier")


# Remembered: a customer's identifier comes again with each of its events, at several stages
@functools.lru_cache(maxsize=8192)
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


def provisional_customer_id(event: dict[str, Any]) -> str:
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


@dataclass(init=False)
class Resolution:
    """Who an event belongs to, and the merges its identifiers caused.

    ``aliases`` are the ids merged into the customer so far: the event may have been
    counted on one of them before (a replay), so the profiles stage applies it only once
    all of them are folded in (see ``profile_batches.py``). ``repeated`` are
    merges this same event caused when it was first resolved (it is being replayed): they
    are published again, in case the first publication was lost with the worker.
    """

    customer_id: str
    merges: tuple[Merge, ...] = ()
    conflicts: tuple[str, ...] = field(default=())  # identifiers kept by another CRM id
    aliases: tuple[str, ...] = ()
    repeated: tuple[Merge, ...] = ()

    # Written out so that mypyc compiles it: one is made for every event; not frozen,
    # which only a generated ``__init__`` can set (docs/design/compiled.md).
    def __init__(self, customer_id: str, merges: tuple[Merge, ...] = (),
                 conflicts: tuple[str, ...] = (), aliases: tuple[str, ...] = (),
                 repeated: tuple[Merge, ...] = ()) -> None:
        self.customer_id = customer_id
        self.merges = merges
        self.conflicts = conflicts
        self.aliases = aliases
        self.repeated = repeated

    @property
    def awaits(self) -> tuple[str, ...]:
        """The aliases the profiles stage must have folded in before it applies the event.

        None for an event that links groups for the first time: groups never split, so
        its identifiers were never all in one group before, and no stage can have
        resolved it (and counted it) under any of them.
        """
        return () if self.merges else self.aliases


def resolve_known(identifiers: Sequence[str], owner: Callable[[str], str | None],
                  aliases: Callable[[str], tuple[str, ...] | None]) -> Resolution | None:
    """Who an event belongs to without linking anything, from a copy of the graph; else None.

    ``owner`` and ``aliases`` read a copy of the graph that may lag behind it
    (``streams/stages/identity.py``): ``aliases`` is None for a customer the copy has
    no group for. The answer is the graph's (or a customer it has merged since, which
    hands on whatever reaches it) when every identifier names one customer, or when the
    event's one identifier is new (its own id: the graph merges that id into whoever the
    identifier joins later). Anything else needs the graph itself: None.
    """
    owners = {owner(i) for i in identifiers}
    if len(owners) != 1:
        return None
    (customer,) = owners
    if customer is None:
        return Resolution(own_id(identifiers[0])) if len(identifiers) == 1 else None
    merged = aliases(customer)
    if merged is None:
        return None  # the copy lags behind its owners (compacted away): ask the graph
    return Resolution(customer, aliases=merged)


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
        # An identifier new to the graph may have had events of its own already: the
        # partitioned stage resolves an event with one unknown identifier to that
        # identifier's own id without asking the graph. So that id is merged too, like
        # a group of its one identifier (an empty profile if it had none).
        alone = {own_id(i): i for i, c in known.items()
                 if c is None and own_id(i) != target and not is_crm(own_id(i))}
        merging = sorted({*(c for c in customers if c != target and not is_crm(c)), *alone})
        # The group as it will be, written first: the changelog may keep any prefix of
        # this record's writes (a crash), and an identifier that already names the target
        # must find the aliases it came with there (see the crash test in rules/test_identity.py).
        target_members = self._members(target)
        repeated = self._repeated(target, target_members, event_id, skip=merging)
        identifiers_now = dict.fromkeys(target_members["identifiers"])
        aliases_now = dict.fromkeys(target_members["aliases"])
        fresh = [i for i, c in known.items() if c is None]
        identifiers_now.update(dict.fromkeys(fresh))
        merges = []
        for merged in merging:
            moved = self.members.get(merged) or {
                "identifiers": [alone[merged]] if merged in alone else [], "aliases": []}
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
