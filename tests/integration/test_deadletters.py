"""Dead-letter recovery on the real broker and both warehouses: list, show, replay once.

A store event without its store_id is dead-lettered by a running worker; `touchpoint
deadletters` finds it by reason and channel, shows it, replays it with the missing field
set on the command line, and the warehouse stores it once. A second replay sends
nothing, and the inbound topic holds exactly one replayed record.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from typing import Any

import pytest

from touchpoint.replay import REPLAY_HEADER
from touchpoint.schemas.codec import codec_for
from touchpoint.schemas.contract import CHANNELS, COMMON_FIELDS

from .conftest import Worker, topic_records

pytestmark = pytest.mark.integration

T0 = 1_795_000_000_000


def cli(worker: Worker, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "touchpoint.cli", *args], env=worker.env,
                          capture_output=True, text=True, timeout=120, check=False)


def visit(event_id: str, **fields: Any) -> dict[str, Any]:
    return {"event_id": event_id, "type": "visit", "occurred_at": T0, "customer_id": "C-dl",
            "attributes": {}, **fields}


def record(event: dict[str, Any]) -> bytes:
    """A store record as a producer that skipped the checks would send it."""
    fields = dict.fromkeys((*COMMON_FIELDS, *CHANNELS["store"].fields))
    return codec_for("store").encode({**fields, **event}, check=False)


def test_a_dead_letter_is_fixed_replayed_and_stored_once(worker: Worker) -> None:
    run = f"dl-{uuid.uuid4().hex[:8]}"

    # two without a store_id (one to fix, one left broken), and one wrong in another way
    worker.publisher.send_raw("store", record(visit(f"{run}-fix")), b"customer_id:C-dl")
    worker.publisher.send_raw("store", record(visit(f"{run}-keep")), b"customer_id:C-dl")
    worker.publisher.send_raw("store", record(visit(f"{run}-type", type="nap",
                                                    store_id="SH-01")), b"customer_id:C-dl")
    worker.publisher.flush()
    worker.wait_for(f"SELECT count() FROM deadletter WHERE event_id LIKE '{run}-%'", 3,
                    timeout=90)
    topic = worker.topics.channel("store")

    listed = cli(worker, "deadletters", "list", "--reason", "missing_field", "--channel",
                 "store", "--format", "json")
    assert listed.returncode == 0, listed.stderr
    found = json.loads(listed.stdout)
    assert found["count"] == 2
    assert [d["reason_code"] for d in found["dead_letters"]] == ["missing_field"] * 2
    assert {d["replay"] for d in found["dead_letters"]} == {""}
    ids = [d["id"] for d in found["dead_letters"]]
    assert all(i.startswith(f"{topic}/") for i in ids)
    other = cli(worker, "deadletters", "list", "--reason", "missing_field", "--channel", "web",
                "--format", "json")
    assert json.loads(other.stdout)["count"] == 0

    shown = {i: cli(worker, "deadletters", "show", i).stdout for i in ids}
    fix_id = next(i for i, text in shown.items() if f'"event_id": "{run}-fix"' in text)
    keep_id = next(i for i in ids if i != fix_id)
    assert "reason:      [missing_field]" in shown[fix_id]
    assert "replay:      never" in shown[fix_id]

    replayed = cli(worker, "deadletters", "replay", fix_id, "--set", "store_id=SH-01")
    assert replayed.returncode == 0, replayed.stderr
    assert replayed.stdout.splitlines()[0] == (
        f"1 replayed ({topic}: 1), 0 refused, 0 skipped as already replayed")
    worker.wait_for(f"SELECT count() FROM touchpoint_events WHERE event_id = '{run}-fix' "
                    "AND store_id = 'SH-01'", 1, timeout=90)

    # the same again, and every missing_field one: the fixed one is skipped, the other
    # is refused again (still no store_id) with the reason, and nothing is sent
    again = cli(worker, "deadletters", "replay", "--reason", "missing_field", "--channel",
                "store")
    assert again.returncode == 1
    assert again.stdout.splitlines()[0] == "0 replayed, 1 refused, 1 skipped as already replayed"
    assert "refused missing_field: 1" in again.stdout
    assert f"{keep_id} [missing_field]: " in again.stderr

    replays = [r for r in topic_records(topic)
               if (REPLAY_HEADER, fix_id.encode()) in (r.headers or [])]
    assert len(replays) == 1
    # stored once, and the listing shows it replayed
    assert worker.scalar(f"SELECT count() FROM touchpoint_events WHERE event_id = '{run}-fix'"
                         ) == 1
    states = {d["id"]: d["replay"] for d in json.loads(cli(
        worker, "deadletters", "list", "--reason", "missing_field", "--format", "json"
    ).stdout)["dead_letters"]}
    assert states == {fix_id: "replayed", keep_id: ""}


def test_replay_needs_a_selection_and_well_formed_corrections(worker: Worker) -> None:
    nothing = cli(worker, "deadletters", "replay")
    assert nothing.returncode == 1
    assert nothing.stderr.startswith("Error: say which dead letters to replay")
    bad_set = cli(worker, "deadletters", "replay", "--all", "--set", "store_id")
    assert bad_set.returncode == 1 and "write FIELD=VALUE" in bad_set.stderr
    bad_id = cli(worker, "deadletters", "show", "touchpoints.store/x/1")
    assert bad_id.returncode == 1 and "is not a dead letter's id" in bad_id.stderr
    missing = cli(worker, "deadletters", "show", f"{worker.topics.channel('web')}/0/999999")
    assert missing.returncode == 1 and "Error: no dead letter" in missing.stderr
