"""Campaign response and per-minute aggregates on real services: exact, whatever happens.

The campaign scenario (touchpoint.campaign_scenario) knows its true campaign report and
events per minute; the warehouse must give exactly those, after an undisturbed run, after
a worker is killed mid-stream and restarted, and after a full replay of the input topics
by a second worker (fresh consumer group) writing into the same database.
"""

from __future__ import annotations

import signal
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from touchpoint.sim.campaign_scenario import CampaignScenario, generate

from .conftest import Worker, WorkerFactory, offsets

pytestmark = pytest.mark.integration

CAMPAIGN_SQL = (
    "SELECT campaign_id, medium, variant, sum(exposed) AS e, sum(delivered) AS d, "
    "sum(opened) AS o, sum(clicked) AS c, sum(responded) AS r, sum(converted) AS v, "
    "round(sum(revenue), 2) AS rev FROM campaign_response "
    "GROUP BY campaign_id, medium, variant ORDER BY campaign_id, medium, variant"
)
# on-time and late rows together: a minute's full count (late ones are asserted apart)
MINUTE_SQL = (
    "SELECT toUnixTimestamp(minute) AS m, channel, sum(events) AS n, "
    "round(sum(revenue), 2) AS rev FROM ("
    " SELECT minute, channel, events, revenue FROM touchpoint_minute"
    " UNION ALL SELECT minute, channel, events, revenue FROM touchpoint_minute_late"
    ") GROUP BY m, channel ORDER BY m, channel"
)
LATE_SQL = "SELECT count() FROM touchpoint_minute_late"
RAW_SQL = {
    "minutes": "SELECT * FROM touchpoint_minute_raw FINAL ORDER BY minute, channel, type, "
               "store_id, campaign_id, part",
    "late": "SELECT * FROM touchpoint_minute_late_raw FINAL ORDER BY minute, channel, type, "
            "store_id, campaign_id, part, batch",
    # every column but version: a replay may write an exposure again at another version
    "exposures": "SELECT exposure_id, campaign_id, medium, variant, customer_id, value_tier, "
                 "exposed_at, last_exposed_at, delivered, opened, clicked, responded_at, "
                 "response_channel, response_type, response_event_id, converted_at, "
                 "conversion_channel, conversions, revenue, model, retracted "
                 "FROM campaign_attribution_raw FINAL ORDER BY exposure_id",
}


def _scenario(seed: int, customers: int = 60) -> CampaignScenario:
    # a start of its own per test: the worker's topics are its own, the times need not be
    return generate(seed=seed, customers=customers, start=datetime(2026, 11, 2, tzinfo=UTC))


def _expected(scenario: CampaignScenario) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    campaigns = [(c["campaign_id"], c["medium"], c["variant"], c["exposed"], c["delivered"],
                  c["opened"], c["clicked"], c["responded"], c["converted"], c["revenue"])
                 for c in scenario.expected["campaigns"]]
    minutes = [(int(datetime.fromisoformat(m["minute"]).timestamp()), m["channel"],
                m["events"], m["revenue"]) for m in scenario.expected["minutes"]]
    return campaigns, minutes


def _slices(scenario: CampaignScenario, span_ms: int = 60_000) -> list[int]:
    """Where to cut the publish order so that each slice spans at most ``span_ms``.

    The worker reads the five channel topics side by side, so within what it has not read
    yet one channel can overtake another by any amount of event time. Published a slice
    at a time, as live traffic arrives (and as the README asks of history), what it reads
    is in event-time order up to a slice's span plus the scenario's own late events.
    """
    cuts, first = [], None
    for index, (_, event) in enumerate(scenario.events):
        at = _millis(event["occurred_at"])
        if first is None or at > first + span_ms:
            if first is not None:
                cuts.append(index)
            first = at
    return [*cuts, len(scenario.events)]


def _millis(value: Any) -> int:
    if isinstance(value, int):
        return value
    return int(datetime.fromisoformat(value).timestamp() * 1000)


def _ingested(worker: Worker) -> int:
    return sum(((worker.status() or {}).get("ingested") or {}).values())


def _publish(worker: Worker, scenario: CampaignScenario, start: int = 0,
             until: int | None = None) -> int:
    """Publish events ``start:until`` in slices, each once the one before is ingested.

    Returns where it stopped (the end of the slice that reached ``until``).
    """
    baseline, done = _ingested(worker), start
    for cut in _slices(scenario):
        if cut <= done:
            continue
        for channel, event in scenario.events[done:cut]:
            worker.publisher.publish(channel, event)
        worker.publisher.flush()
        done = cut
        deadline = time.monotonic() + 60
        while _ingested(worker) < baseline + done - start:
            assert time.monotonic() < deadline, worker.status()
            time.sleep(0.02)
        if until is not None and done >= until:
            break
    return done


