"""Identity and profiles on real services: one customer, whichever door they come through."""

from __future__ import annotations

import hashlib
import hmac
import json
import signal
import subprocess
import sys
import time
import uuid
from typing import Any, cast
from urllib.parse import quote

import pytest

from touchpoint.schemas.codec import codec_for
from touchpoint.sim.simulate import Simulator
from touchpoint.streams.ops.lag import partition_lag
from touchpoint.streams.rules.identity import generated_id

from .conftest import Worker, WorkerFactory, offsets, topic_records

pytestmark = pytest.mark.integration

T0 = 1_795_000_000_000
DAY = 86_400_000
PROFILE_SQL = (
    "SELECT customer_id, toUnixTimestamp(first_seen) AS first_seen, "
    "toUnixTimestamp(last_seen) AS last_seen, lifecycle_stage, value_tier, total_spend, "
    "orders, returns, contacts_web, contacts_store, contacts_callcenter, contacts_campaign, "
    "contacts_feedback, avg_satisfaction, complaints FROM customer_profiles"
)


def _hash(value: str) -> str:
    return hmac.new(b"test-salt-of-16-chars", value.encode(), hashlib.sha256).hexdigest()


def _get(worker: Worker, path: str) -> tuple[int, dict[str, Any]]:
    status, body = worker.get(path)
    return status, json.loads(body or b"{}")


def _profile(worker: Worker, customer_id: str, **expected: Any) -> dict[str, Any]:
    """Wait until the stored profile of ``customer_id`` has the ``expected`` values."""
    deadline = time.monotonic() + 60
    row: dict[str, Any] = {}
    while time.monotonic() < deadline:
        rows = worker.query(f"{PROFILE_SQL} WHERE customer_id = '{customer_id}'").dicts()
        if rows:
            row = rows[0]
            if all(row[k] == v for k, v in expected.items()):
                return row
        time.sleep(0.3)
    pytest.fail(f"profile {customer_id}: {row or 'missing'}, expected {expected}\n"
                f"{worker.log_tail()}", pytrace=False)


