"""What the collector's unit tests share: a key file, a sender that keeps what it is given."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from touchpoint.collector.app import create_app
from touchpoint.collector.batch import Record
from touchpoint.collector.keys import KeyFile
from touchpoint.exceptions import KafkaUnavailable
from touchpoint.settings import Settings, load_settings

SHOP = "https://shop.example.com"


class KeptSender:
    """Stands in for the Kafka sender: keeps each request's records, or fails like Kafka."""

    def __init__(self) -> None:
        self.sent: list[list[Record]] = []
        self.down = False
        self.is_ready = True

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def send(self, records: Sequence[Record]) -> None:
        if self.down and records:
            raise KafkaUnavailable("Kafka did not acknowledge the events: timed out")
        self.sent.append(list(records))

    async def ready(self) -> bool:
        return self.is_ready

    @property
    def records(self) -> list[Record]:
        return [record for batch in self.sent for record in batch]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings({"TOUCHPOINT_HOME": str(tmp_path), "TOUCHPOINT_PII_SALT": "s" * 16,
                          "TOUCHPOINT_API_TOKENS": "t=" + "t" * 16,
                          "TOUCHPOINT_COLLECT_RATE_PER_KEY": "600"})


@pytest.fixture
def key_file(settings: Settings) -> KeyFile:
    return KeyFile(settings.collect_keys_path)


@pytest.fixture
def web_key(key_file: KeyFile) -> str:
    """A browser key for the web shop's pages."""
    return key_file.create("shop", ["web"], [SHOP])[1]


@pytest.fixture
def server_key(key_file: KeyFile) -> str:
    """A server-side key for the call-center vendor's webhooks, and for feedback."""
    return key_file.create("callvendor", ["callcenter", "feedback"])[1]


@pytest.fixture
def sender() -> KeptSender:
    return KeptSender()


@pytest.fixture
def client(settings: Settings, sender: KeptSender, key_file: KeyFile, web_key: str,
           server_key: str) -> Iterator[TestClient]:
    app = create_app(settings, sender=sender, keys=KeyFile(settings.collect_keys_path))
    with TestClient(app, base_url="http://collector.test") as test_client:
        yield test_client
