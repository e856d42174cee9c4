"""The identity stage's table cache; the graph itself is tested in rules/test_identity.py."""

from __future__ import annotations

from touchpoint.streams.stages.identity import Following, ReadThrough


def test_read_through_keeps_reads_and_writes_through() -> None:
    class Counting(dict[str, str]):
        reads = 0

        def get(self, key: str, default: object = None) -> object:  # type: ignore[override]
            Counting.reads += 1
            return super().get(key, default)

    table = Counting(a="C1")
    owner = ReadThrough(table, limit=2)
    assert owner.get("a") == owner.get("a") == "C1"
    assert Counting.reads == 1  # the second read came from the kept copy
    owner["b"] = "C2"
    assert table["b"] == "C2" and owner.get("b") == "C2" and Counting.reads == 1
    assert owner.get("missing") is None and "missing" not in owner
    owner["c"] = "C3"  # over the limit: the kept copy starts over, the table keeps all
    assert dict(table) == {"a": "C1", "b": "C2", "c": "C3"}
    assert owner.pop("a") == "C1" and owner.get("a") is None
    owner.clear_kept()
    assert owner.get("b") == "C2" and Counting.reads > 1


def test_a_worker_s_copy_of_the_graph_keeps_owners_and_aliases_by_their_text_keys() -> None:
    # Faust writes the table's text keys and values JSON-encoded to the changelog
    from faust.serializers import codecs

    from touchpoint.streams.stages.identity import replica_key, replica_value

    def record(key: str, value: object) -> tuple[bytes, bytes]:
        return codecs.dumps("json", key), codecs.dumps("json", value)

    key, value = record("o:anonymous_id:ck-1", "C1")
    assert (replica_key(key), replica_value(replica_key(key), value)) == (
        b"o:anonymous_id:ck-1", b"C1")
    key, value = record("m:C1", {"identifiers": ["customer_id:C1"], "aliases": ["u-1", "u-2"],
                                 "merges": {}})
    assert replica_value(replica_key(key), value) == b"u-1,u-2"
    key, value = record("m:C2", {"identifiers": ["customer_id:C2"], "aliases": [], "merges": {}})
    assert replica_value(replica_key(key), value) == b""


def test_held_events_wait_only_for_their_own_identifiers_and_keep_their_order() -> None:
    following = Following(limit=10)
    blocked = {"cookie:1"}
    for event, identifiers in (("a", ("cookie:1",)), ("b", ("crm:2",)),
                               ("c", ("cookie:1", "crm:3")), ("d", ("crm:3",))):
        assert list(following.hold(event, identifiers)) == []
    assert following.names(("crm:3", "x")) and not following.names(("crm:4",))
    # "b" names nothing blocked and goes; "c" waits for cookie:1, "d" behind "c" (crm:3)
    assert [e for e, _ in following.released(blocked.__contains__)] == ["b"]
    assert len(following) == 3 and not following.names(("crm:2",))
    blocked.clear()
    assert [e for e, _ in following.released(blocked.__contains__)] == ["a", "c", "d"]
    assert len(following) == 0 and not following.names(("cookie:1", "crm:3"))


def test_an_event_routed_to_the_link_stage_blocks_those_behind_it() -> None:
    following = Following(limit=10)
    for event, identifiers in (("a", ("cookie:1",)), ("b", ("cookie:1",)), ("c", ("crm:9",))):
        list(following.hold(event, identifiers))
    blocked: set[str] = set()
    released = []
    for event, identifiers in following.released(blocked.__contains__):
        released.append(event)
        if event == "a":
            blocked.update(identifiers)  # "a" went to the link stage: "b" waits for it
    assert released == ["a", "c"] and len(following) == 1 and following.names(("cookie:1",))


def test_a_release_cut_short_keeps_the_rest_held_in_order() -> None:
    following = Following(limit=10)
    for event in "abc":
        list(following.hold(event, (f"cookie:{event}",)))
    releasing = following.released(lambda identifier: False)
    assert next(releasing)[0] == "a"
    releasing.close()
    assert [e for e, _ in following.released(lambda identifier: False)] == ["b", "c"]


def test_past_its_limit_the_oldest_held_events_are_given_back_in_order() -> None:
    following = Following(limit=2)
    list(following.hold("a", ("cookie:1",)))
    list(following.hold("b", ("cookie:2",)))
    assert list(following.hold("c", ("cookie:3",))) == [("a", ("cookie:1",))]
    assert not following.names(("cookie:1",)) and following.names(("cookie:3",))
    assert [e for e, _ in following.released(lambda identifier: False)] == ["b", "c"]
