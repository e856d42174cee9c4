from __future__ import annotations

import pytest
from click.testing import CliRunner

from touchpoint.cli import main
from touchpoint.settings import settings_markdown

COMMANDS = ["services", "worker", "publish", "simulate", "migrate", "query", "settings", "demo",
            "customer"]


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


def test_settings_markdown() -> None:
    result = CliRunner().invoke(main, ["settings", "--markdown"])
    assert result.output.strip() == settings_markdown()


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
    assert "line 2: no customer identifier" in result.output
    assert "line 4: a line must be one JSON object" in result.output
    assert "Nothing was published." in result.output


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
