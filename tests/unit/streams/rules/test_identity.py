from __future__ import annotations

import copy
import itertools
import random

from touchpoint.streams.rules.identity import (
    IdentityGraph,
    Merge,
    generated_id,
    identifiers_of,
    is_crm,
    resolve_known,
)


def graph() -> IdentityGraph:
    return IdentityGraph({}, {})


def test_identifiers_strongest_first() -> None:
    event = {"anonymous_id": "ck", "email_hash": "e", "customer_id": "C1", "phone_hash": None}
    assert identifiers_of(event) == ["customer_id:C1", "email:e", "anonymous_id:ck"]


def test_an_anonymous_visitor_who_logs_in_becomes_the_crm_customer() -> None:
    g = graph()
    anonymous = g.resolve(["anonymous_id:ck-1"])
    assert anonymous.customer_id == generated_id("anonymous_id:ck-1")
    assert not is_crm(anonymous.customer_id)
    login = g.resolve(["customer_id:C1", "anonymous_id:ck-1"], "login-1")
    assert login.customer_id == "C1"
    merge = Merge(anonymous.customer_id, "C1", ("anonymous_id:ck-1",), ())
    assert login.merges == (merge,)
    assert g.resolve(["anonymous_id:ck-1"]).customer_id == "C1"
    assert g.members["C1"] == {
        "identifiers": ["customer_id:C1", "anonymous_id:ck-1"],
        "aliases": [anonymous.customer_id],
        "merges": {anonymous.customer_id: {"into_id": "C1", "event_id": "login-1",
                                           "identifiers": ["anonymous_id:ck-1"],
                                           "aliases": []}},
    }
    assert anonymous.customer_id not in g.members


def test_events_of_a_merged_customer_name_its_aliases_and_a_replayed_link_repeats_its_merge(
) -> None:
    g = graph()
    anonymous = g.resolve(["anonymous_id:ck-1"], "view-1").customer_id
    g.resolve(["customer_id:C1", "anonymous_id:ck-1"], "login-1")
    later = g.resolve(["anonymous_id:ck-1"], "view-2")
    # the profiles stage holds this event until the anonymous profile is folded into C1
    assert (later.customer_id, later.aliases, later.merges, later.repeated) == (
        "C1", (anonymous,), (), ())
    # replaying the login (after a crash) links nothing new but publishes its merge again
    replayed = g.resolve(["customer_id:C1", "anonymous_id:ck-1"], "login-1")
    assert replayed.merges == ()
    assert replayed.repeated == (Merge(anonymous, "C1", ("anonymous_id:ck-1",), ()),)
    # a customer never merged with anyone: nothing to wait for
    alone = g.resolve(["customer_id:C2"], "buy-1")
    assert (alone.aliases, alone.repeated) == ((), ())


def test_two_anonymous_ids_become_one_customer_with_the_smaller_id() -> None:
    g = graph()
    a, b = g.resolve(["anonymous_id:A"]).customer_id, g.resolve(["anonymous_id:B"]).customer_id
    linked = g.resolve(["email:x", "anonymous_id:A", "anonymous_id:B"])
    assert linked.customer_id == min(a, b, generated_id("email:x"))
    assert {m.merged_id for m in linked.merges} == {a, b} - {linked.customer_id}


def test_two_crm_customers_are_never_merged() -> None:
    g = graph()
    g.resolve(["customer_id:C1", "phone:p"])
    second = g.resolve(["customer_id:C2", "phone:p"])
    assert second.customer_id == "C2"
    assert second.merges == ()
    assert second.conflicts == ("phone:p",)
    assert g.resolve(["phone:p"]).customer_id == "C1"  # first claim kept


def test_a_merge_chain_moves_aliases_along() -> None:
    g = graph()
    g.resolve(["anonymous_id:A"])
    g.resolve(["anonymous_id:B"])
    ab = g.resolve(["anonymous_id:A", "anonymous_id:B"]).customer_id
    final = g.resolve(["customer_id:C9", "anonymous_id:B"])
    assert final.customer_id == "C9"
    (merge,) = final.merges
    assert merge.merged_id == ab
    assert set(merge.aliases) == {generated_id("anonymous_id:A"),
                                  generated_id("anonymous_id:B")} - {ab}


def test_the_result_does_not_depend_on_the_order_of_events() -> None:
    events = [
        ["anonymous_id:a1"], ["anonymous_id:a2"], ["email:e1", "anonymous_id:a1"],
        ["phone:p1"], ["customer_id:C5", "phone:p1"], ["email:e1", "phone:p1"],
        ["anonymous_id:b1"], ["anonymous_id:b2", "anonymous_id:b1"], ["email:e2"],
        ["anonymous_id:b2", "email:e2"], ["anonymous_id:a2", "anonymous_id:c"],
    ]
    everyone = sorted({i for e in events for i in e})
    outcomes = set()
    rng = random.Random(7)
    orders = [events, list(reversed(events))] + [rng.sample(events, len(events))
                                                 for _ in range(200)]
    for order in orders:
        g = graph()
        for identifiers in order:
            g.resolve(identifiers)
        outcomes.add(tuple(g.lookup(i) for i in everyone))
    assert len(outcomes) == 1
    (final,) = outcomes
    resolved = dict(zip(everyone, final, strict=True))
    assert resolved["anonymous_id:a1"] == resolved["email:e1"] == "C5"
    assert resolved["anonymous_id:a2"] == resolved["anonymous_id:c"] == min(
        generated_id("anonymous_id:a2"), generated_id("anonymous_id:c"))
    assert len({resolved[i] for i in ("anonymous_id:b1", "anonymous_id:b2", "email:e2")}) == 1


