"""``touchpoint deadletters list|show|replay``: see, correct and re-send rejected records."""

from __future__ import annotations

import heapq
import json
import sys
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import click

from touchpoint.commands.common import fail, one_line_errors, settings_or_exit, text_table
from touchpoint.schemas.contract import CHANNELS

if TYPE_CHECKING:
    from touchpoint.deadletters import DeadLetter

__all__ = ["deadletters"]


def _selection_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The filters every subcommand takes; all given must match."""
    for option in reversed((
        click.option("--reason", "reasons", multiple=True,
                     help="Only this reason code (repeatable), e.g. bad_field."),
        click.option("--channel", "channels", multiple=True, type=click.Choice(list(CHANNELS)),
                     help="Only records from this channel's topic (repeatable)."),
        click.option("--since", help="Rejected at or after: a UTC day, 2026-11-01, or a time "
                                     "with offset, 2026-11-01T09:00+08:00."),
        click.option("--until", help="Rejected before: a day (inclusive: up to its end) or a "
                                     "time (exclusive)."),
    )):
        command = option(command)
    return command


def _selection(settings: Any, ids: tuple[str, ...], reasons: tuple[str, ...],
               channels: tuple[str, ...], since: str | None, until: str | None) -> Any:
    from touchpoint.deadletters import Selection, parse_id
    from touchpoint.report import parse_period
    from touchpoint.streams.topics import TopicNames

    try:
        period = parse_period(since, until)
        checked = frozenset(parse_id(i) for i in ids)
    except ValueError as exc:
        fail(str(exc))
    return Selection(
        TopicNames.of(settings), ids=checked, reasons=frozenset(reasons),
        channels=frozenset(channels),
        since_ms=None if period.since is None else int(period.since.timestamp() * 1000),
        until_ms=None if period.until is None else int(period.until.timestamp() * 1000))


@click.group()
def deadletters() -> None:
    """See, correct and re-send dead letters (records the pipeline refused).

    Dead letters are read from the dead-letter topic, which keeps each refused record's
    original bytes. A dead letter is named by where the refused record was:
    TOPIC/PARTITION/OFFSET (`list` shows it).

    \b
      touchpoint deadletters list --reason bad_field --channel store --since 2026-11-01
      touchpoint deadletters show touchpoints.store/2/4410
      touchpoint deadletters replay --reason missing_field --set store_id=SH-01 --dry-run
      touchpoint deadletters replay touchpoints.store/2/4410 --patch '{"score": 4}'
    """  # noqa: D301 - click needs a real backspace in "\b"


@deadletters.command("list")
@_selection_options
@click.option("--limit", type=click.IntRange(1), default=100, show_default=True,
              help="Most dead letters listed (the count covers all).")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table",
              show_default=True, help="Output format.")
def list_(reasons: tuple[str, ...], channels: tuple[str, ...], since: str | None,
          until: str | None, limit: int, fmt: str) -> None:
    """List dead letters, oldest first, with reason and replay state.

    \b
      touchpoint deadletters list
      touchpoint deadletters list --reason unknown_type --reason bad_field --channel web
      touchpoint deadletters list --since 2026-11-20T08:00+08:00 --format json
    """  # noqa: D301 - click needs a real backspace in "\b"
    from touchpoint.deadletters import read_dead_letters
    from touchpoint.replay import ReplayLog

    settings = settings_or_exit()
    selection = _selection(settings, (), reasons, channels, since, until)
    count = 0

    def counted(letters: Iterable[DeadLetter]) -> Iterator[DeadLetter]:
        nonlocal count
        for letter in letters:
            count += 1
            yield letter

    with one_line_errors():
        replays = ReplayLog.load(settings, producer=None)
        # the topic is read partition by partition; keep only the oldest `limit` of it
        oldest = heapq.nsmallest(limit, counted(read_dead_letters(settings, selection)),
                                 key=lambda d: (d.rejected_at, d.id))
    rows = [{"id": letter.id, "rejected_at": _time(letter.rejected_at),
             "reason_code": letter.reason_code, "replay": replays.state(letter.id) or "",
             "reason": letter.reason} for letter in oldest]
    if fmt == "json":
        click.echo(json.dumps({"count": count, "dead_letters": rows}, ensure_ascii=False,
                              indent=1))
        return
    if rows:
        click.echo(text_table(list(rows[0]), [[_clip(v) for v in r.values()] for r in rows]))
    more = f" (the oldest {limit} listed: --limit)" if count > limit else ""
    click.echo(f"\n{count} dead letter(s){more}")


@deadletters.command()
@click.argument("ids", nargs=-1, required=True, metavar="ID...")
def show(ids: tuple[str, ...]) -> None:
    """Show dead letters whole: where from, why, and the record as its producer sent it.

    The record is shown decoded when it decodes (as JSON), else as its bytes. It may
    hold e-mail and phone in clear, as the inbound topic does.

    \b
      touchpoint deadletters show touchpoints.web/0/1200 touchpoints.web/0/1201
    """  # noqa: D301 - click needs a real backspace in "\b"
    from touchpoint.deadletters import original_event, read_dead_letters
    from touchpoint.replay import ReplayLog
    from touchpoint.schemas.contract import Rejection
    from touchpoint.streams.topics import TopicNames

    settings = settings_or_exit()
    selection = _selection(settings, ids, (), (), None, None)
    topics = TopicNames.of(settings)
    shown: set[str] = set()
    with one_line_errors():
        replays = ReplayLog.load(settings, producer=None)
        for letter in read_dead_letters(settings, selection):
            shown.add(letter.id)
            found = original_event(letter, topics)
            entry = replays.entries.get(letter.id)
            click.echo(f"{_safe(letter.id)}\n"
                       f"  rejected_at: {_time(letter.rejected_at)} by {_safe(letter.worker)}\n"
                       f"  reason:      [{_safe(letter.reason_code)}] {_safe(letter.reason)}\n"
                       f"  key:         {_bytes_text(letter.key)}\n"
                       f"  replay:      {json.dumps(entry) if entry else 'never'}")
            if isinstance(found, Rejection):
                click.echo(f"  record ({len(letter.payload):,} bytes, not replayable as it is: "
                           f"{_safe(found.reason)}):\n    {_bytes_text(letter.payload)}\n")
            else:
                record = {k: v for k, v in found[1].items() if v not in (None, {})}
                as_json = json.dumps(record, ensure_ascii=False, indent=2, default=repr)
                click.echo(f"  record ({found[0]}):\n"
                           + "".join(f"    {_safe(line)}\n" for line in as_json.split("\n")))
    missing = [i for i in selection.ids if i not in shown]
    if missing:
        fail(f"no dead letter {', '.join(sorted(missing))} on {topics.deadletter}")


@deadletters.command()
@click.argument("ids", nargs=-1, metavar="[ID...]")
@_selection_options
@click.option("--all", "everything", is_flag=True,
              help="Replay every dead letter the filters select (needed without IDs or filters).")
@click.option("--set", "sets", multiple=True, metavar="FIELD=VALUE",
              help="Set a field (a string) on every selected record before it is checked; "
                   "attributes.KEY=VALUE sets an attribute. Repeatable.")
@click.option("--patch", help="A JSON merge patch (RFC 7386) applied to every selected record "
                              "before --set: numbers, and null to remove a field.")
@click.option("--dry-run", is_flag=True,
              help="Check and count what would be replayed; send nothing.")
@click.option("--show", type=click.IntRange(0), default=20, show_default=True,
              help="How many refusals to list.")
def replay(ids: tuple[str, ...], reasons: tuple[str, ...], channels: tuple[str, ...],
           since: str | None, until: str | None, everything: bool, sets: tuple[str, ...],
           patch: str | None, dry_run: bool, show: int) -> None:
    """Send dead letters back to their inbound topic, corrected, each one once.

    Each selected record (with the corrections) is checked against the contract as
    `touchpoint publish` checks it: refused again, it is listed with the reason and not
    sent. A dead letter replayed before is skipped, however often this runs, even if a
    run was stopped half-way (docs/design/deadletters-and-backfill.md). Exits 1 when
    any record was refused.

    \b
      touchpoint deadletters replay --reason unknown_schema --all   # after a schema fix
      touchpoint deadletters replay --channel store --reason missing_field --set store_id=SH-01
      touchpoint deadletters replay touchpoints.feedback/1/88 --patch '{"score": 5}'
    """  # noqa: D301 - click needs a real backspace in "\b"
    from touchpoint.deadletters import parse_patch, parse_set, read_dead_letters
    from touchpoint.replay import ReplayLog
    from touchpoint.replay import replay as run_replay

    settings = settings_or_exit()
    if not (ids or reasons or channels or since or until or everything):
        fail("say which dead letters to replay: IDs, --reason, --channel, --since, --until, "
             "or --all for every one")
    try:
        corrections = [parse_set(s) for s in sets]
        merge = parse_patch(patch) if patch is not None else None
    except ValueError as exc:
        fail(str(exc))
    selection = _selection(settings, ids, reasons, channels, since, until)
    with one_line_errors():
        producer = _producer(settings)
        try:
            log = ReplayLog.load(settings, producer)
            report = run_replay(settings, read_dead_letters(settings, selection),
                                producer=producer, log=log, sets=corrections, patch=merge,
                                dry_run=dry_run)
        finally:
            producer.close()
    verb = "would be replayed" if dry_run else "replayed"
    where = ", ".join(f"{t}: {n}" for t, n in sorted(report.replayed.items()))
    click.echo(f"{sum(report.replayed.values())} {verb}{f' ({where})' if where else ''}, "
               f"{len(report.refused)} refused, {report.skipped} skipped as already replayed")
    for code, count in report.reasons.most_common():
        click.echo(f"  refused {code}: {count}")
    for refusal in report.refused[:show]:
        click.echo(f"  {refusal.id} [{refusal.code}]: {refusal.reason}", err=True)
    if len(report.refused) > show:
        click.echo(f"  ... and {len(report.refused) - show} more (use --show)", err=True)
    sys.exit(1 if report.refused else 0)


def _producer(settings: Any) -> Any:
    from kafka import KafkaProducer
    from kafka.errors import KafkaError

    from touchpoint.exceptions import PublishError
    from touchpoint.streams.topics import ensure_topics

    ensure_topics(settings)
    try:
        return KafkaProducer(bootstrap_servers=settings.kafka_servers, acks="all", retries=5,
                             max_in_flight_requests_per_connection=1, linger_ms=5)
    except KafkaError as exc:
        raise PublishError(f"cannot reach Kafka at {settings.kafka_bootstrap} ({exc})") from exc


def _time(millis: int) -> str:
    return datetime.fromtimestamp(millis / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _safe(text: str) -> str:
    """Text from the topic as it can be shown: control characters escaped, not obeyed.

    Whoever wrote to the dead-letter topic chose these strings; a terminal escape in
    them must not move the cursor or rewrite what an operator sees.
    """
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")


def _clip(value: Any, width: int = 90) -> str:
    text = _safe(str(value))
    return text if len(text) <= width else text[:width - 1] + "…"


def _bytes_text(data: bytes | None) -> str:
    """Bytes as text when they are UTF-8 without control characters, else as hex."""
    if data is None:
        return "(none)"
    shown = data[:512]
    try:
        text = shown.decode()
    except UnicodeDecodeError:
        text = ""
    if text and text.isprintable():
        return text + ("…" if len(data) > len(shown) else "")
    return shown.hex(" ") + (f" … ({len(data):,} bytes)" if len(data) > len(shown) else "")