def _rows(worker: Worker, sql: str) -> list[tuple[Any, ...]]:
    return [tuple(float(v) if isinstance(v, float) else v for v in row)
            for row in worker.query(sql).rows]


def _wait_rows(worker: Worker, sql: str, expected: list[tuple[Any, ...]],
               timeout: float = 120) -> None:
    """Poll ``sql`` until its rows equal ``expected``; fail with the difference."""
    deadline = time.monotonic() + timeout
    rows: list[tuple[Any, ...]] = []
    while time.monotonic() < deadline:
        rows = _rows(worker, sql)
        if rows == expected:
            return
        time.sleep(0.5)
    missing = [r for r in expected if r not in rows]
    extra = [r for r in rows if r not in expected]
    pytest.fail(f"{sql[:60]}...: {len(missing)} expected rows missing {missing[:5]}, "
                f"{len(extra)} unexpected {extra[:5]}\nstatus: {worker.status()}\n"
                f"{worker.log_tail()}", pytrace=False)


def _settled(worker: Worker, scenario: CampaignScenario) -> None:
    campaigns, minutes = _expected(scenario)
    worker.wait_for("SELECT count() FROM touchpoint_events", scenario.expected["events"],
                    timeout=120)
    _wait_rows(worker, CAMPAIGN_SQL, campaigns)
    _wait_rows(worker, MINUTE_SQL, minutes)
    # published in order, a few events up to 90 s late: all within the 2-minute grace
    assert worker.scalar(LATE_SQL) == 0


@pytest.mark.parametrize("backend", ["chdb", "clickhouse"])
def test_campaign_report_and_minutes_equal_the_scenario_s_truth(
        worker_factory: WorkerFactory, backend: str) -> None:
    scenario = _scenario(seed=21)
    worker = worker_factory(backend, TOUCHPOINT_PROFILE_EMIT_SECONDS="1")
    _publish(worker, scenario)
    _settled(worker, scenario)
    # the same figures through the CONTRACT views, as a marketing user would read them
    total = worker.query("SELECT sum(exposed), sum(responded) FROM campaign_response").rows
    assert total == [(sum(c["exposed"] for c in scenario.expected["campaigns"]),
                      sum(c["responded"] for c in scenario.expected["campaigns"]))]
    assert worker.scalar("SELECT sum(events) FROM touchpoint_minute") == \
        scenario.expected["events"]


@pytest.mark.slow
def test_a_kill_mid_stream_and_a_full_replay_change_no_figure(
        worker_factory: WorkerFactory) -> None:
    scenario = _scenario(seed=22)
    first = worker_factory("clickhouse", TOUCHPOINT_PROFILE_EMIT_SECONDS="1",
                           TOUCHPOINT_SINK_BATCH_SIZE="40")
    # a third in, killed while its later stages are still at work on the last slices
    half = _publish(first, scenario, until=scenario.expected["events"] // 3)
    first.stop(signal.SIGKILL)
    first.start()
    # what the first life published is all stored before the rest comes
    first.wait_for("SELECT count() FROM touchpoint_events", half, timeout=120)
    _publish(first, scenario, start=half)
    _settled(first, scenario)
    before = {name: first.query(sql).rows for name, sql in RAW_SQL.items()}
    first.stop()

    # A second worker in a consumer group of its own reads every input topic from the
    # start again (its ingest publishes every event to the shared ordered log a second
    # time), writing into the same database. The first group's own topic is left alone.
    own = [first.topics.resolved]
    ends = offsets(first.settings.app_id, own).end
    assert ends, "the first group's resolved topic has partitions"
    replay = worker_factory("clickhouse", **{
        "TOUCHPOINT_TOPIC_PREFIX": first.settings.topic_prefix,
        "TOUCHPOINT_CLICKHOUSE_URL": first.settings.clickhouse_url,
        "TOUCHPOINT_APP_ID": f"tp-replay-{uuid.uuid4().hex[:8]}",
        "TOUCHPOINT_PROFILE_EMIT_SECONDS": "1"})
    assert replay.topics.resolved not in own
    # it has read every record of the ordered log: the first run's copies and its own
    read = 2 * scenario.expected["events"]
    deadline = time.monotonic() + 120
    while (sum((replay.status() or {}).get("minutes", {}).values()) < read
           or (replay.status() or {}).get("identity", {}).get("resolved", 0) < read):
        assert time.monotonic() < deadline, replay.status()
        time.sleep(0.5)
    _settled(replay, scenario)
    assert offsets(first.settings.app_id, own).end == ends
    # Until two emission rounds of the replay's profiles change nothing more; then not a
    # stored row may differ from the first run's.
    pause = 2 * replay.settings.profile_emit_seconds + 1
    deadline = time.monotonic() + 60
    after = None
    while time.monotonic() < deadline:
        current = {name: replay.query(sql).rows for name, sql in RAW_SQL.items()}
        if current == after:
            break
        after = current
        time.sleep(pause)
    assert after == before
