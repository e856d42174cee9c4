"""The profile publisher takes the profiles it publishes as the stage wrote them, not read again."""

from __future__ import annotations

from typing import Any

import pytest

from .test_profile_batches import JsonTable, _merge_traffic, _stage, _traffic


class PartitionedTable(JsonTable):
    """:class:`JsonTable` with the table's read in one partition, counted."""

    def __init__(self) -> None:
        super().__init__()
        self.reads_in: list[str] = []

    def get_in(self, partition: int, key: str, default: Any = None) -> Any:
        self.reads_in.append(key)
        return self.get(key, default)


def _publisher(table: PartitionedTable, **options: Any) -> Any:
    from touchpoint.streams.rules.segments import SegmentRules, TierEstimator
    from touchpoint.streams.stages.profiles import ProfilePublisher

    rules = SegmentRules()
    return ProfilePublisher(object(), table, updates="profiles.updates", writer=None,  # type: ignore[arg-type]
                            rules=rules, estimator=TierEstimator(rules), map_type=False,
                            attribution=None, **options)


def _take(publisher: Any) -> dict[str, Any]:
    """What an emit would publish now: each noted customer's profile, as ``emit`` gets it."""
    keys, publisher.dirty = publisher.dirty, {}
    return {key: publisher.state(key, partition) for key, partition in keys.items()}


@pytest.mark.parametrize("size", [1, 2, 3, 7])
@pytest.mark.parametrize("traffic", [_traffic, _merge_traffic])
def test_published_profiles_are_the_tables_without_reading_it(traffic: Any, size: int) -> None:
    # After every few batches an emit takes what was noted: each profile must be what the
    # table holds then (decoded afresh), and none is read from it.
    table = PartitionedTable()
    stage, publisher = _stage(table), _publisher(table)
    records = traffic()
    taken: set[str] = set()
    for n, at in enumerate(range(0, len(records), size)):
        stage.handle_batch(records[at:at + size])
        publisher.note(stage, 0)
        if n % 3 == 2 or at + size >= len(records):
            for key, state in _take(publisher).items():
                assert state == table[key], key
                taken.add(key)
    assert taken >= ({"C0", "C1", "C2", "C3"} if traffic is _traffic else {"B"})
    assert table.reads_in == []
    assert publisher.states == {}  # nothing kept once published


def test_a_later_batch_that_writes_a_noted_profile_unchanged_replaces_the_kept_one() -> None:
    # A held event changes the profile's record of what it holds, not what is published,
    # and is not "changed": the kept profile must still be the one written last.
    from touchpoint.streams.rules.profile_batches import Record

    from ..rules.test_profile import T0, ev
    from .test_profiles import _encoded

    table = PartitionedTable()
    stage, publisher = _stage(table), _publisher(table)
    stage.handle_batch([Record("B", _encoded(ev("b0", "web", "page_view", T0), "B"), (), 0)])
    publisher.note(stage, 0)
    held = Record("B", _encoded(ev("b1", "web", "page_view", T0 + 1), "B"), ("A",), 1)
    stage.handle_batch([held])
    assert not stage.changed and "B" in stage.written  # written, waiting for A
    publisher.note(stage, 0)
    assert _take(publisher) == {"B": table["B"]}
    assert table["B"]["held"]


def test_after_a_rebalance_the_profiles_are_read_from_the_table() -> None:
    table = PartitionedTable()
    stage, publisher = _stage(table), _publisher(table)
    records = _traffic()
    stage.handle_batch(records[:5])
    publisher.note(stage, 0)
    publisher.forget_states()
    published = _take(publisher)
    assert sorted(table.reads_in) == sorted(published) == ["C0", "C1", "C2"]
    assert all(state == table[key] for key, state in published.items())


def test_the_publisher_keeps_at_most_its_bound_and_reads_the_rest() -> None:
    table = PartitionedTable()
    stage, publisher = _stage(table), _publisher(table, kept=2)
    records = _traffic()
    stage.handle_batch(records[:12])  # C0, C1, C2 changed
    publisher.note(stage, 0)
    assert len(publisher.states) == 2
    published = _take(publisher)
    assert sorted(published) == ["C0", "C1", "C2"] and len(table.reads_in) == 1
    assert all(state == table[key] for key, state in published.items())
