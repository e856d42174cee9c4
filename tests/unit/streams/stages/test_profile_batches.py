"""The profiles stage in batches: the same tables, signals and sends as one record at a time."""

from __future__ import annotations

import copy
import itertools
import json
from collections import Counter
from typing import Any

import pytest

from touchpoint.streams.rules import profile_batches

from ..rules.test_profile import T0, ev
from ..rules.test_signals import call, page
from .test_profiles import _encoded, _merge

MINUTE = 60_000


class JsonTable(dict[str, Any]):
    """A table that keeps values encoded, as the real one does: each read decodes a copy.

    Counts the stage's reads (``get``) and writes per key.
    """

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.reads: Counter[str] = Counter()
        self.writes: Counter[str] = Counter()

    def get(self, key: str, default: Any = None) -> Any:
        self.reads[key] += 1
        raw = super().get(key)
        return default if raw is None else json.loads(raw)

    def __getitem__(self, key: str) -> Any:
        return json.loads(super().__getitem__(key))

    def __setitem__(self, key: str, value: Any) -> None:
        self.writes[key] += 1
        super().__setitem__(key, json.dumps(value))

    def raw(self) -> dict[str, str]:
        return dict(super().items())


def _stage(table: JsonTable, applied: Any = None) -> Any:
    from touchpoint.streams.rules.campaigns import Attributor
    from touchpoint.streams.rules.complaints import Rules
    from touchpoint.streams.rules.profile_batches import ProfileStage
    from touchpoint.streams.rules.signals import Detector

    ticks = itertools.count(1000)  # the same revisions for the same signals, in order
    detector = Detector(Rules.load(), lambda profile, at: "standard", lateness_ms=MINUTE,
                        clock=lambda: next(ticks))
    return ProfileStage(table, {}, detector, Attributor(), applied=applied)


def _traffic() -> list[Any]:
    """Three customers' calls, purchases and page views, an hour apart, with repeats and
    late events, then a fourth customer's page views: the watermark moves a sweep step
    with every record, signals are raised, escalated and concluded by sweeps."""
    from touchpoint.streams.rules.profile_batches import Record

    records = []
    for i in range(42):
        customer, at = f"C{i % 3}", T0 + i * 60 * MINUTE
        if i % 6 in (0, 1):
            event = call(f"c{i}", at, outcome="escalated" if i % 12 == 1 else "unresolved")
        elif i % 6 == 2:
            event = ev(f"s{i}", "store", "purchase", at, amount=10.0 + i)
        else:
            event = page(f"p{i}", at)
        records.append(Record(customer, _encoded(event, customer)))
        if i in (9, 25):  # an event of C1 behind the watermark by now, then a repeat
            late = call(f"late{i}", at - 3 * 60 * MINUTE)
            records.append(Record("C1", _encoded(late, "C1")))
            records.append(records[3])
    for i in range(42, 90, 2):  # then only C3's page views: sweeps conclude the others' signals
        records.append(Record("C3", _encoded(page(f"p{i}", T0 + i * 60 * MINUTE), "C3")))
    return [r._replace(offset=n) for n, r in enumerate(records)]


def _one_by_one(records: list[Any], table: JsonTable | None = None,
                applied: Any = None) -> tuple[Any, JsonTable, list[Any]]:
    table = JsonTable() if table is None else table
    stage = _stage(table, applied)
    done = []
    for record in records:
        sends = stage.handle(*record[:2], awaiting=record.awaiting, offset=record.offset)
        done.append((sends, stage.signals))
        stage.signals = []
    return stage, table, done


def _batched(records: list[Any], size: int, table: JsonTable | None = None,
             applied: Any = None) -> tuple[Any, JsonTable, list[Any]]:
    table = JsonTable() if table is None else table
    stage = _stage(table, applied)
    done = []
    for at in range(0, len(records), size):
        done += [tuple(handled) for handled in stage.handle_batch(records[at:at + size])]
    return stage, table, done


