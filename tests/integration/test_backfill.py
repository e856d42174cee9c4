"""Backfill on the real broker and both warehouses: stopped with Ctrl-C, resumed, stored once.

`touchpoint backfill` runs as a user runs it, paced so that it is still publishing
when it gets SIGINT (what Ctrl-C sends). It stops with its checkpoint saved; the same
command resumes. The inbound topics then hold every event exactly once, and so does
the warehouse.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from touchpoint.schemas.codec import codec_for

from .conftest import Worker, topic_records

pytestmark = pytest.mark.integration

T0 = 1_795_000_000_000
EACH = 300


def backfill(worker: Worker, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "touchpoint.cli", "backfill", *args],
                            env=worker.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def under_way(process: subprocess.Popen[str], checkpoint: Path) -> None:
    """Wait until the backfill saved a checkpoint with events published (every 5 s)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        saved = json.loads(checkpoint.read_text()) if checkpoint.exists() else {}
        if saved.get("published", 0) >= 50:
            break
        time.sleep(0.2)
    assert process.poll() is None, process.communicate()


def event_ids(worker: Worker, run: str) -> list[str]:
    """The ids of the run's events on the inbound topics, each time it is there."""
    ids = [codec_for(channel).decode(r.value, packed=False)["event_id"]
           for channel in ("web", "store")
           for r in topic_records(worker.topics.channel(channel))]
    return [i for i in ids if i.startswith(run)]


def write_inputs(folder: Path, run: str) -> list[str]:
    """A web file in order and a mixed file (each event names its channel) out of order."""
    web = folder / "web.jsonl"
    web.write_text("".join(json.dumps({
        "event_id": f"{run}-w{i}", "type": "page_view", "occurred_at": T0 + 1000 * i,
        "anonymous_id": f"ck-{i % 7}"}) + "\n" for i in range(EACH)))
    mixed = folder / "mixed.jsonl"
    mixed.write_text("".join(json.dumps({
        "channel": "store", "event_id": f"{run}-s{i}", "type": "visit",
        "occurred_at": T0 + 1000 * ((i * 7) % EACH) + 500, "customer_id": f"C{i % 5}",
        "store_id": "SH-01"}) + "\n" for i in range(EACH)))
    return ["--sort", f"web={web}", str(mixed)]


def test_a_backfill_stopped_and_resumed_stores_every_event_once(worker: Worker,
                                                                 tmp_path: Path) -> None:
    run = f"bf-{uuid.uuid4().hex[:8]}"
    checkpoint = tmp_path / "backfill.json"
    args = ["--checkpoint", str(checkpoint), *write_inputs(tmp_path, run)]
    first = backfill(worker, "--rate", "40", *args)  # 15 s for all
    under_way(first, checkpoint)
    first.send_signal(signal.SIGINT)
    out, err = first.communicate(timeout=60)
    assert first.returncode == 130, err
    assert "Stopped; the same command resumes from checkpoint" in err
    stopped = json.loads(checkpoint.read_text())
    assert 50 <= stopped["published"] < 2 * EACH and not stopped["done"]
    assert out.startswith(f"{stopped['published']:,} published, 0 rejected of 600 lines")
    # what the checkpoint counts is what Kafka has: nothing after it was sent
    assert len(event_ids(worker, run)) == stopped["published"]

    second = backfill(worker, *args)
    out, err = second.communicate(timeout=120)
    assert second.returncode == 0, err
    assert f"resuming from checkpoint {checkpoint}: {stopped['published']:,} published" in err
    assert out.startswith("600 published, 0 rejected of 600 lines")
    # in Kafka once each: the resumed run sent nothing the first had sent
    mine = event_ids(worker, run)
    assert len(mine) == 2 * EACH and len(set(mine)) == 2 * EACH
    worker.wait_for(f"SELECT count() FROM touchpoint_events WHERE event_id LIKE '{run}-%'",
                    2 * EACH, timeout=120)

    done = backfill(worker, *args)
    _, err = done.communicate(timeout=60)
    assert done.returncode == 1 and "this backfill is complete (600 published" in err


def test_a_backfill_killed_between_send_and_checkpoint_is_still_stored_once(
        worker: Worker, tmp_path: Path) -> None:
    run = f"bk-{uuid.uuid4().hex[:8]}"
    checkpoint = tmp_path / "backfill.json"
    args = ["--checkpoint", str(checkpoint), *write_inputs(tmp_path, run)]
    first = backfill(worker, "--rate", "40", *args)
    under_way(first, checkpoint)
    # Kill it once Kafka has events the checkpoint does not count yet. It is stopped
    # (SIGSTOP) while Kafka and the checkpoint are compared, so no checkpoint can be
    # saved between the comparison and the kill.
    deadline = time.monotonic() + 30
    while True:
        first.send_signal(signal.SIGSTOP)
        if len(event_ids(worker, run)) > json.loads(checkpoint.read_text())["published"] \
                or time.monotonic() > deadline:
            break
        first.send_signal(signal.SIGCONT)
        time.sleep(0.1)
    first.kill()  # no flush, no checkpoint: what it sent since the last one goes again
    first.communicate(timeout=60)
    killed_at = json.loads(checkpoint.read_text())["published"]
    before = len(event_ids(worker, run))
    assert before > killed_at, (before, killed_at)
    second = backfill(worker, *args)
    out, err = second.communicate(timeout=120)
    assert second.returncode == 0, err
    assert f"resuming from checkpoint {checkpoint}: {killed_at:,} published" in err
    assert out.startswith("600 published, 0 rejected of 600 lines")
    mine = event_ids(worker, run)
    assert set(mine) == {f"{run}-{c}{i}" for c in "ws" for i in range(EACH)}
    # the resumed run sent exactly what the checkpoint did not count: some twice
    assert len(mine) == before + 2 * EACH - killed_at
    # sent more than once, stored once (touchpoint_events is one row per event_id)
    worker.wait_for(f"SELECT count() FROM touchpoint_events WHERE event_id LIKE '{run}-%'",
                    2 * EACH, timeout=120)
