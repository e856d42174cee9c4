"""Backfill: inputs merged in event-time order, unsorted ones refused or sorted, runs resumed."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from touchpoint.backfill import Checkpoint, Source, checkpoint_path, plan, run
from touchpoint.exceptions import InputError
from touchpoint.publish import encode_event

T0 = 1_795_000_000_000


class Recorder:
    """Stands in for the Publisher: checks each event as it would, keeps the valid ones."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []
        self.flushed = 0

    def publish(self, channel: str, event: dict[str, Any]) -> None:
        encode_event(channel, event, region="CN")  # raises ContractError as publish does
        self.sent.append((channel, event["event_id"]))

    def flush(self) -> None:
        self.flushed = len(self.sent)


def web(event_id: str, at: int, **fields: Any) -> dict[str, Any]:
    return {"event_id": event_id, "type": "page_view", "occurred_at": at,
            "anonymous_id": f"ck-{event_id}", **fields}


def store(event_id: str, at: int) -> dict[str, Any]:
    return {"event_id": event_id, "type": "visit", "occurred_at": at, "customer_id": "C1",
            "store_id": "SH-01"}


def write(path: Path, events: list[dict[str, Any] | str]) -> Path:
    path.write_text("".join((e if isinstance(e, str) else json.dumps(e)) + "\n"
                            for e in events))
    return path


def test_inputs_are_merged_by_event_time_then_input_then_line(tmp_path: Path) -> None:
    a = write(tmp_path / "web.jsonl", [web("w1", T0), web("w2", T0 + 20), web("w3", T0 + 20)])
    b = write(tmp_path / "store.jsonl", [store("s1", T0 + 10), store("s2", T0 + 20)])
    # a mixed file: each event names its channel; ISO times order with epoch ms
    c = write(tmp_path / "mixed.jsonl", [
        {**web("m1", T0 + 5), "channel": "web"},
        {**store("m2", T0 + 30), "occurred_at": "2026-11-18T19:06:40.030+08:00",
         "channel": "store"},
    ])
    assert T0 + 30 == 1_795_000_000_030  # the ISO time above is T0 + 30 ms
    sources = [Source.parse(f"web={a}"), Source.parse(f"store={b}"), Source.parse(str(c))]
    recorder = Recorder()
    report = run(plan(sources, tmp_path / "cp.json"), recorder)
    assert [e for _, e in recorder.sent] == ["w1", "m1", "s1", "w2", "w3", "s2", "m2"]
    assert recorder.sent[1] == ("web", "m1") and recorder.sent[-1] == ("store", "m2")
    assert (report.published, report.rejected, report.interrupted) == (7, 0, False)


def test_a_bad_line_is_refused_with_its_place_and_never_makes_a_file_unsorted(
        tmp_path: Path) -> None:
    a = write(tmp_path / "web.jsonl", [web("w1", T0), "{not json", web("w2", T0 + 10),
                                       web("w3", T0 + 20, occurred_at="yesterday")])
    b = write(tmp_path / "mixed.jsonl", [{**web("m1", T0 + 5), "channel": "radio"},
                                         web("m2", T0 + 6)])
    recorder = Recorder()
    report = run(plan([Source.parse(f"web={a}"), Source.parse(str(b))],
                      tmp_path / "cp.json"), recorder)
    assert [e for _, e in recorder.sent] == ["w1", "w2"]
    assert report.reasons == {"bad_json": 1, "bad_timestamp": 1, "unknown_channel": 2}
    # a bad line comes right after the line before it in its file: first, when none is
    assert [(label.rsplit("/", 1)[-1], line, code) for label, line, code, _ in report.errors] == [
        ("mixed.jsonl", 1, "unknown_channel"), ("mixed.jsonl", 2, "unknown_channel"),
        ("web.jsonl", 2, "bad_json"), ("web.jsonl", 4, "bad_timestamp")]
    assert report.errors[0][3].startswith('channel="radio" is not one of web, store, ')
    assert report.errors[1][3].startswith("the event has no channel: give every event")