def test_a_batch_ends_with_the_table_and_signals_of_its_records_one_by_one() -> None:
    records = _traffic()
    single, table, done = _one_by_one(records)
    signals = [s for _, raised in done for s in raised]
    assert {s["status"] for s in signals} == {"open", "breached"}
    # concluded by a sweep, with another customer's record
    assert any(s["customer_id"] != record.key
               for record, (_, raised) in zip(records, done, strict=True) for s in raised)
    assert single.stats["repeats"] == 2
    for size in (len(records), 7, 1):
        batched, batch_table, batch_done = _batched(records, size)
        assert batch_table.raw() == table.raw(), size
        assert batch_done == done, size  # the same sends and signals, with each record
        assert batched.stats == single.stats
        assert batched.applied.keys == single.applied.keys
        assert batched.changed == single.changed


def test_a_batch_reads_and_writes_each_customer_once() -> None:
    records = _traffic()
    _, table, _ = _batched(records, len(records))
    assert table.reads == {"C0": 1, "C1": 1, "C2": 1, "C3": 1}
    assert table.writes == {"C0": 1, "C1": 1, "C2": 1, "C3": 1}
    # one by one: a read and a write for every record
    _, single, _ = _one_by_one(records)
    assert single.reads["C1"] > 10 and single.writes["C1"] > 10


def _merge_traffic() -> list[Any]:
    """A's events, A merged into B, then events still keyed A (passed on) and B's own."""
    from touchpoint.streams.rules.profile_batches import Record

    a = [_encoded(ev(f"a{i}", "web", "page_view", T0 + i), "A") for i in range(3)]
    b = [_encoded(ev(f"b{i}", "store", "purchase", T0 + 10 + i, amount=5.0), "B")
         for i in range(2)]
    late = _encoded(ev("a9", "web", "page_view", T0 + 9), "A")
    records = [Record("A", a[0]), Record("B", b[0]), Record("A", a[1]), Record("A", a[2]),
               Record("A", _merge("A", "B")), Record("A", late), Record("A", a[1]),
               Record("B", b[1]), Record("B", a[0], ("A",))]
    return [r._replace(offset=n) for n, r in enumerate(records)]


def _deliver(stage: Any, done: list[Any], offset: int) -> list[Any]:
    """Hand what ``done`` sends on to the stage as one batch, from ``offset``; what it sends."""
    from touchpoint.streams.rules.profile_batches import Record

    sends = [Record(s.key, s.value, s.awaiting, offset + n)
             for n, s in enumerate(s for sent, _ in done for s in sent)]
    return [tuple(h) for h in stage.handle_batch(sends)]


def test_a_merge_and_events_of_the_merged_away_id_in_one_batch_go_on_as_one_by_one() -> None:
    from touchpoint.streams.rules.profile_batches import MERGED_INTO

    records = _merge_traffic()
    single, table, done = _one_by_one(records)
    batched, batch_table, batch_done = _batched(records, len(records))
    assert batch_done == done
    assert batch_table.raw() == table.raw()
    assert batch_table["A"][MERGED_INTO] == "B"
    forwarded = [(s.key, s.awaiting) for sent, _ in batch_done for s in sent
                 if s.value[:2] != b"\xc3\x4a" or s.awaiting]
    assert ("B", ("A",)) in forwarded  # the events keyed A after the merge wait for A's state
    # the hand-over and the passed-on events reach B: every event counts once
    assert _deliver(batched, batch_done, 100) == _deliver(single, done, 100)
    assert batch_table.raw() == table.raw()
    assert batch_table["B"]["contacts_by_channel"] == {"web": 4, "store": 2}
    assert batched.stats == single.stats