def test_one_customer_across_web_store_and_call_center(worker: Worker) -> None:
    tag = uuid.uuid4().hex[:8]
    cookie, crm = f"ck-{tag}", f"C-{tag}"
    phone = "+86 139 0000 " + str(int(tag, 16) % 10000).zfill(4)
    send = worker.publisher.publish
    send("web", {"event_id": f"{tag}-1", "type": "page_view", "occurred_at": T0,
                 "anonymous_id": cookie, "url": "/"})
    send("web", {"event_id": f"{tag}-2", "type": "search", "occurred_at": T0 + 60_000,
                 "anonymous_id": cookie})
    send("web", {"event_id": f"{tag}-3", "type": "login", "occurred_at": T0 + 120_000,
                 "anonymous_id": cookie, "customer_id": crm})
    send("store", {"event_id": f"{tag}-4", "type": "purchase", "occurred_at": T0 + DAY,
                   "customer_id": crm, "phone": phone, "store_id": "SH-1", "amount": 268.0})
    send("callcenter", {"event_id": f"{tag}-5", "type": "call_ended",
                        "occurred_at": T0 + 2 * DAY, "phone": phone, "outcome": "resolved"})
    worker.publisher.flush()

    row = _profile(worker, crm, orders=1, contacts_callcenter=1)
    assert (row["contacts_web"], row["contacts_store"], row["contacts_callcenter"],
            row["total_spend"], row["first_seen"], row["last_seen"]) == \
        (3, 1, 1, 268.0, T0 // 1000, (T0 + 2 * DAY) // 1000)
    anonymous = generated_id(f"anonymous_id:{cookie}")
    assert worker.scalar(f"SELECT count() FROM customer_profiles "
                         f"WHERE customer_id = '{anonymous}'") == 0
    # every touchpoint, including those stored before the login, reads as the customer
    worker.wait_for(f"SELECT countIf(customer_id = '{crm}') FROM touchpoint_events "
                    f"WHERE event_id LIKE '{tag}-%'", 5)
    phone_id = f"phone:{_hash('86' + phone.replace(' ', '')[3:])}"
    # Partitions and topics have no order between them, so which ids existed on their own
    # for a moment depends on arrival: the cookie merges only if a cookie-only event was
    # read before the login, the phone only if the call was read before the purchase.
    merges = set(worker.query(f"SELECT merged_id, event_id FROM identity_merges "
                              f"WHERE into_id = '{crm}'").rows)
    assert merges <= {(anonymous, f"{tag}-3"), (generated_id(phone_id), f"{tag}-4")}

    status, found = _get(worker, "/customers/" + quote(phone))
    assert status == 200, found
    assert found["customer_id"] == crm
    assert sorted(found["identifiers"]) == sorted(
        [f"anonymous_id:{cookie}", f"customer_id:{crm}", phone_id])
    assert found["merged_ids"] == sorted(m for m, _ in merges)
    assert (found["profile"]["orders"], found["profile"]["contacts_by_channel"]) == \
        (1, {"web": 3, "store": 1, "callcenter": 1})
    assert [t["event_id"] for t in found["touchpoints"]] == [f"{tag}-{i}" for i in range(5, 0, -1)]
    assert _get(worker, f"/customers/{cookie}")[1]["customer_id"] == crm
    assert _get(worker, "/customers/nobody-at-all")[0] == 404

    env = {**worker.env, "TOUCHPOINT_WEB_PORT": str(worker.settings.web_port)}
    shown = subprocess.run([sys.executable, "-m", "touchpoint.cli", "customer", cookie],
                           env=env, capture_output=True, text=True, check=False)
    assert shown.returncode == 0, shown.stderr
    assert crm in shown.stdout and "268" in shown.stdout


def test_two_anonymous_visitors_linked_by_email_are_one_profile(worker: Worker) -> None:
    tag = uuid.uuid4().hex[:8]
    x, y, email = f"ckx-{tag}", f"cky-{tag}", f"{tag}@example.com"
    send = worker.publisher.publish
    for i in range(2):
        send("web", {"event_id": f"{tag}-x{i}", "type": "page_view",
                     "occurred_at": T0 + i, "anonymous_id": x})
    for i in range(3):
        send("web", {"event_id": f"{tag}-y{i}", "type": "page_view",
                     "occurred_at": T0 + 10 + i, "anonymous_id": y})
    send("web", {"event_id": f"{tag}-lx", "type": "add_to_cart", "occurred_at": T0 + 100,
                 "anonymous_id": x, "email": email})
    send("campaign", {"event_id": f"{tag}-ly", "type": "opened", "occurred_at": T0 + 200,
                      "anonymous_id": y, "email": email, "campaign_id": "CMP"})
    worker.publisher.flush()
    customer = min(generated_id(f"anonymous_id:{x}"), generated_id(f"anonymous_id:{y}"),
                   generated_id(f"email:{_hash(email)}"))
    row = _profile(worker, customer, contacts_web=6, contacts_campaign=1)
    assert row["first_seen"] == T0 // 1000
    ids = ", ".join(f"'{generated_id(i)}'" for i in
                    (f"anonymous_id:{x}", f"anonymous_id:{y}", f"email:{_hash(email)}"))
    assert worker.scalar(f"SELECT count() FROM customer_profiles WHERE customer_id IN ({ids})") == 1
    worker.wait_for(f"SELECT uniqExact(customer_id) FROM touchpoint_events "
                    f"WHERE event_id LIKE '{tag}-%'", 1)


def _profile_records(worker: Worker, keys: set[str]) -> dict[str, list[dict[str, Any] | None]]:
    """Records of ``keys`` on the worker's profiles.updates topic, in order (None: tombstone)."""
    codec = codec_for("profile")
    found: dict[str, list[dict[str, Any] | None]] = {key: [] for key in keys}
    for record in topic_records(worker.topics.profiles):
        key = record.key.decode()
        if key in found:
            found[key].append(None if record.value is None else codec.decode(record.value))
    return found


def test_the_profiles_topic_carries_the_latest_profile_and_a_tombstone_per_merge(
        worker: Worker) -> None:
    tag = uuid.uuid4().hex[:8]
    cookie, crm = f"ckt-{tag}", f"C-t-{tag}"
    anonymous = generated_id(f"anonymous_id:{cookie}")
    send = worker.publisher.publish
    send("web", {"event_id": f"{tag}-1", "type": "page_view", "occurred_at": T0,
                 "anonymous_id": cookie})
    worker.publisher.flush()
    _profile(worker, anonymous, contacts_web=1)  # the cookie is a customer of its own first
    send("web", {"event_id": f"{tag}-2", "type": "login", "occurred_at": T0 + 60_000,
                 "anonymous_id": cookie, "customer_id": crm})
    send("store", {"event_id": f"{tag}-3", "type": "purchase", "occurred_at": T0 + DAY,
                   "customer_id": crm, "store_id": "S", "amount": 99.5})
    worker.publisher.flush()
    _profile(worker, crm, contacts_web=2, orders=1)
    deadline = time.monotonic() + 30
    while True:
        records = _profile_records(worker, {crm, anonymous})
        latest = records[crm][-1] if records[crm] else None
        if latest and latest["orders"] == 1 and records[anonymous][-1:] == [None]:
            break
        assert time.monotonic() < deadline, records
        time.sleep(0.5)
    assert (latest["contacts_by_channel"], latest["total_spend"], latest["first_seen"]) == \
        ({"web": 2, "store": 1}, 99.5, T0)
    assert records[anonymous][0] is not None  # published while it stood alone, then removed


def test_late_events_land_as_if_in_order(worker: Worker) -> None:
    crm = f"C-late-{uuid.uuid4().hex[:8]}"
    send = worker.publisher.publish
    send("store", {"event_id": f"{crm}-b", "type": "purchase", "occurred_at": T0 + 10 * DAY,
                   "customer_id": crm, "store_id": "S", "amount": 10.0})
    worker.publisher.flush()
    _profile(worker, crm, orders=1)
    send("store", {"event_id": f"{crm}-a", "type": "visit", "occurred_at": T0,
                   "customer_id": crm, "store_id": "S"})
    send("feedback", {"event_id": f"{crm}-c", "type": "csat", "occurred_at": T0 + DAY,
                      "customer_id": crm, "score": 4})
    worker.publisher.flush()
    row = _profile(worker, crm, contacts_store=2, contacts_feedback=1)
    assert (row["first_seen"], row["last_seen"], row["avg_satisfaction"]) == \
        (T0 // 1000, (T0 + 10 * DAY) // 1000, 4.0)
    found = _get(worker, f"/customers/{crm}")[1]["profile"]
    assert found["last_contact"] == {"store": T0 + 10 * DAY, "feedback": T0 + DAY}


# --- the same profiles whatever happens to the workers ------------------------------------

def _publish_simulated(worker: Worker, events: int, seed: int) -> None:
    simulator = Simulator(seed=seed, customers=300, start_ms=T0)
    for sim_event, _ in zip(simulator.events(), range(events), strict=False):
        worker.publisher.publish(sim_event.channel, sim_event.event)
    worker.publisher.flush()


def _profiles(worker: Worker) -> list[tuple[Any, ...]]:
    return worker.query(f"{PROFILE_SQL} ORDER BY customer_id").rows


def _lag(worker: Worker) -> int:
    """Records of the group's stage topics not yet processed and committed."""
    topics = [worker.topics.unresolved, worker.topics.resolved]
    sample = offsets(worker.settings.app_id, topics)
    if len({topic for topic, _ in sample.end}) < len(topics):
        return -1  # not every topic listed yet: unknown
    return sum(row["lag"] for row in partition_lag(sample))


def _settled(worker: Worker, events: int, timeout: float = 180) -> list[tuple[Any, ...]]:
    """Profiles once every event is stored, the group has committed every record of its
    stage topics, and two emission rounds after that changed nothing.

    (Two equal snapshots alone are not enough: a rebalance can pause the profiles stage for
    longer than two emission rounds.)
    """
    worker.wait_for("SELECT count() FROM touchpoint_events", events, timeout=timeout)
    previous, deadline = None, time.monotonic() + timeout
    while time.monotonic() < deadline:
        current = _profiles(worker)
        if current == previous and current and _lag(worker) == 0:
            return current
        previous = current
        time.sleep(2 * worker.settings.profile_emit_seconds + 1)
    pytest.fail(f"profiles did not settle within {timeout}s (lag {_lag(worker)})\n"
                f"{worker.log_tail()}")


EVENTS = 4000


@pytest.fixture(scope="module")
def reference(worker_factory: WorkerFactory) -> tuple[Worker, list[tuple[Any, ...]]]:
    """One worker that read the simulated traffic start to end, undisturbed."""
    first = worker_factory("clickhouse", TOUCHPOINT_PROFILE_EMIT_SECONDS="1")
    _publish_simulated(first, EVENTS, seed=11)
    return first, _settled(first, EVENTS)


def _sibling(worker_factory: WorkerFactory, reference: Worker, backend: str = "clickhouse",
             **overrides: str) -> Worker:
    """A worker on the reference's topics, in a group and database of its own."""
    return worker_factory(backend, TOUCHPOINT_TOPIC_PREFIX=reference.settings.topic_prefix,
                          TOUCHPOINT_PROFILE_EMIT_SECONDS="1", **overrides)


@pytest.mark.slow
def test_a_replay_from_offset_zero_gives_identical_profiles(
        worker_factory: WorkerFactory, reference: tuple[Worker, list[tuple[Any, ...]]]) -> None:
    first, expected = reference
    assert len(expected) > 100
    replay = _sibling(worker_factory, first, "chdb")
    assert _settled(replay, EVENTS) == expected


@pytest.mark.slow
def test_a_worker_killed_mid_stream_recovers_and_ends_with_the_same_profiles(
        worker_factory: WorkerFactory, reference: tuple[Worker, list[tuple[Any, ...]]]) -> None:
    first, expected = reference
    victim = _sibling(worker_factory, first, TOUCHPOINT_SINK_BATCH_SIZE="100")
    deadline = time.monotonic() + 60
    while (victim.status() or {}).get("identity", {}).get("resolved", 0) < EVENTS // 3:
        assert time.monotonic() < deadline, victim.status()
        time.sleep(0.05)
    victim.stop(signal.SIGKILL)
    victim.start()
    assert _settled(victim, EVENTS) == expected


def _same_group(member: Worker) -> dict[str, str]:
    """Settings for another worker in ``member``'s group (its own web port and home)."""
    return {k: v for k, v in member.env.items() if k.startswith("TOUCHPOINT_")
            and k not in ("TOUCHPOINT_WEB_PORT", "TOUCHPOINT_HOME")}


def _skipped_offsets(member: Worker) -> int | None:
    """Offsets ``member``'s consumer took as gaps (``/status``).

    Our topics have no transaction markers and no compaction: an offset the client skipped
    is a record nobody processed. (The rebalance bug ``Consumer._drain_messages`` mends, a
    fetched batch still in delivery across a seek, skipped 1,000-2,000 offsets in 7 of 14
    traced two-worker runs, most of which still ended with the right profiles; it depends
    on timing, so this is a check, not the bug's test: that is in
    tests/unit/streams/runtime/test_consumer.py.)
    """
    return cast(int | None, (member.status() or {}).get("offsets_taken_as_gaps"))


def _records_in_recovery(member: Worker) -> int | None:
    """Records ``member``'s consumer handed to a stage while tables were recovered (``/status``).

    Any would have read and written tables not yet read back from their changelogs.
    """
    return cast(int | None, (member.status() or {}).get("records_in_recovery"))


@pytest.mark.slow
def test_two_workers_in_one_group_give_the_same_profiles_as_one(
        worker_factory: WorkerFactory, reference: tuple[Worker, list[tuple[Any, ...]]]) -> None:
    first, expected = reference
    one = _sibling(worker_factory, first, start=False)
    two = worker_factory("clickhouse", start=False, **_same_group(one))
    # Launched together, so that they join the group at about the same time: started one
    # after the other, the first could drain the whole backlog while the second starts.
    one.launch()
    two.launch()
    one.wait_answering()
    two.wait_answering()
    settled = _settled(one, EVENTS)
    # value tiers use spend cut-offs each worker estimates from the customers it holds;
    # with under 200 spending customers both use the fixed cut-offs, so they match too
    assert settled == expected
    # both took part: each stored rows of the resolved partitions it was assigned
    for member in (one, two):
        status = member.status() or {}
        rows = status.get("sink", {}).get("rows", {})
        assert rows.get("touchpoint_events_raw", 0) > 0, status
        assert _skipped_offsets(member) == 0, status
        assert _records_in_recovery(member) == 0, status