def test_an_unsorted_input_is_refused_with_its_first_line_out_of_order(tmp_path: Path) -> None:
    a = write(tmp_path / "web.jsonl", [web("w1", T0), web("w2", T0 + 10), web("w3", T0 + 5)])
    with pytest.raises(InputError, match=r"web=.*web.jsonl is not in event-time order: line 3 is "
                                         r"earlier than line 2; .* or pass --sort"):
        plan([Source.parse(f"web={a}")], tmp_path / "cp.json")
    assert not (tmp_path / "cp.json").exists()


def test_an_unsorted_input_is_sorted_in_chunks_on_disk(tmp_path: Path) -> None:
    times = [7, 3, 9, 1, 4, 4, 8, 2, 6, 0]
    a = write(tmp_path / "web.jsonl", [web(f"w{i}-{t}", T0 + t) for i, t in enumerate(times)])
    b = write(tmp_path / "store.jsonl", [store("s", T0 + 4)])
    work = tmp_path / "work"
    work.mkdir()
    recorder = Recorder()
    planned = plan([Source.parse(f"web={a}"), Source.parse(f"store={b}")], tmp_path / "cp.json",
                   sort=True)
    assert planned.checkpoint.unsorted == [0]
    run(planned, recorder, chunk_lines=3, workdir=work)
    # ties keep input order, then line order: w4-4 (line 5), w5-4 (line 6), then s
    assert [e for _, e in recorder.sent] == ["w9-0", "w3-1", "w7-2", "w1-3", "w4-4", "w5-4",
                                             "s", "w8-6", "w0-7", "w6-8", "w2-9"]
    assert list(work.iterdir()) == []  # the sorted runs are gone


def test_a_stopped_run_resumes_where_it_stopped_and_sends_nothing_twice(tmp_path: Path) -> None:
    a = write(tmp_path / "web.jsonl", [web(f"w{i}", T0 + 2 * i) for i in range(10)])
    b = write(tmp_path / "store.jsonl", [store(f"s{i}", T0 + 2 * i + 1) for i in range(10)]
              + ["[1]"])
    sources = [Source.parse(f"web={a}"), Source.parse(f"store={b}")]
    path = tmp_path / "cp.json"
    first = Recorder()
    asked = iter(range(100))
    report = run(plan(sources, path), first, stop=lambda: next(asked) >= 7, every=3)
    assert report.interrupted and report.published == 7
    assert Checkpoint.load(path).published == 7  # type: ignore[union-attr]
    second = Recorder()
    resumed = plan(sources, path)
    assert resumed.resumed
    report = run(resumed, second)
    assert [e for _, e in first.sent + second.sent] == [
        x for i in range(10) for x in (f"w{i}", f"s{i}")]
    assert (report.published, report.rejected, report.skipped) == (20, 1, 7)
    assert Checkpoint.load(path).done  # type: ignore[union-attr]
    # a third run has nothing left to do
    third = Recorder()
    assert run(plan(sources, path), third).published == 20 and third.sent == []


def test_the_checkpoint_is_saved_only_after_a_flush(tmp_path: Path) -> None:
    a = write(tmp_path / "web.jsonl", [web(f"w{i}", T0 + i) for i in range(10)])
    path = tmp_path / "cp.json"
    saved: list[tuple[int, int]] = []
    recorder = Recorder()
    original = Checkpoint.save

    def save(self: Checkpoint, where: Path) -> None:
        saved.append((self.published, recorder.flushed))
        original(self, where)

    planned = plan([Source.parse(f"web={a}")], path)
    Checkpoint.save = save  # type: ignore[method-assign]
    try:
        run(planned, recorder, every=4, clock=lambda: 0.0)
    finally:
        Checkpoint.save = original  # type: ignore[method-assign]
    assert saved == [(4, 4), (8, 8), (10, 10)]


def test_changed_inputs_are_not_resumed(tmp_path: Path) -> None:
    a = write(tmp_path / "web.jsonl", [web("w1", T0), web("w2", T0 + 1)])
    path = tmp_path / "cp.json"
    run(plan([Source.parse(f"web={a}")], path), Recorder(), stop=lambda: True)
    write(a, [web("w1", T0), web("w2", T0 + 1), web("w3", T0 + 2)])
    with pytest.raises(InputError, match="pass --restart to start over"):
        plan([Source.parse(f"web={a}")], path)
    recorder = Recorder()
    run(plan([Source.parse(f"web={a}")], path, restart=True), recorder)
    assert [e for _, e in recorder.sent] == ["w1", "w2", "w3"]