def test_every_identifier_belongs_to_exactly_one_member_list() -> None:
    g = graph()
    for pair in itertools.combinations(["anonymous_id:x", "anonymous_id:y", "email:z",
                                        "customer_id:C1"], 2):
        g.resolve(list(pair))
    listed = [i for m in g.members.values() for i in m["identifiers"]]
    assert sorted(listed) == sorted(g.owner)
    assert set(g.owner.values()) == {"C1"}


# --- a crash between any two writes ----------------------------------------------------------

class _Logged(dict):  # type: ignore[type-arg]
    """A dict that logs its writes, in order: the table's changelog."""

    def __init__(self, log: list[tuple[str, object]]) -> None:
        super().__init__()
        self.log = log

    def __setitem__(self, key: str, value: object) -> None:
        self.log.append((key, copy.deepcopy(value)))
        super().__setitem__(key, value)

    def __delitem__(self, key: str) -> None:
        self.log.append((key, None))
        super().__delitem__(key)

    def pop(self, key: str, *default: object) -> object:
        if key in self:
            self.log.append((key, None))
        return super().pop(key, *default)


def _graph(table: dict[str, object]) -> IdentityGraph:
    """The graph over one table, as the worker keeps it."""
    from touchpoint.streams.rules.identity import Keyspace

    return IdentityGraph(Keyspace(table, "o:"), Keyspace(table, "m:"))


def _crash_traffic() -> list[tuple[str, list[str]]]:
    """Events that link, chain-merge and grow customers (ids in the identifiers' order)."""
    rng = random.Random(5)
    events = []
    for n in range(200):
        pool = [f"anonymous_id:a{rng.randrange(60)}", f"email:e{rng.randrange(30)}",
                f"phone:p{rng.randrange(30)}"]
        if rng.random() < 0.1:
            pool.append(f"customer_id:C{rng.randrange(6)}")
        picked = sorted(set(rng.sample(pool, rng.choice((1, 1, 2, 2, 3)))),
                        key=lambda i: ["customer_id", "phone", "email", "anonymous_id"].index(
                            i.partition(":")[0]))
        events.append((f"ev-{n}", picked))
    return events


def test_a_crash_between_any_two_table_writes_is_safe_to_replay() -> None:
    """The changelog kept any prefix of the writes; the replay starts at the record then in
    progress, or at a commit 40 records before it. Every replayed event either goes where
    it went first, or names that customer among those to fold in first (else it could be
    counted twice), and the graph ends the same as without the crash."""
    events = _crash_traffic()
    log: list[tuple[str, object]] = []
    g = _graph(_Logged(log))
    first, started = {}, []
    for event_id, identifiers in events:
        started.append(len(log))
        first[event_id] = g.resolve(identifiers, event_id).customer_id
    final_owner = dict(g.owner)
    final_groups = {c: (set(m["identifiers"]), set(m["aliases"])) for c, m in g.members.items()}
    # the traffic merges, also in chains (an alias that had aliases of its own)
    assert sum(len(m["aliases"]) for m in g.members.values()) >= 20
    assert any(merge["aliases"] for group in g.members.values()
               for merge in group["merges"].values())

    for cut in range(len(log) + 1):
        kept: dict[str, object] = {}
        for key, value in log[:cut]:
            if value is None:
                kept.pop(key, None)
            else:
                kept[key] = copy.deepcopy(value)
        in_progress = max(i for i, at in enumerate(started) if at <= cut)
        for resume in {in_progress, max(0, in_progress - 40)}:
            replay = _graph(copy.deepcopy(kept))
            for event_id, identifiers in events[resume:]:
                got = replay.resolve(identifiers, event_id)
                assert got.customer_id == first[event_id] or first[event_id] in got.aliases, \
                    (cut, resume, event_id, got, first[event_id])
            assert dict(replay.owner) == final_owner, (cut, resume)
            assert {c: (set(m["identifiers"]), set(m["aliases"]))
                    for c, m in replay.members.items()} == final_groups, (cut, resume)


def test_owners_and_groups_share_one_table_without_mixing() -> None:
    from touchpoint.streams.rules.identity import Keyspace

    table: dict[str, object] = {}
    owner, members = Keyspace(table, "o:"), Keyspace(table, "m:")
    owner["C1"] = "C1"
    members["C1"] = {"identifiers": ["customer_id:C1"]}
    assert table == {"o:C1": "C1", "m:C1": {"identifiers": ["customer_id:C1"]}}
    assert (list(owner), len(members), owner.get("x", "none")) == (["C1"], 1, "none")
    assert members.pop("C1") == {"identifiers": ["customer_id:C1"]}
    assert "C1" not in members and owner["C1"] == "C1"


