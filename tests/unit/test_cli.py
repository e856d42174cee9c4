from __future__ import annotations

import json

import click
import pytest
from click.testing import CliRunner

from touchpoint.cli import main
from touchpoint.settings import settings_markdown

COMMANDS = ["services", "worker", "publish", "simulate", "migrate", "query", "settings", "demo",
            "customer", "signals", "report", "backfill", "deadletters", "sentiment"]
SUBCOMMANDS = [("deadletters", "list"), ("deadletters", "show"), ("deadletters", "replay")]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command: str) -> None:
    result = CliRunner().invoke(main, [command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage: main " in result.output or "Usage: touchpoint " in result.output
    assert len(result.output.splitlines()) > 4


def test_main_help_lists_the_commands() -> None:
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    for command in COMMANDS:
        assert command in result.output


def test_help_keeps_the_example_blocks_as_written() -> None:
    lines = [line.strip() for line in CliRunner().invoke(main, ["--help"]).output.splitlines()]
    for example in (
            "touchpoint services start      # Kafka (and the ClickHouse server, if installed)",
            "touchpoint worker &            # ingest and store",
            "touchpoint simulate --events 10000",
            'touchpoint query "SELECT channel, count() FROM touchpoint_events GROUP BY channel"'):
        assert example in lines
    report = CliRunner().invoke(main, ["report", "--help"]).output
    assert "\\b" not in report
    assert [line.split()[0] for line in report.splitlines() if line.startswith("    ")
            and line.split()[0] in ("campaigns", "touchpoints", "ads", "channels", "signals")
            ] == ["campaigns", "touchpoints", "ads", "channels", "signals"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_option_has_help(command: str) -> None:
    options = [p for p in main.commands[command].params if isinstance(p, click.Option)]
    assert [o.name for o in options if not o.help] == []


@pytest.mark.parametrize(("group", "command"), SUBCOMMANDS)
def test_every_subcommand_has_help_with_examples(group: str, command: str) -> None:
    found = main.commands[group].commands[command]  # type: ignore[attr-defined]
    options = [p for p in found.params if isinstance(p, click.Option)]
    assert [o.name for o in options if not o.help] == []
    result = CliRunner().invoke(main, [group, command, "--help"])
    assert result.exit_code == 0, result.output
    assert f"  touchpoint {group} {command} " in result.output


def test_settings_markdown() -> None:
    result = CliRunner().invoke(main, ["settings", "--markdown"])
    assert result.output.strip() == settings_markdown()


@pytest.mark.parametrize("args", [[], ["--markdown"]])
def test_settings_makes_no_file(tmp_path, monkeypatch, args) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("TOUCHPOINT_HOME", str(home))
    monkeypatch.chdir(tmp_path)
    for name in ("TOUCHPOINT_PII_SALT", "TOUCHPOINT_API_TOKENS", "TOUCHPOINT_API_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    result = CliRunner().invoke(main, ["settings", *args])
    assert result.exit_code == 0, result.output
    assert list(tmp_path.iterdir()) == []
    if not args:
        assert "TOUCHPOINT_PII_SALT=(local file, not made yet)" in result.output
        assert "TOUCHPOINT_API_TOKENS=local=(local file, not made yet)" in result.output


def test_settings_masks_every_secret(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TOUCHPOINT_HOME", str(tmp_path))
    salt, token = "s" * 20 + "salt-secret", "t" * 20 + "token-secret"
    monkeypatch.setenv("TOUCHPOINT_PII_SALT", salt)
    monkeypatch.setenv("TOUCHPOINT_API_TOKENS", f"ops={token}")
    monkeypatch.setenv("TOUCHPOINT_API_TOKEN", token)
    result = CliRunner().invoke(main, ["settings"])
    assert result.exit_code == 0, result.output
    assert salt not in result.output and token not in result.output
    assert "TOUCHPOINT_PII_SALT=(set)" in result.output
    assert "TOUCHPOINT_API_TOKENS=ops=(set)" in result.output
    assert "TOUCHPOINT_API_TOKEN=(set)" in result.output


def test_publish_dry_run_reports_each_bad_line(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TOUCHPOINT_HOME", str(tmp_path))
    source = tmp_path / "events.jsonl"
    source.write_text(
        '{"event_id": "a", "type": "page_view", "occurred_at": 1795000000000, '
        '"anonymous_id": "x"}\n'
        '{"event_id": "b", "type": "page_view", "occurred_at": 1795000000000}\n'
        "\n"
        "[1, 2]\n")
    result = CliRunner().invoke(main, ["publish", "-c", "web", "--dry-run", str(source)])
    assert result.exit_code == 1
    assert "1 valid, 2 rejected" in result.output
    assert "line 2 [no_identifier]: no customer identifier" in result.output
    assert "line 4 [bad_json]: a line must be one JSON object" in result.output
    assert "Nothing was published." in result.output


def _event_line(event_id: str, **fields: object) -> str:
    return json.dumps({"event_id": event_id, "type": "page_view", "occurred_at": 1795000000000,
                       "anonymous_id": f"ck-{event_id}", **fields}) + "\n"


def test_publish_refuses_a_5000_deep_line_and_publishes_the_others(tmp_path, monkeypatch
                                                                    ) -> None:
    from touchpoint.publish import Publisher
    from touchpoint.schemas.codec import codec_for

    monkeypatch.setenv("TOUCHPOINT_HOME", str(tmp_path))
    source = tmp_path / "events.jsonl"
    source.write_text(_event_line("a") + "[" * 5_000 + "]" * 5_000 + "\n" + _event_line("b"))
    deep = ("  line 2 [too_deep]: line nests arrays or objects more than 32 deep: an event is "
            "one object of fields, attributes one object inside it")

    dry = CliRunner().invoke(main, ["publish", "-c", "web", "--dry-run", str(source)])
    assert dry.exit_code == 1, dry.output
    assert "2 valid, 1 rejected" in dry.output and deep in dry.output.splitlines()
    assert "Traceback" not in dry.output and isinstance(dry.exception, SystemExit)

    sent: list[tuple[str, bytes | None, bytes]] = []

    class Producer:
        def send(self, topic: str, *, key: bytes | None, value: bytes) -> object:
            sent.append((topic, key, value))
            return type("Future", (), {"add_errback": lambda self, callback: None})()

        def flush(self, timeout: float | None = None) -> None:
            pass

        def close(self) -> None:
            pass

    monkeypatch.setattr(Publisher, "from_settings", classmethod(
        lambda cls, settings: cls(bootstrap_servers=["unused:9092"],
                                  phone_region=settings.phone_region, producer=Producer())))
    result = CliRunner().invoke(main, ["publish", "-c", "web", str(source)])
    assert result.exit_code == 1, result.output
    assert "2 published, 1 rejected" in result.output and deep in result.output.splitlines()
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)
    assert [codec_for("web").decode(value)["event_id"] for _, _, value in sent] == ["a", "b"]


def test_publish_gives_every_line_a_verdict_and_caps_the_list(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TOUCHPOINT_HOME", str(tmp_path))
    source = tmp_path / "events.jsonl"
    source.write_bytes(b"".join([
        _event_line("a").encode(),
        b'{"event_id": "\xff\xfe"}\n',                             # not UTF-8
        b'{"dwell_ms": ' + b"9" * 5_000 + b"}\n",                   # a 5,000-digit number
        _event_line("b", dwell_ms=2**64 - 1).encode(),
        _event_line("c", email="not-an-email-address").encode(),
        _event_line("d", phone="call me maybe").encode(),
        _event_line("e", attributes={"k": "v" * 2_000}).encode(),
        _event_line("f").encode(),
    ]))
    result = CliRunner().invoke(main, ["publish", "-c", "web", "--dry-run", "--show", "3",
                                       str(source)])
    assert result.exit_code == 1, result.output
    lines = result.output.splitlines()
    assert lines[0] == "2 valid, 6 rejected"
    assert "  line 2 [bad_json]: line is not UTF-8 (byte 0xff at position 14): save the file " \
           "as UTF-8" in lines
    assert any(x.startswith("  line 3 [bad_json]: not JSON we can read") for x in lines)
    assert any(x.startswith("  line 4 [out_of_range]: dwell_ms=18446744073709551615 is out of "
                            "range") for x in lines)
    assert "  ... and 3 more (use --show)" in lines
    assert not any(x.startswith("  line 5") for x in lines)
    assert "Traceback" not in result.output


def test_simulate_needs_a_limit(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TOUCHPOINT_HOME", str(tmp_path))
    result = CliRunner().invoke(main, ["simulate"])
    assert result.exit_code == 2
    assert "Error: give --duration SECONDS or --events N (or both)" in result.output


def test_a_bad_setting_is_one_error_line(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("TOUCHPOINT_HOME", str(tmp_path))
    monkeypatch.setenv("TOUCHPOINT_TOPIC_PARTITIONS", "zero")
    result = CliRunner().invoke(main, ["migrate"])
    assert result.exit_code == 1
    assert result.output.strip() == "Error: TOUCHPOINT_TOPIC_PARTITIONS='zero' is invalid: " \
                                    "must be a whole number"


def test_simulate_scenario_writes_the_labelled_files(tmp_path, monkeypatch) -> None:
    from datetime import UTC, datetime

    from touchpoint.sim.scenarios import generate, load_events, load_truth, write

    monkeypatch.setenv("TOUCHPOINT_HOME", str(tmp_path))
    out = tmp_path / "scenario"
    result = CliRunner().invoke(main, ["simulate", "--scenario", "complaints", "--out",
                                       str(out), "--customers", "40", "--seed", "3",
                                       "--days", "10"])
    assert result.exit_code == 0, result.output
    expected = generate(seed=3, customers=40, start=datetime(2026, 11, 2, tzinfo=UTC),
                        days=10.0)
    write(expected, tmp_path / "expected")
    names = ["callcenter.jsonl", "campaign.jsonl", "events.jsonl", "feedback.jsonl",
             "store.jsonl", "truth.json", "web.jsonl"]
    assert sorted(p.name for p in out.iterdir()) == names
    for name in names:
        assert (out / name).read_bytes() == (tmp_path / "expected" / name).read_bytes(), name
    assert len(load_truth(out)) == 40
    assert list(load_events(out)) == expected.events
    assert f"{len(expected.events)} events of 40 customers (" in result.output


def test_simulate_scenario_start_moves_the_journeys(tmp_path, monkeypatch) -> None:
    from touchpoint.sim.scenarios import load_truth

    monkeypatch.setenv("TOUCHPOINT_HOME", str(tmp_path))
    out = tmp_path / "scenario"
    result = CliRunner().invoke(main, ["simulate", "--scenario", "complaints", "--out",
                                       str(out), "--customers", "5",
                                       "--start", "2027-03-01T00:00+00:00"])
    assert result.exit_code == 0, result.output
    data = json.loads((out / "truth.json").read_text())
    assert data["start"] == "2027-03-01T00:00:00.000+00:00"
    assert data["days"] == 28.0
    assert len(load_truth(out)) == 5


@pytest.mark.parametrize(("args", "message"), [
    (["--scenario", "complaints"], "Error: --scenario needs --out DIR, the folder for the files"),
    (["--scenario", "complaints", "--out", "x", "--events", "10"],
     "Error: --rate, --duration and --events are for live traffic, not --scenario"),
    (["--out", "x", "--events", "10"],
     "Error: --out, --days and --publish go with --scenario"),
    (["--publish", "--events", "10"],
     "Error: --out, --days and --publish go with --scenario"),
])
def test_simulate_scenario_options_go_together(tmp_path, monkeypatch, args, message) -> None:
    monkeypatch.setenv("TOUCHPOINT_HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["simulate", *args])
    assert result.exit_code == 2
    assert result.output.strip() == message
    assert not (tmp_path / "x").exists()


def test_simulate_campaign_scenario_writes_events_and_expected_report(tmp_path, monkeypatch
                                                                      ) -> None:
    from touchpoint.sim.campaign_scenario import load_expected

    monkeypatch.setenv("TOUCHPOINT_HOME", str(tmp_path))
    out = tmp_path / "campaigns"
    result = CliRunner().invoke(main, ["simulate", "--scenario", "campaigns", "--out",
                                       str(out), "--customers", "30", "--seed", "4"])
    assert result.exit_code == 0, result.output
    expected = load_expected(out)
    lines = (out / "events.jsonl").read_text().splitlines()
    assert len(lines) == expected["events"] and expected["seed"] == 4
    assert sum(len((out / f"{ch}.jsonl").read_text().splitlines())
               for ch in expected["channels"]) == expected["events"]


def test_worker_loads_the_text_analyzers_before_it_starts_consuming(tmp_path,
                                                                     monkeypatch) -> None:
    # Loaded lazily, jieba's dictionary (~0.6 s) stalled every stage at the first note.
    import types

    import faust.worker

    from touchpoint.commands import worker as worker_command
    from touchpoint.streams.rules import sentiment
    from touchpoint.streams.runtime import memory

    monkeypatch.setenv("TOUCHPOINT_HOME", str(tmp_path))
    monkeypatch.setattr(sentiment, "_shared", None)
    order: list[str] = []
    monkeypatch.setattr(memory, "tune", lambda: order.append(
        f"tune, analyzers {'loaded' if sentiment._shared else 'not loaded'}"))
    pipeline = types.SimpleNamespace(app=object(), warehouse=types.SimpleNamespace(url="x"),
                                     close=lambda: None)
    monkeypatch.setattr(worker_command, "_prepare_worker", lambda settings: pipeline)

    class Worker:
        def __init__(self, app: object, **options: object) -> None:
            assert app is pipeline.app

        def execute_from_commandline(self) -> None:
            order.append(f"worker, analyzers {'loaded' if sentiment._shared else 'not loaded'}")

    monkeypatch.setattr(faust.worker, "Worker", Worker)
    result = CliRunner().invoke(main, ["worker"])
    assert result.exit_code == 0, result.output
    assert order == ["tune, analyzers loaded", "worker, analyzers loaded"]


def test_publish_shows_a_progress_bar_when_asked_or_on_a_terminal(tmp_path, monkeypatch
                                                                   ) -> None:
    monkeypatch.setenv("TOUCHPOINT_HOME", str(tmp_path))
    source = tmp_path / "events.jsonl"
    source.write_text(_event_line("a") * 3)
    size = source.stat().st_size
    asked = CliRunner().invoke(main, ["publish", "-c", "web", "--dry-run", "--progress",
                                      str(source)])
    assert asked.exit_code == 0, asked.output
    assert f"publish: 100%|██████████| {size}/{size} [" in asked.output
    assert "3 valid, 0 rejected" in asked.output
    # not a terminal (the runner's output), not asked: no bar
    quiet = CliRunner().invoke(main, ["publish", "-c", "web", "--dry-run", str(source)])
    assert quiet.output == "3 valid, 0 rejected\n"


def test_backfill_refuses_an_unsorted_input_before_publishing_anything(tmp_path, monkeypatch
                                                                        ) -> None:
    monkeypatch.setenv("TOUCHPOINT_HOME", str(tmp_path))
    # Kafka here is nowhere: the refusal comes before anything would be sent
    monkeypatch.setenv("TOUCHPOINT_KAFKA_BOOTSTRAP", "127.0.0.1:1")
    source = tmp_path / "web.jsonl"
    source.write_text(_event_line("a") + _event_line("b", occurred_at=1794999999999))
    result = CliRunner().invoke(main, ["backfill", f"web={source}"])
    assert result.exit_code == 1
    assert result.output == (f"Error: web={source} is not in event-time order: line 2 is "
                             "earlier than line 1; sort it (e.g. by occurred_at), or pass "
                             "--sort to sort it in chunks on disk\n")
    missing = CliRunner().invoke(main, ["backfill", f"web={tmp_path / 'nope.jsonl'}"])
    assert missing.exit_code == 1
    assert missing.output.startswith("Error: cannot read web=")


def test_the_progress_bar_shows_on_a_terminal_that_reports_no_size(monkeypatch) -> None:
    import os
    import pty

    from touchpoint.commands.common import progress_bar

    reader, writer = pty.openpty()  # a new pseudo-terminal reports 0 rows, 0 columns
    assert os.get_terminal_size(writer) == os.terminal_size((0, 0))
    with os.fdopen(writer, "w") as terminal:
        monkeypatch.setattr("sys.stderr", terminal)
        with progress_bar(3, enabled=None, desc="work") as bar:
            bar.update(3)
        terminal.flush()
    # every write, not the first: read until the closed terminal's end (EIO on Linux)
    chunks = []
    while True:
        try:
            chunk = os.read(reader, 4096)
        except OSError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    shown = b"".join(chunks).decode()
    os.close(reader)
    assert "work: 100%|" in shown and "3/3 [" in shown


def _sentiment(monkeypatch, tmp_path, args, stdin=None):
    monkeypatch.setenv("TOUCHPOINT_HOME", str(tmp_path))
    monkeypatch.delenv("TOUCHPOINT_SIGNAL_RULES", raising=False)
    result = CliRunner().invoke(main, ["sentiment", *args], input=stdin)
    assert result.exit_code == 0, result.output
    return [line.split() for line in result.stdout.splitlines()]


def test_sentiment_scores_each_text_and_says_what_the_detector_flags(monkeypatch,
                                                                      tmp_path) -> None:
    header, complaint, thanks, empty = _sentiment(
        monkeypatch, tmp_path, ["等了两个小时还没人处理", "Thanks, all sorted", ""])
    assert header == ["score", "label", "flagged", "text"]
    assert float(complaint[0]) <= -0.2 and complaint[1:] == ["negative", "yes",
                                                            "等了两个小时还没人处理"]
    assert float(thanks[0]) > 0 and thanks[1:3] == ["positive", "no"]
    assert empty == ["-", "no", "text", "no"]
    assert list(tmp_path.iterdir()) == []  # makes no secret file


def test_sentiment_reads_stdin_and_explains_chinese(monkeypatch, tmp_path) -> None:
    header, chinese, english = _sentiment(
        monkeypatch, tmp_path, ["--explain"], stdin="账单里多了一笔不认识的扣费\nAll good\n")
    assert header == ["score", "label", "flagged", "lexicon", "model", "text"]
    score, _, flagged, lexicon, model, _ = chinese
    # the lexicon finds nothing; the model reads the fact as a complaint
    assert float(lexicon) == 0.0 and float(model) > 0 and float(score) <= -0.2
    assert flagged == "yes"
    assert english[3:5] == ["-", "-"]


def test_sentiment_flags_by_the_configured_rules(monkeypatch, tmp_path) -> None:
    from touchpoint.streams.rules.complaints import DEFAULT_RULES

    rules = tmp_path / "rules.toml"
    text = DEFAULT_RULES.read_text(encoding="utf-8")
    assert "threshold = -0.2\n" in text
    rules.write_text(text.replace("threshold = -0.2\n", "threshold = -0.95\n", 1),
                     encoding="utf-8")
    monkeypatch.setenv("TOUCHPOINT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TOUCHPOINT_SIGNAL_RULES", str(rules))
    result = CliRunner().invoke(main, ["sentiment", "等了两个小时还没人处理"])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[1].split()[2] == "no"
    assert "score <= -0.95" in result.stderr


def test_sentiment_names_a_broken_rules_file(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("TOUCHPOINT_HOME", str(tmp_path))
    monkeypatch.setenv("TOUCHPOINT_SIGNAL_RULES", str(tmp_path / "absent.toml"))
    result = CliRunner().invoke(main, ["sentiment", "hello"])
    assert result.exit_code != 0
    assert "absent.toml not found" in result.output
