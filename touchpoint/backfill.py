"""Backfill: many channel files merged into event-time order and published, resumably.

History loaded file by file lets one channel run hours ahead of another, and the others'
events then count as late for per-minute aggregates and attribution (and for complaint
signals past 48 hours). A backfill publishes every input's events in one event-time
order instead:

* :func:`plan` reads each input once, streaming: it counts the lines (for the progress
  bar) and finds the first line that is earlier than the one before it. Such a file is
  refused with that line, or, when asked, sorted in bounded chunks on disk
  (:data:`SORT_CHUNK_LINES` lines at a time, sorted runs merged back).
* :func:`run` k-way merges the inputs (``heapq.merge``: memory holds one line per input
  or run, never a file) and publishes each event as ``touchpoint publish`` would.

Lines are ordered by (event time, input number, line number), a total order that is the
same on every run, so a checkpoint is just the last position published: a resumed run
skips every line at or before it. The checkpoint is saved only after the producer
flushed, so a line before it is in Kafka; a crash between a send and the next
checkpoint sends those lines again, and the pipeline stores each ``event_id`` once
(docs/design/delivery.md), so nothing is stored twice.

Inputs are JSON Lines: ``CHANNEL=FILE`` for a channel's file as ``touchpoint publish``
reads it, or ``FILE`` whose events each carry their ``channel``. A line that is not a
valid event is refused with its file, line number and reason, as ``publish`` does; it
keeps its place after the line before it, so it never makes a file look unsorted.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import os
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from touchpoint.exceptions import ContractError, InputError
from touchpoint.publish import read_lines
from touchpoint.schemas.contract import CHANNELS, Rejection, parse_json_event, parse_occurred_at

__all__ = ["SORT_CHUNK_LINES", "BackfillReport", "Checkpoint", "Line", "Plan", "Source",
           "checkpoint_path", "plan", "run"]

#: Lines an unsorted input is sorted by at a time, in memory, before they go to disk.
SORT_CHUNK_LINES = 50_000
#: Refused lines kept in the checkpoint, so a resumed run still lists them.
KEPT_ERRORS = 100
_CHECKPOINT_VERSION = 1


@dataclass(frozen=True)
class Source:
    """One input: a file and its channel (None: every event names its own)."""

    path: Path
    channel: str | None = None

    @classmethod
    def parse(cls, text: str) -> Source:
        """``CHANNEL=FILE`` or ``FILE`` (its events carry ``channel``)."""
        name, sep, rest = text.partition("=")
        if sep and name in CHANNELS:
            return cls(Path(rest), name)
        return cls(Path(text))

    @property
    def label(self) -> str:
        """How the input is named in messages."""
        return f"{self.channel}={self.path}" if self.channel else str(self.path)


@dataclass(frozen=True, order=True)
class Line:
    """One input line, ordered by (event time, input, line number)."""

    at: int
    source: int
    number: int
    channel: str | None = field(compare=False)
    event: dict[str, Any] | Rejection = field(compare=False)
    #: Bytes the line took in its file (for progress while reading).
    size: int = field(default=0, compare=False)

    @property
    def position(self) -> tuple[int, int, int]:
        """Where the line is in the merged order."""
        return self.at, self.source, self.number


def _parse(raw: bytes | str, channel: str | None
           ) -> tuple[str | None, dict[str, Any] | Rejection, int | None]:
    """A line's channel, event (or why not) and event time (None: not readable)."""
    event = parse_json_event(raw)
    if isinstance(event, Rejection):
        return channel, event, None
    if channel is None:
        channel = event.pop("channel", None)
        if not isinstance(channel, str) or channel not in CHANNELS:
            what = ("the event has no channel" if channel is None else
                    f"channel={json.dumps(channel)[:40]} is not one of {', '.join(CHANNELS)}")
            return None, Rejection("unknown_channel", f"{what}: give every event of a mixed "
                                   "file its channel, or name the file's channel "
                                   "(CHANNEL=FILE)"), None
    at = parse_occurred_at(event.get("occurred_at"))
    if isinstance(at, Rejection):
        return channel, at, None
    return channel, event, at


