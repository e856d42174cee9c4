"""Realistic records for every schema subject, and scratch schema folders for evolution tests."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from touchpoint.schemas.registry import Registry

PACKAGE_AVRO = Path(__file__).resolve().parents[3] / "schemas" / "avro"

T0 = 1_795_313_700_000  # 2026-11-22T10:15:00+08:00 in epoch ms

SAMPLES: dict[str, dict[str, Any]] = {
    "web": {
        "event_id": "web-7f3c2a91",
        "type": "purchase",
        "occurred_at": T0,
        "customer_id": "CRM-100482",
        "anonymous_id": "ck-5d1e0b7a",
        "session_id": "sess-88f1",
        "url": "https://shop.example.com/checkout/done?order=SO-55120",
        "referrer": "https://shop.example.com/cart",
        "dwell_ms": 18_250,
        "amount": 129.9,
        "currency": "EUR",
        "attributes": {"device": "ios", "app_version": "5.12.0"},
    },
    "store": {
        "event_id": "pos-20261122-0031-118",
        "type": "served",
        "occurred_at": "2026-11-22T10:15:00+08:00",
        "phone": "+86 138 0013 8000",
        "store_id": "SH-PUDONG-03",
        "staff_id": "E-2231",
        "queue_wait_s": 1_260,
    },
    "callcenter": {
        "event_id": "call-5521-end",
        "type": "call_ended",
        "occurred_at": T0 + 600_000,
        "customer_id": "CRM-100482",
        "call_id": "CALL-5521",
        "agent_id": "AG-17",
        "queue_wait_s": 540,
        "talk_s": 430,
        "transfers": 2,
        "reason": "delivery",
        "outcome": "unresolved",
        # Chinese punctuation on purpose: notes are free text in English or Chinese.
        "notes": "客户第三次来电询问包裹延误，要求退款。Customer asked for a refund.",  # noqa: RUF001
    },
    "campaign": {
        "event_id": "cmp-bf26-opened-100482",
        "type": "opened",
        "occurred_at": T0 - 86_400_000,
        "email": " Li.Wei@Example.COM ",
        "campaign_id": "BF-2026",
        "medium": "email",
        "variant": "B",
    },
    "feedback": {
        "event_id": "svy-88120",
        "type": "csat",
        "occurred_at": "2026-11-22T02:40:00Z",
        "customer_id": "CRM-100482",
        "score": 2,
        "comment": "等了二十分钟才有人接电话 - waited 20 minutes",
        "about_channel": "callcenter",
    },
    "event": {
        "event_id": "call-5521-end",
        "channel": "callcenter",
        "type": "call_ended",
        "occurred_at": T0 + 600_000,
        "ingested_at": T0 + 600_950,
        "customer_id": "CRM-100482",
        "email_hash": "9c1185a5c5e9fc54612808977ee8f548b2258d31",
        "category": "personnel",
        "stage": "satisfaction",
        "call_id": "CALL-5521",
        "agent_id": "AG-17",
        "queue_wait_s": 540,
        "talk_s": 430,
        "transfers": 2,
        "reason": "delivery",
        "outcome": "unresolved",
        "notes": "客户第三次来电询问包裹延误",
        "source_topic": "touchpoints.callcenter",
        "source_partition": 3,
        "source_offset": 1_048_576_001,
    },
    "deadletter": {
        "payload": b'{"event_id": "x-1", "type": "page_view"}',
        "key": b"ck-5d1e0b7a",
        "source_topic": "touchpoints.web",
        "source_partition": 0,
        "source_offset": 42,
        "source_timestamp": T0,
        "reason_code": "undecodable",
        "reason": "value starts with 0x7b ('{'), not the Avro single-object marker C3 01",
        "rejected_at": T0 + 1_000,
        "worker": "ingest@host-a:1",
    },
    "complaint_signal": {
        "signal_id": "sig-CRM-100482-1",
        "customer_id": "CRM-100482",
        "detected_at": T0 + 600_000,
        "first_evidence_at": T0,
        "severity": "high",
        "score": 0.82,
        "reasons": ["repeat_contact", "transfers", "unresolved"],
        "evidence_event_ids": ["pos-20261122-0031-118", "call-5521-end"],
        "channels": ["store", "callcenter"],
        "status": "open",
        "escalated_at": T0 + 600_000,
        "emitted_at": T0 + 601_234,
    },
    "profile": {
        "customer_id": "CRM-100482",
        "first_seen": T0 - 86_400_000 * 400,
        "last_seen": T0 + 600_000,
        "lifecycle_stage": "active",
        "value_tier": "gold",
        "total_spend": 4_310.5,
        "orders": 17,
        "contacts_by_channel": {"web": 120, "store": 9, "callcenter": 3, "feedback": 1},
        "avg_satisfaction": 3.5,
        "open_signals": 1,
        "updated_at": T0 + 601_300,
    },
    "merge": {
        "merged_id": "u-3f2a9c0d1e2b4a5c6d7e",
        "into_id": "CRM-100482",
        "merged_at": T0 + 5_000,
        "event_id": "2f0c1e7a-login",
        "identifiers": ["anonymous_id:ck-77aa", "email:9b1c"],
        "aliases": ["u-0000aaaabbbbccccdddd"],
        "recorded_at": T0 + 5_321,
    },
    "absorb": {
        "from_id": "u-3f2a9c0d1e2b4a5c6d7e",
        "into_id": "CRM-100482",
        "state": '{"customer_id": "u-3f2a9c0d1e2b4a5c6d7e", "orders": 1}',
        "applied": bytes.fromhex("9f86d081884c7d65") + bytes.fromhex("2c26b46b68ffc68f"),
    },
}


@pytest.fixture
def samples() -> dict[str, dict[str, Any]]:
    """A fresh copy of one realistic record per subject."""
    return copy.deepcopy(SAMPLES)


class SchemaDir:
    """A scratch folder laid out like the package's ``avro/`` folder."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def write(self, subject: str, version: int, schema: dict[str, Any] | str) -> Path:
        """Write ``<subject>/v<version>.avsc`` (a dict is dumped as JSON)."""
        folder = self.root / subject
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"v{version}.avsc"
        text = schema if isinstance(schema, str) else json.dumps(schema, ensure_ascii=False)
        path.write_text(text, encoding="utf-8")
        return path

    def copy(self, subject: str) -> None:
        """Copy every shipped version of ``subject``."""
        shutil.copytree(PACKAGE_AVRO / subject, self.root / subject)

    def load(self) -> Registry:
        """Load the folder as a registry."""
        return Registry.load(self.root)


@pytest.fixture
def schema_dir(tmp_path: Path) -> SchemaDir:
    """An empty scratch schema folder."""
    root = tmp_path / "avro"
    root.mkdir()
    return SchemaDir(root)


@pytest.fixture
def shipped() -> Any:
    """Read a shipped schema file as JSON: ``shipped("web")`` or ``shipped("web", 1)``."""

    def read(subject: str, version: int = 1) -> dict[str, Any]:
        text = (PACKAGE_AVRO / subject / f"v{version}.avsc").read_text(encoding="utf-8")
        result: dict[str, Any] = json.loads(text)
        return result

    return read