def test_missing_input_and_damaged_checkpoint_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"cannot read web=.*nope.jsonl: No such file"):
        plan([Source.parse(f"web={tmp_path / 'nope.jsonl'}")], tmp_path / "cp.json")
    a = write(tmp_path / "web.jsonl", [web("w1", T0)])
    (tmp_path / "cp.json").write_text("{half")
    with pytest.raises(InputError, match=r"cannot be read .* --restart"):
        plan([Source.parse(f"web={a}")], tmp_path / "cp.json")


def test_the_default_checkpoint_depends_on_the_inputs(tmp_path: Path) -> None:
    one = [Source.parse("web=a.jsonl"), Source.parse("b.jsonl")]
    assert checkpoint_path(tmp_path, one) == checkpoint_path(tmp_path, list(one))
    assert checkpoint_path(tmp_path, one) != checkpoint_path(tmp_path, one[::-1])
    assert checkpoint_path(tmp_path, one).parent == tmp_path / "backfill"
    # a path whose prefix is not a channel is a mixed file's path
    assert Source.parse("odd=name.jsonl") == Source(Path("odd=name.jsonl"))


def test_memory_does_not_grow_with_the_inputs(tmp_path: Path) -> None:
    line = json.dumps(web("x" * 40, T0, url="https://example.com/" + "p" * 200)) + "\n"
    for name, count in (("small", 2_000), ("big", 20_000)):
        path = tmp_path / f"{name}.jsonl"
        path.write_text(line * count)
    peaks = []
    for name in ("small", "big"):
        tracemalloc.start()
        run(plan([Source.parse(f"web={tmp_path / name}.jsonl")], tmp_path / f"{name}.cp"),
            _Counter())
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    # ten times the lines (6 MB): a peak of kilobytes either way, lines are streamed
    assert (tmp_path / "big.jsonl").stat().st_size > 5_000_000
    assert peaks[1] < 200_000 and peaks[1] - peaks[0] < 100_000, peaks


class _Counter:
    def __init__(self) -> None:
        self.count = 0

    def publish(self, channel: str, event: dict[str, Any]) -> None:
        self.count += 1

    def flush(self) -> None:
        pass


def test_a_json_array_is_refused_with_how_to_convert_it(tmp_path: Path) -> None:
    path = tmp_path / "export.json"
    path.write_text("\ufeff  " + json.dumps([{**web("w1", T0), "channel": "web"}]))
    with pytest.raises(InputError, match=r"export.json is a JSON array; backfill reads JSON "
                                         r"Lines.*jq -c '\.\[\]' .*export.json > export.jsonl"):
        plan([Source.parse(str(path))], tmp_path / "cp.json")


def test_a_slice_of_event_time_publishes_only_its_events_and_has_its_own_checkpoint(
        tmp_path: Path) -> None:
    a = write(tmp_path / "web.jsonl", [web(f"w{i}", T0 + i) for i in range(10)])
    b = write(tmp_path / "store.jsonl", [store(f"s{i}", T0 + i) for i in range(0, 10, 3)])
    sources = [Source.parse(f"web={a}"), Source.parse(f"store={b}")]
    slices = [(None, T0 + 4), (T0 + 4, T0 + 8), (T0 + 8, None)]
    paths = {checkpoint_path(tmp_path, sources, window) for window in slices}
    assert len(paths) == 3 and checkpoint_path(tmp_path, sources) not in paths
    sent: list[str] = []
    for window in slices:
        recorder = Recorder()
        report = run(plan(sources, checkpoint_path(tmp_path, sources, window), window=window),
                     recorder, every=2)
        assert report.published + report.outside == 14
        sent += [e for _, e in recorder.sent]
    assert sent == ["w0", "s0", "w1", "w2", "w3", "s3", "w4", "w5", "w6", "s6", "w7", "w8",
                    "w9", "s9"]
    # the same files with another slice are not the checkpoint's backfill
    with pytest.raises(InputError, match="another --since/--until"):
        plan(sources, checkpoint_path(tmp_path, sources, slices[0]), window=slices[1])
