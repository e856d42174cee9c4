"""One check: the publisher, the collector and ingest give every event the same verdict.

The same malformed set goes to ``touchpoint publish --dry-run``'s code path
(``publish_lines``), to the collector over HTTP (in memory) and to ingest's
:class:`Ingestor` as the Avro bytes a channel system could have written; the codes and
the reasons must be the same.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from starlette.testclient import TestClient

from touchpoint.collector.keys import KeyFile
from touchpoint.publish import publish_lines
from touchpoint.schemas.contract import CHANNELS
from touchpoint.streams.rules.normalize import Ingestor

from ..test_contract import LIMIT_BREAKS, limit_event
from ..test_publish import AGREEMENT_EXTRA, ingest_verdict

# What channel teams sent (issue 24): e-mail and phone values no normalizer can read.
PII_CASES: list[tuple[str, dict[str, Any]]] = [
    ("web", {"email": "not-an-email-address"}),
    ("web", {"phone": "call me maybe"}),
    ("web", {"email": "   ", "anonymous_id": "ck"}),
    ("web", {"email": "ann@localhost"}),
    ("web", {"email": "ann smith@example.com"}),
    ("web", {"email": "@example.com"}),
    ("callcenter", {"phone": "+1 650 253 0000"}),
    ("callcenter", {"phone": "0086-138-0013-8000"}),
    ("callcenter", {"phone": "1" * 300}),
    ("store", {"phone": "ext. 12"}),
    ("web", {"occurred_at": "2026-02-30T10:00:00+08:00"}),
]


@pytest.fixture
def every_channel_key(key_file: KeyFile) -> str:
    return key_file.create("all", list(CHANNELS))[1]


def published(channel: str, event: dict[str, Any]) -> tuple[str, str]:
    report = publish_lines(None, channel, [json.dumps(event)], region="CN")
    if report.accepted:
        return "accepted", ""
    return report.errors[0].code, report.errors[0].reason


def collected(client: TestClient, key: str, channel: str, event: dict[str, Any]
              ) -> tuple[str, str]:
    # json.dumps, as a sender might: it writes NaN, which the contract then refuses
    body = json.dumps({"events": [{"channel": channel, **event}]})
    response = client.post("/v1/events", content=body,
                           headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 200, response.text
    answer = response.json()["events"][0]
    return answer.get("code", "accepted"), answer.get("reason", "")


def test_publisher_collector_and_ingest_give_the_same_verdicts(
        every_channel_key: str, client: TestClient) -> None:
    ingestor = Ingestor(pii_salt="salt", phone_region="CN", worker="w1", clock=lambda: 1.0)
    cases = [(channel, fields) for _, channel, fields, _, _ in LIMIT_BREAKS]
    cases += AGREEMENT_EXTRA + PII_CASES
    events = [(channel, limit_event(channel, fields)) for channel, fields in cases]
    by_publisher = [published(channel, event) for channel, event in events]
    by_collector = [collected(client, every_channel_key, channel, event)
                    for channel, event in events]
    by_ingest = [ingest_verdict(ingestor, channel, event) for channel, event in events]
    assert by_collector == by_publisher
    assert [code for code, _ in by_ingest] == [code for code, _ in by_publisher]
    # the same sentence; a dead letter may add that it keeps only part of a huge payload
    assert [i == p or i.startswith(p + " (payload cut")
            for (_, p), (_, i) in zip(by_publisher, by_ingest, strict=True)] == [True] * len(cases)
    assert [code for code, _ in by_publisher[-len(PII_CASES):]] == [
        "bad_field", "bad_field", "bad_field", "bad_field", "bad_field", "bad_field",
        "accepted", "accepted", "too_long", "bad_field", "bad_timestamp"]
    assert [code for code, _ in by_publisher[:len(LIMIT_BREAKS)]] == [
        case[3] for case in LIMIT_BREAKS]
