"""``touchpoint collect`` and ``touchpoint keys`` on the command line (no server started)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from touchpoint.cli import main


@pytest.mark.parametrize("command", [["collect"], ["keys"], ["keys", "create"],
                                     ["keys", "list"], ["keys", "revoke"]])
def test_every_command_has_help(command: list[str]) -> None:
    result = CliRunner().invoke(main, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert len(result.output.splitlines()) > 4


def test_a_key_s_secret_is_printed_once_alone_on_stdout(tmp_path: Path) -> None:
    env = {"TOUCHPOINT_HOME": str(tmp_path), "TOUCHPOINT_PII_SALT": "s" * 16}
    runner = CliRunner()
    created = runner.invoke(main, ["keys", "create", "shop", "-c", "web", "--origin",
                                   "https://shop.example.com"], env=env)
    assert created.exit_code == 0, created.output
    secret = created.stdout.strip()
    assert re.fullmatch(r"tpk_[0-9a-f]{12}_[A-Za-z0-9_-]{43}", secret)
    key_id = secret.split("_")[1]
    assert created.stderr == (f"created write key {key_id} (shop) for web; its secret, "
                              "shown only now:\n")
    listed = runner.invoke(main, ["keys", "list"], env=env)
    assert key_id in listed.output and "https://shop.example.com" in listed.output
    assert secret not in listed.output and secret not in (tmp_path / "collect_keys.json"
                                                          ).read_text()
    revoked = runner.invoke(main, ["keys", "revoke", key_id], env=env)
    assert revoked.output == f"revoked write key {key_id} (shop)\n"
    assert "active" not in runner.invoke(main, ["keys", "list"], env=env).output


def test_mistakes_are_one_error_line(tmp_path: Path) -> None:
    env = {"TOUCHPOINT_HOME": str(tmp_path), "TOUCHPOINT_PII_SALT": "s" * 16}
    runner = CliRunner()
    revoked = runner.invoke(main, ["keys", "revoke", "nope"], env=env)
    assert (revoked.exit_code, revoked.stderr) == (
        1, "Error: no write key 'nope': `touchpoint keys list` shows them\n")
    bad_origin = runner.invoke(main, ["keys", "create", "shop", "-c", "web", "--origin",
                                      "shop.example.com"], env=env)
    assert bad_origin.exit_code == 1
    assert bad_origin.stderr.startswith("Error: 'shop.example.com' is not a browser origin")
