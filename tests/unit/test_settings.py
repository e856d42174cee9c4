from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest

from touchpoint.exceptions import ConfigError
from touchpoint.settings import SETTINGS, Settings, WarehouseURL, load_settings, settings_markdown

README = Path(__file__).resolve().parents[2] / "README.md"


def test_defaults(tmp_path: Path) -> None:
    settings = load_settings({"TOUCHPOINT_HOME": str(tmp_path)})
    assert settings.kafka_bootstrap == "127.0.0.1:9092"
    assert settings.topic_partitions == 6
    assert settings.web_port == 6066
    assert settings.clickhouse_url == f"chdb://{tmp_path / 'chdb'}"
    assert settings.warehouse == WarehouseURL("chdb", "touchpoint", path=tmp_path / "chdb")


def test_local_salt_is_created_once_and_kept(tmp_path: Path) -> None:
    first = load_settings({"TOUCHPOINT_HOME": str(tmp_path)}).pii_salt
    second = load_settings({"TOUCHPOINT_HOME": str(tmp_path)}).pii_salt
    assert first == second and len(first) >= 32
    assert (tmp_path / "pii_salt").stat().st_mode & 0o777 == 0o600
    given = "given-salt-0123456"
    assert load_settings({"TOUCHPOINT_HOME": str(tmp_path),
                          "TOUCHPOINT_PII_SALT": given}).pii_salt == given


@pytest.mark.parametrize("content", ["", "\n", "short"])
def test_an_empty_or_short_local_salt_is_an_error_not_a_weak_key(tmp_path: Path,
                                                                 content: str) -> None:
    (tmp_path / "pii_salt").write_text(content)
    with pytest.raises(ConfigError, match=r"pii_salt holds .*delete the file"):
        load_settings({"TOUCHPOINT_HOME": str(tmp_path)})


@pytest.mark.parametrize(("value", "message"), [
    ("", "is empty: set a secret"), ("   ", "is empty: set a secret"),
    ("abc", "is shorter than 16 characters"),
])
def test_an_empty_or_short_salt_setting_is_an_error(tmp_path: Path, value: str,
                                                     message: str) -> None:
    with pytest.raises(ConfigError, match=f"TOUCHPOINT_PII_SALT=.* is invalid: {message}"):
        load_settings({"TOUCHPOINT_HOME": str(tmp_path), "TOUCHPOINT_PII_SALT": value})


def test_api_tokens_are_named_and_a_local_one_is_made_once(tmp_path: Path) -> None:
    home = {"TOUCHPOINT_HOME": str(tmp_path), "TOUCHPOINT_PII_SALT": "unit-test-salt-0123"}
    local = load_settings(home)
    assert list(local.api_tokens) == ["local"] and local.api_token == local.api_tokens["local"]
    assert load_settings(home).api_token == local.api_token
    assert (tmp_path / "api_token").stat().st_mode & 0o777 == 0o600
    named = load_settings({**home,
                           "TOUCHPOINT_API_TOKENS": "ops=aaaaaaaaaaaaaaaa1, bi=bbbbbbbbbbbbbbbbbb2",
                           "TOUCHPOINT_API_TOKEN": "aaaaaaaaaaaaaaaa1"})
    assert dict(named.api_tokens) == {"ops": "aaaaaaaaaaaaaaaa1", "bi": "bbbbbbbbbbbbbbbbbb2"}
    assert named.api_token == "aaaaaaaaaaaaaaaa1"


@pytest.mark.parametrize(("value", "message"), [
    ("", "is empty"), ("ops", "name=token pairs"), ("ops=short", "at least 16 characters"),
    ("a=xxxxxxxxxxxxxxxxxx,a=yyyyyyyyyyyyyyyyyy", "twice"),
    ("a=xxxxxxxxxxxxxxxxxx,b=xxxxxxxxxxxxxxxxxx", "same token"),
    ("bad name=xxxxxxxxxxxxxxxxxx", "name=token pairs"),
])
def test_bad_api_tokens_are_refused(tmp_path: Path, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=f"TOUCHPOINT_API_TOKENS=.* is invalid: .*{message}"):
        load_settings({"TOUCHPOINT_HOME": str(tmp_path),
                              "TOUCHPOINT_PII_SALT": "unit-test-salt-0123",
                       "TOUCHPOINT_API_TOKENS": value})


@pytest.mark.parametrize(("variable", "value", "message"), [
    ("TOUCHPOINT_TOPIC_PARTITIONS", "0",
     "TOUCHPOINT_TOPIC_PARTITIONS='0' is invalid: must be 1 or more"),
    ("TOUCHPOINT_TOPIC_PARTITIONS", "six", "TOUCHPOINT_TOPIC_PARTITIONS='six' is invalid"),
    ("TOUCHPOINT_WEB_PORT", "70000", "must be a TCP port"),
    ("TOUCHPOINT_SESSION_TIMEOUT_SECONDS", "3", "must be between 6 and 90 seconds"),
    ("TOUCHPOINT_FETCH_WAIT_MS", "1000", "must be between 0 and 500 milliseconds"),
    ("TOUCHPOINT_FETCH_WAIT_MS", "-1", "must be 0 or more"),
    ("TOUCHPOINT_LOG_LEVEL", "loud", "must be one of debug, info, warning, error"),
    ("TOUCHPOINT_CLICKHOUSE_URL", "mysql://x", "unknown warehouse URL 'mysql://x'"),
])
def test_invalid_values_name_the_variable(tmp_path: Path, variable: str, value: str,
                                          message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_settings({"TOUCHPOINT_HOME": str(tmp_path),
                              "TOUCHPOINT_PII_SALT": "unit-test-salt-0123",
                       variable: value})


def test_warehouse_urls() -> None:
    server = WarehouseURL.parse("clickhouse://bob:pw@db.local:9440/marketing")
    assert (server.backend, server.host, server.port, server.user, server.password,
            server.database) == ("clickhouse", "db.local", 9440, "bob", "pw", "marketing")
    assert WarehouseURL.parse("clickhouse://127.0.0.1").database == "touchpoint"
    embedded = WarehouseURL.parse("chdb:///var/lib/tp?database=x")
    assert (embedded.path, embedded.database) == (Path("/var/lib/tp"), "x")
    with pytest.raises(ConfigError, match="has no folder"):
        WarehouseURL.parse("chdb://")


def test_every_setting_is_a_field_and_in_the_readme_table() -> None:
    assert [s.name for s in SETTINGS] == [f.name for f in fields(Settings)]
    table = settings_markdown()
    assert len(table.splitlines()) == len(SETTINGS) + 2
    assert table in README.read_text(), "README's table is stale: touchpoint settings --markdown"