def _lines(index: int, source: Source) -> Iterator[Line]:
    """The input's lines in file order; an unreadable line keeps the time of the one before."""
    last = 0
    try:
        stream = source.path.open("rb")
    except OSError as exc:
        raise InputError(f"cannot read {source.label}: {exc.strerror}") from None
    with stream:
        for number, raw in enumerate(read_lines(stream), start=1):
            if not raw.strip():
                continue
            channel, event, at = _parse(raw, source.channel)
            if at is not None:
                last = at
            yield Line(last, index, number, channel, event, len(raw))


@dataclass
class Checkpoint:
    """How far a backfill got: saved as JSON after every flush, replaced atomically."""

    inputs: list[dict[str, Any]]
    total: int
    unsorted: list[int]
    #: The slice of event time published, epoch ms [since, until); None: no bound.
    window: list[int | None] = field(default_factory=lambda: [None, None])
    position: list[int] | None = None
    published: int = 0
    rejected: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    errors: list[list[Any]] = field(default_factory=list)
    done: bool = False
    version: int = _CHECKPOINT_VERSION

    @classmethod
    def load(cls, path: Path) -> Checkpoint | None:
        """The checkpoint at ``path``; None when there is none."""
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise InputError(f"checkpoint {path} cannot be read ({exc}): delete it, or pass "
                             "--restart to start over") from None
        if not isinstance(data, dict) or data.get("version") != _CHECKPOINT_VERSION:
            raise InputError(f"checkpoint {path} is not one this version writes: delete it, "
                             "or pass --restart to start over")
        return cls(**data)

    def save(self, path: Path) -> None:
        """Write the checkpoint (a crash leaves the old one or the new one, never half)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        with partial.open("w") as out:
            json.dump(asdict(self), out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(partial, path)


def _fingerprint(sources: Sequence[Source]) -> list[dict[str, Any]]:
    found = []
    for source in sources:
        try:
            stat = source.path.stat()
        except OSError as exc:
            raise InputError(f"cannot read {source.label}: {exc.strerror}") from None
        found.append({"input": source.label, "path": str(source.path.resolve()),
                      "size": stat.st_size, "mtime_ns": stat.st_mtime_ns})
    return found


def checkpoint_path(home: Path, sources: Sequence[Source],
                    window: tuple[int | None, int | None] = (None, None)) -> Path:
    """The default checkpoint of a backfill: the same for the same inputs and time slice."""
    names = "\n".join([f"{s.channel or ''}={s.path.resolve()}" for s in sources]
                      + ([f"window={window[0]},{window[1]}"] if window != (None, None) else []))
    return home / "backfill" / f"{hashlib.sha256(names.encode()).hexdigest()[:16]}.json"


@dataclass
class Plan:
    """A backfill ready to run: its inputs, checkpoint, and where it stands."""

    sources: list[Source]
    path: Path
    checkpoint: Checkpoint

    @property
    def resumed(self) -> bool:
        """Whether an earlier run got somewhere."""
        return self.checkpoint.position is not None


def plan(sources: Sequence[Source], path: Path, *, restart: bool = False, sort: bool = False,
         window: tuple[int | None, int | None] = (None, None),
         progress: Callable[[int], None] | None = None) -> Plan:
    """Check the inputs (or find them unchanged since the checkpoint at ``path``).

    Raises :class:`InputError` when an input cannot be read, when an input is not in
    event-time order and ``sort`` is off (naming the first line out of order), or when
    the inputs or the ``window`` (a slice of event time, epoch ms, ``until`` exclusive)
    changed since the checkpoint (``restart`` starts over instead).
    ``progress`` gets the bytes read so far.
    """
    if not sources:
        raise InputError("no input files: give CHANNEL=FILE or FILE (events with a channel)")
    inputs = _fingerprint(sources)
    found = None if restart else Checkpoint.load(path)
    if found is not None:
        if found.inputs != inputs or found.window != list(window):
            raise InputError(f"the inputs are not those of checkpoint {path} (another list of "
                             "files, a file changed since, or another --since/--until): "
                             "pass --restart to start over")
        return Plan(list(sources), path, found)
    total, unsorted, read = 0, [], 0
    for index, source in enumerate(sources):
        _refuse_json_array(source)
        previous: Line | None = None
        for line in _lines(index, source):
            total += 1
            read += line.size
            if previous is not None and line.at < previous.at and index not in unsorted:
                if not sort:
                    raise InputError(
                        f"{source.label} is not in event-time order: line {line.number} is "
                        f"earlier than line {previous.number}; sort it (e.g. by occurred_at), "
                        "or pass --sort to sort it in chunks on disk")
                unsorted.append(index)
            previous = line
            if progress is not None and total % 1000 == 0:
                progress(read)
    if progress is not None:
        progress(read)
    checkpoint = Checkpoint(inputs=inputs, total=total, unsorted=unsorted, window=list(window))
    checkpoint.save(path)
    return Plan(list(sources), path, checkpoint)


def _refuse_json_array(source: Source) -> None:
    """A JSON array would be refused as one bad line; say what to do instead."""
    with source.path.open("rb") as stream:
        start = stream.read(64).lstrip().removeprefix(b"\xef\xbb\xbf").lstrip()
    if start.startswith(b"["):
        raise InputError(f"{source.label} is a JSON array; backfill reads JSON Lines, one "
                         f"event a line, so that big files stream: convert it with "
                         f"jq -c '.[]' {source.path} > {source.path.stem}.jsonl")


class Sender(Protocol):
    """What a backfill publishes with: :class:`touchpoint.publish.Publisher`."""

    def publish(self, channel: str, event: dict[str, Any]) -> None: ...

    def flush(self) -> None: ...


@dataclass
class BackfillReport:
    """What a backfill did, over every run of it."""

    total: int
    published: int = 0
    rejected: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    #: The first refused lines: input, line number, code, reason.
    errors: list[tuple[str, int, str, str]] = field(default_factory=list)
    #: Lines an earlier run had done, skipped by this one.
    skipped: int = 0
    #: Lines outside the slice of event time (--since, --until), left alone.
    outside: int = 0
    interrupted: bool = False


def run(backfill: Plan, publisher: Sender, *, stop: Callable[[], bool] = lambda: False,
        every: int = 10_000, every_seconds: float = 5.0, rate: float | None = None,
        progress: Callable[[int], None] | None = None, chunk_lines: int = SORT_CHUNK_LINES,
        workdir: Path | None = None, clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep) -> BackfillReport:
    """Publish the plan's lines in event-time order from where its checkpoint stands.

    ``stop`` is asked before each line (Ctrl-C): when it says so, the run flushes, saves
    the checkpoint and returns, ``interrupted``. The checkpoint is saved after a flush
    every ``every`` lines or ``every_seconds``, whichever comes first. ``rate`` caps
    events a second. ``progress`` gets the lines done so far (those skipped as done
    before included). Only :class:`PublishError` (Kafka did not take the events) ends a
    run early; the checkpoint then stands at the last flush that succeeded.
    """
    state = backfill.checkpoint
    report = BackfillReport(state.total, state.published, state.rejected, Counter(state.reasons),
                            [(str(e[0]), int(e[1]), str(e[2]), str(e[3])) for e in state.errors])
    if state.done:
        return report
    after = tuple(state.position) if state.position is not None else None
    since, until = state.window
    labels = [s.label for s in backfill.sources]
    started, sent, done, unsaved = clock(), 0, 0, 0
    saved = started
    with ExitStack() as stack:
        streams: list[Iterable[Line]] = []
        for index, source in enumerate(backfill.sources):
            if index in state.unsorted:
                folder = Path(stack.enter_context(tempfile.TemporaryDirectory(
                    prefix="touchpoint-backfill-", dir=workdir)))
                streams.append(_sorted(index, source, folder, chunk_lines, stack))
            else:
                streams.append(_lines(index, source))
        last = after
        for line in heapq.merge(*streams):
            done += 1
            if after is not None and line.position <= after:
                report.skipped += 1
                if progress is not None and done % 1000 == 0:
                    progress(done)
                continue
            if stop():
                report.interrupted = True
                break
            if until is not None and line.at >= until:
                # the order is event time: every line from here is past the slice too
                report.outside += state.total - done + 1
                if progress is not None:
                    progress(state.total)
                break
            if since is not None and line.at < since:
                report.outside += 1
            elif isinstance(line.event, Rejection):
                _refuse(report, labels[line.source], line.number, line.event.code,
                        line.event.reason)
            else:
                assert line.channel is not None  # a line with an event has its channel
                try:
                    publisher.publish(line.channel, line.event)
                    report.published += 1
                    sent += 1
                except ContractError as exc:
                    _refuse(report, labels[line.source], line.number, exc.code, str(exc))
            last = line.position
            if progress is not None:
                progress(done)
            unsaved += 1
            if unsaved >= every or clock() - saved >= every_seconds:
                _save(backfill, publisher, report, last, done=False)
                saved, unsaved = clock(), 0
            if rate:
                ahead = started + sent / rate - clock()
                if ahead > 0:
                    sleep(ahead)
        _save(backfill, publisher, report, last, done=not report.interrupted)
    return report


def _refuse(report: BackfillReport, label: str, number: int, code: str, reason: str) -> None:
    report.rejected += 1
    report.reasons[code] += 1
    if len(report.errors) < KEPT_ERRORS:
        report.errors.append((label, number, code, reason))


def _save(backfill: Plan, publisher: Sender, report: BackfillReport,
          position: tuple[int, ...] | None, *, done: bool) -> None:
    publisher.flush()  # raises PublishError: then the checkpoint stays where it was
    state = backfill.checkpoint
    state.position = None if position is None else list(position)
    state.published, state.rejected = report.published, report.rejected
    state.reasons = dict(report.reasons)
    state.errors = [list(e) for e in report.errors]
    state.done = done
    state.save(backfill.path)


def _sorted(index: int, source: Source, folder: Path, chunk_lines: int,
            stack: ExitStack) -> Iterator[Line]:
    """The input's lines in event-time order: sorted runs of ``chunk_lines`` on disk, merged."""
    runs: list[Path] = []
    chunk: list[Line] = []

    def spill() -> None:
        chunk.sort()
        run_path = folder / f"run-{len(runs):05d}.jsonl"
        with run_path.open("w", encoding="utf-8") as out:
            for line in chunk:
                event = line.event
                body = ({"event": event} if not isinstance(event, Rejection)
                        else {"code": event.code, "reason": event.reason})
                out.write(json.dumps([line.at, line.number, line.channel, body],
                                     ensure_ascii=False) + "\n")
        runs.append(run_path)
        chunk.clear()

    for line in _lines(index, source):
        chunk.append(line)
        if len(chunk) >= chunk_lines:
            spill()
    if chunk:
        spill()
    return heapq.merge(*(_read_run(index, path, stack) for path in runs))


def _read_run(index: int, path: Path, stack: ExitStack) -> Iterator[Line]:
    stream = stack.enter_context(path.open(encoding="utf-8"))
    for text in stream:
        at, number, channel, body = json.loads(text)
        event = body["event"] if "event" in body else Rejection(body["code"], body["reason"])
        yield Line(at, index, number, channel, event)