def test_a_batch_read_again_after_a_crash_counts_nothing_twice() -> None:
    from touchpoint.streams.rules.profile_batches import Applied

    records = [*_merge_traffic(), *_traffic()[len(_merge_traffic()):]]
    expected, table, done = _batched(records, len(records))
    _deliver(expected, done, 200)
    final = table.raw()
    counted = {key: json.loads(value).get("contacts_by_channel") for key, value in final.items()}

    # the table kept the batch's changes, the records were not committed: read again
    restarted = _stage(JsonTable(final), expected.applied)
    again = [tuple(h) for h in restarted.handle_batch(records)]
    assert restarted.stats["merged_again"] == 1
    assert "applied" not in restarted.stats  # every event is a repeat now
    _deliver(restarted, again, 300)  # the hand-over, again: folded in once
    assert {key: json.loads(value).get("contacts_by_channel")
            for key, value in restarted.table.raw().items()} == counted

    # the profiles' changes were lost, their applied keys kept: the keys stamped past
    # the profiles do not hide the events, which count once
    applied = Applied(dict(expected.applied.keys))
    lost = _stage(JsonTable(), applied)
    again = [tuple(h) for h in lost.handle_batch(records)]
    _deliver(lost, again, 200)
    assert lost.table.raw() == final


def test_records_given_their_decoded_event_give_what_their_bytes_give() -> None:
    from touchpoint.schemas.codec import codec_for, subject_of

    records = _traffic() + _merge_traffic()
    records = [r._replace(offset=n) for n, r in enumerate(records)]
    codec = codec_for("event")
    given = [r._replace(event=codec.decode(r.value)) if subject_of(r.value) == "event" else r
             for r in records]
    assert any(r.event is not None for r in given) and any(r.event is None for r in given)
    _, table, done = _batched(records, 7)
    _, given_table, given_done = _batched(given, 7)
    assert given_table.raw() == table.raw()
    assert given_done == done


def _batched_many(records: list[Any], size: int) -> tuple[JsonTable, list[Any], list[Any],
                                                         list[Any]]:
    """:func:`_batched` with the table read and written many keys at a time; what it asked."""
    table = JsonTable()
    asked: list[list[str]] = []
    written: list[list[str]] = []

    def read_many(keys: list[str]) -> list[Any]:
        asked.append(keys)
        return [table.get(key) for key in keys]

    def write_many(items: list[tuple[str, Any]]) -> None:
        written.append([key for key, _ in items])
        for key, value in items:
            table[key] = value

    stage = _stage(table)
    stage.read_many, stage.write_many = read_many, write_many
    done = []
    for at in range(0, len(records), size):
        done += [tuple(handled) for handled in stage.handle_batch(records[at:at + size])]
    return table, done, asked, written


def test_reading_and_writing_many_at_once_gives_what_one_at_a_time_gives() -> None:
    # The worker's table reads a batch's customers in one call before its records and
    # writes its profiles in one call after (read_many, write_many).
    records = _traffic() + _merge_traffic()
    records = [r._replace(offset=n) for n, r in enumerate(records)]
    for size in (len(records), 7, 1):
        _, table, done = _batched(records, size)
        many, many_done, asked, written = _batched_many(records, size)
        assert many.raw() == table.raw(), size
        assert many_done == done, size
        batches = [records[at:at + size] for at in range(0, len(records), size)]
        assert asked == [list(dict.fromkeys(r.key for r in batch)) for batch in batches]
        assert all(keys == list(dict.fromkeys(keys)) for keys in written)  # once a batch
        assert sum(map(len, written)) == sum(many.writes.values())


def test_applied_keys_are_written_at_the_end_of_a_batch_and_read_before() -> None:
    from touchpoint.streams.rules.profile_batches import Applied

    class Counted(Applied):
        def __init__(self) -> None:
            super().__init__()
            self.writes: list[dict[str, int]] = []

        def _write(self, keys: dict[str, int]) -> None:
            self.writes.append(dict(keys))
            super()._write(keys)

    applied = Counted()
    records = _traffic()
    stage = _stage(JsonTable(), applied)
    stage.handle_batch(records)
    assert len(applied.writes) == 1 and applied.pending == {}
    assert applied.keys == applied.writes[0]
    assert stage.stats["repeats"] == 2  # the repeats in the batch were found in pending
    # a batch that raises writes none of its keys: it is read again
    failing = Counted()
    stage = _stage(JsonTable(), failing)
    with pytest.raises(KeyError):  # an event without its id, after five good records
        stage.handle_batch([*records[:5], records[5]._replace(event={})])
    assert failing.writes == [] and failing.keys == {} and failing.pending == {}
    # A merge's hand-over reads the merged-away customer's keys from the table: the
    # batch's keys so far are written first (Applied.of), as the merge test above shows.