def _copy_of(g: IdentityGraph) -> tuple[object, object]:
    """The lookups of a copy of ``g`` as the partitioned stage reads it (worker's replica)."""
    def aliases(customer: str) -> tuple[str, ...] | None:
        group = g.members.get(customer)
        return None if group is None else tuple(group["aliases"])
    return g.owner.get, aliases


def test_an_event_with_one_new_identifier_is_its_own_customer_without_the_graph() -> None:
    g = graph()
    owner, aliases = _copy_of(g)
    found = resolve_known(["anonymous_id:ck-1"], owner, aliases)  # type: ignore[arg-type]
    assert found is not None
    assert (found.customer_id, found.aliases) == (generated_id("anonymous_id:ck-1"), ())
    # two new identifiers link: only the graph can say who that is
    assert resolve_known(["customer_id:C1", "anonymous_id:ck-1"], owner,  # type: ignore[arg-type]
                         aliases) is None


def test_the_graph_merges_the_own_id_of_a_new_identifier_it_links() -> None:
    # The partitioned stage sent the cookie's first events to the cookie's own id without
    # telling the graph; the login that links the cookie must fold that profile in.
    g = graph()
    login = g.resolve(["customer_id:C1", "anonymous_id:ck-1"], "login-1")
    own = generated_id("anonymous_id:ck-1")
    assert login.merges == (Merge(own, "C1", ("anonymous_id:ck-1",), ()),)
    assert login.aliases == (own,)
    # it caused the merge, so it was never counted under the id merged: it waits for none
    assert login.awaits == ()
    assert g.resolve(["anonymous_id:ck-1"], "view-1").awaits == (own,)
    # a CRM id new to the graph is the customer itself: nothing to merge
    assert g.resolve(["customer_id:C2", "anonymous_id:ck-2"], "login-2").merges == (
        Merge(generated_id("anonymous_id:ck-2"), "C2", ("anonymous_id:ck-2",), ()),)
    assert g.resolve(["customer_id:C3"], "buy-3").merges == ()


def test_a_copy_of_the_graph_resolves_known_customers_with_their_aliases() -> None:
    g = graph()
    g.resolve(["customer_id:C1", "anonymous_id:ck-1"], "login-1")
    owner, aliases = _copy_of(g)
    found = resolve_known(["anonymous_id:ck-1"], owner, aliases)  # type: ignore[arg-type]
    assert found is not None
    assert (found.customer_id, found.aliases) == ("C1", (generated_id("anonymous_id:ck-1"),))
    both = resolve_known(["customer_id:C1", "anonymous_id:ck-1"], owner,  # type: ignore[arg-type]
                         aliases)
    assert both is not None and both.customer_id == "C1"
    # a known identifier with a new one, or two customers: a link, for the graph
    assert resolve_known(["customer_id:C1", "email:e"], owner, aliases) is None  # type: ignore[arg-type]
    g.resolve(["customer_id:C2"], "buy-2")
    g.resolve(["customer_id:C2", "phone:p"], "call-2")
    assert resolve_known(["customer_id:C1", "phone:p"], owner, aliases) is None  # type: ignore[arg-type]


def test_a_copy_without_the_customer_s_group_asks_the_graph() -> None:
    # a compacted changelog read part-way: the owner is there, its group not yet
    found = resolve_known(["anonymous_id:ck-1"], {"anonymous_id:ck-1": "C1"}.get,
                          lambda customer: None)
    assert found is None


def test_every_event_reaches_the_customer_the_graph_alone_would_give_it() -> None:
    # Random traffic, each event resolved by a copy of the graph when it can and by the
    # graph otherwise: following the merges from the id an event was sent to ends, at
    # every point and at the end, at the customer the graph alone gives it.
    rng = random.Random(7)
    ids = [f"anonymous_id:a{i}" for i in range(12)] + [f"customer_id:C{i}" for i in range(4)] \
        + [f"email:e{i}" for i in range(6)]
    alone, split = graph(), graph()
    merged: dict[str, dict[str, str]] = {"alone": {}, "split": {}}

    def follow(which: str, customer: str) -> str:
        while customer in merged[which]:
            customer = merged[which][customer]
        return customer
    sent = []
    for n in range(2000):
        event = sorted(set(rng.sample(ids, rng.choice((1, 1, 1, 2)))),
                       key=lambda i: ("customer_id", "email", "anonymous_id").index(
                           i.split(":")[0]))
        if sum(i.startswith("customer_id:") for i in event) > 1:
            continue
        owner, aliases = _copy_of(split)
        found = resolve_known(event, owner, aliases)  # type: ignore[arg-type]
        if found is None:
            found = split.resolve(event, f"e{n}")
            merged["split"].update({m.merged_id: m.into_id for m in found.merges})
        expected = alone.resolve(event, f"e{n}")
        merged["alone"].update({m.merged_id: m.into_id for m in expected.merges})
        assert follow("split", found.customer_id) == expected.customer_id
        sent.append((found.customer_id, expected.customer_id))
    assert all(follow("split", a) == follow("alone", b) for a, b in sent)
