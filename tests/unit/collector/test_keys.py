"""Write keys: stored hashed, bound to channels and origins, revoked without a restart."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from touchpoint.collector.keys import KeyFile, normalize_origin
from touchpoint.exceptions import ConfigError

from .conftest import SHOP


def test_a_key_is_kept_as_a_digest_and_its_secret_authenticates(tmp_path: Path) -> None:
    keys = KeyFile(tmp_path / "keys.json", clock=lambda: 1_800_000_000)
    key, secret = keys.create("shop", ["web", "web"], ["HTTPS://Shop.Example.com/"])
    assert secret.startswith(f"tpk_{key.key_id}_") and len(secret) > 48
    text = (tmp_path / "keys.json").read_text()
    assert secret not in text and secret.partition(f"{key.key_id}_")[2] not in text
    assert stat.S_IMODE((tmp_path / "keys.json").stat().st_mode) == 0o600
    stored = json.loads(text)["keys"]
    assert [(k["name"], k["channels"], k["origins"], k["created_at"]) for k in stored] == [
        ("shop", ["web"], [SHOP], 1_800_000_000)]
    reader = KeyFile(tmp_path / "keys.json")
    assert reader.authenticate(secret) == key
    assert reader.authenticate(f" {secret} ") == key


def test_wrong_secrets_are_refused(tmp_path: Path) -> None:
    keys = KeyFile(tmp_path / "keys.json")
    key, secret = keys.create("shop", ["web"])
    forged = secret[:-1] + ("A" if secret[-1] != "A" else "B")
    other_id = secret.replace(key.key_id, "0" * 12)
    for wrong in (forged, other_id, "", None, "tpk_", secret + "x" * 40, "Bearer " + secret):
        assert keys.authenticate(wrong) is None, wrong


def test_a_revoked_key_is_refused_by_a_running_reader(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    key, secret = KeyFile(path).create("shop", ["web"])
    reader = KeyFile(path)
    assert reader.authenticate(secret) == key
    revoked = KeyFile(path, clock=lambda: 1_800_000_500).revoke(key.key_id)
    assert (revoked.active, revoked.revoked_at) == (False, 1_800_000_500)
    reader.refresh(force=True)  # what RELOAD_SECONDS later does on its own
    assert reader.authenticate(secret) is None
    assert [(k.key_id, k.active) for k in KeyFile(path).all()] == [(key.key_id, False)]
    with pytest.raises(ConfigError, match="no write key 'nope'"):
        KeyFile(path).revoke("nope")


def test_a_damaged_file_keeps_the_keys_a_reader_had(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    key, secret = KeyFile(path).create("shop", ["web"])
    reader = KeyFile(path)
    assert reader.authenticate(secret) == key
    path.write_text('{"keys": [{"oops"')
    reader.refresh(force=True)
    assert reader.authenticate(secret) == key
    with pytest.raises(ConfigError, match="is not a write-key file"):
        KeyFile(path).all()


@pytest.mark.parametrize(("name", "channels", "origins", "says"), [
    ("shop", [], [], "bind the key to one or more of web"),
    ("shop", ["web", "fax"], [], "channels ['fax']"),
    ("a shop", ["web"], [], "use 1-64 letters"),
    ("shop", ["web"], ["shop.example.com"], "is not a browser origin"),
    ("shop", ["web"], ["https://shop.example.com/path"], "is not a browser origin"),
    ("shop", ["web"], ["javascript:alert(1)"], "is not a browser origin"),
])
def test_create_refuses_what_cannot_be_a_key(tmp_path: Path, name: str, channels: list[str],
                                             origins: list[str], says: str) -> None:
    with pytest.raises(ConfigError, match=says.replace("[", r"\[").replace("]", r"\]")):
        KeyFile(tmp_path / "keys.json").create(name, channels, origins)
    assert not (tmp_path / "keys.json").exists()


def test_origins_are_compared_as_browsers_send_them() -> None:
    assert normalize_origin("https://Shop.Example.com:8443") == "https://shop.example.com:8443"
    assert normalize_origin("http://127.0.0.1:41150/") == "http://127.0.0.1:41150"