def test_a_state_is_copied_as_deepcopy_copies_it() -> None:
    # The sweep works on a copy of each profile (_copied, cheaper than copy.deepcopy).
    inner = [1, "a", None, 2.5, True]
    state = {"live": {"seen": inner, "issues": {"r": [3, 4]}}, "journal": [inner],
             "pair": (1, [2]), "odd": {1, 2}}
    copied = profile_batches._copied(state)
    assert copied == copy.deepcopy(state)
    assert type(copied["pair"]) is tuple
    copied["live"]["seen"].append("x")
    copied["live"]["issues"]["r"].append(5)
    copied["journal"][0].append("y")
    copied["pair"][1].append(6)
    copied["odd"].add(3)
    assert state == {"live": {"seen": [1, "a", None, 2.5, True], "issues": {"r": [3, 4]}},
                     "journal": [[1, "a", None, 2.5, True]], "pair": (1, [2]), "odd": {1, 2}}


def test_applied_keys_read_ahead_give_what_one_read_an_event_gives() -> None:
    # The worker reads the applied key of each of a batch's events in one call before
    # the batch's records (Applied.read_ahead), as it reads the batch's customers: the
    # same tables, sends and signals, batch by batch and read again after a crash, with
    # the events' own keys no longer read one at a time.
    from touchpoint.schemas.codec import codec_for, subject_of
    from touchpoint.streams.rules.profile_batches import Applied

    class Keys(dict[str, int]):
        """Applied keys, counting the reads of one key."""

        gets = 0

        def get(self, key: str, default: Any = None) -> Any:
            self.gets += 1
            return super().get(key, default)

    class Ahead(Applied):
        def __init__(self, keys: Keys) -> None:
            super().__init__(keys)
            self.asked: list[list[str]] = []

        def _read_many(self, keys: list[str]) -> list[int | None]:
            self.asked.append(keys)
            return [dict.get(self.keys, key) for key in keys]  # type: ignore[arg-type]

    codec = codec_for("event")
    records = [*_merge_traffic(), *_traffic()[len(_merge_traffic()):]]
    records = [r._replace(event=codec.decode(r.value)) if subject_of(r.value) == "event" else r
               for r in records]

    def run(size: int, ahead: bool, table: JsonTable,
            keys: dict[str, int]) -> tuple[Any, list[Any]]:
        stage = _stage(table, Ahead(Keys(keys)))
        if ahead:
            stage.read_many = lambda wanted: [table.get(key) for key in wanted]
        done = []
        for at in range(0, len(records), size):
            done += [tuple(h) for h in stage.handle_batch(records[at:at + size])]
        done += _deliver(stage, done, 500)  # the hand-over
        return stage, done

    for size in (len(records), 7, 1):
        one, one_done = run(size, False, JsonTable(), {})
        many, many_done = run(size, True, JsonTable(), {})
        assert many.table.raw() == one.table.raw() and many_done == one_done, size
        assert dict(many.applied.keys) == dict(one.applied.keys), size
        assert len(many.applied.asked) == -(-len(records) // size) + 1, size  # a batch each
        assert many.applied.keys.gets < one.applied.keys.gets / 2, size
        # read again, as after a crash: every event a repeat, the same tables
        for stage in (one, many):
            again, _ = run(size, stage is many, JsonTable(stage.table.raw()),
                           dict(stage.applied.keys))
            assert "applied" not in again.stats, size
            assert again.table.raw() == one.table.raw(), size
