from __future__ import annotations

import asyncio
import gzip
from typing import Any

import pytest

from touchpoint.exceptions import WarehouseError
from touchpoint.sinks.clickhouse import QueryResult
from touchpoint.streams.ops.dashboard import (
    Dashboard,
    StaticFiles,
    Windows,
    campaign_events_sql,
    campaign_view_sql,
    scorecard_sql,
    waits_sql,
)
from touchpoint.streams.ops.lag import OffsetSample
from touchpoint.streams.topics import TopicNames

NOW = 1_795_000_000


def result(**columns: list[Any]) -> QueryResult:
    names = tuple(columns)
    return QueryResult(names, tuple("String" for _ in names),
                       list(zip(*columns.values(), strict=True)))


EMPTY = QueryResult((), (), [])


class Warehouse:
    """Answers each statement by the first pattern it contains; counts the statements."""

    def __init__(self, answers: dict[str, QueryResult | Exception]) -> None:
        self.answers = answers
        self.asked: list[str] = []

    def __call__(self, sql: str) -> QueryResult:
        self.asked.append(sql)
        for pattern, answer in self.answers.items():
            if pattern in sql:
                if isinstance(answer, Exception):
                    raise answer
                return answer
        raise AssertionError(f"unexpected statement: {sql}")

    def count(self, pattern: str) -> int:
        return sum(pattern in sql for sql in self.asked)


def answers(**overrides: QueryResult | Exception) -> dict[str, QueryResult | Exception]:
    base: dict[str, QueryResult | Exception] = {
        "max(occurred_at)": result(channel=["web", "store"], newest=[NOW - 5, NOW],
                                   stored=[40, 2]),
        "FROM complaint_signals_raw FINAL GROUP BY": result(
            status=["open", "open", "breached"], severity=["watch", "high", "high"],
            signals=[3, 1, 2]),
        "FROM complaint_signals WHERE": result(
            signal_id=["s1", "s2"], customer_id=["C1", "C2"], severity=["high", "watch"],
            status=["open", "open"], score=[4.5, 1.0], reasons=[("long_wait",), ("unresolved",)],
            channels=[("callcenter",), ("callcenter",)], detected=[NOW - 600, NOW - 60],
            escalated=[NOW - 30, NOW - 60], due=[NOW + 3600, None]),
        "FROM deadletter ORDER": result(at=[NOW], source_topic=["p.touchpoints.web"],
                                        source_partition=[1], source_offset=[7],
                                        reason_code=["bad_field"], reason=["e-mail?"],
                                        event_id=["e9"]),
        "FROM deadletter_raw FINAL": result(reason_code=["bad_field"], records=[3]),
        "AS long_waits": result(channel=["store", "callcenter", "store"],
                               store_id=["S1", "", "S2"], waits=[4, 10, 2],
                               avg_s=[100.0, 200.0, 700.0], p90_s=[150.0, 400.0, 900.0],
                               max_s=[200, 800, 1000], long_waits=[0, 2, 1],
                               abandoned=[0, 3, 0]),
        "n_long_wait": result(channel=["callcenter"], type=["call_ended"], contacts=[10],
                              negative=[4], long_wait=[2], bad_outcome=[3], low_rating=[0],
                              negative_text=[1], web_error=[0]),
        "system.tables": result(**{"count()": [0]}),
        "channel = 'campaign'": result(campaign_id=["CP1", ""], sent=[10, 1], delivered=[9, 0],
                                       opened=[4, 0], clicked=[1, 0], unsubscribed=[0, 0]),
    }
    base.update(overrides)
    return base


def test_sql_keeps_to_what_clickhouse_18_16_runs() -> None:
    for sql in (waits_sql(NOW, 3600), scorecard_sql(NOW), campaign_view_sql(NOW),
                campaign_events_sql(NOW)):
        assert " OVER " not in sql.upper() and "QUALIFY" not in sql.upper()
    assert f"occurred_at > toDateTime({NOW - 3600})" in waits_sql(NOW, 3600)
    assert "if(channel = 'store', 900, 300)" in waits_sql(NOW, 3600)
    assert f"toStartOfDay(toDateTime({NOW}))" in scorecard_sql(NOW)
    assert "day = toDate(toDateTime" in campaign_view_sql(NOW)


def test_the_scorecard_counts_each_negative_experience() -> None:
    sql = scorecard_sql(NOW, limit=7)
    for condition in ("ifNull(queue_wait_s, 0) > 900", "ifNull(queue_wait_s, 0) > 300",
                      "outcome IN ('unresolved', 'escalated', 'abandoned')",
                      "ifNull(score, 5) <= 2", "type = 'nps' AND ifNull(score, 10) <= 6",
                      "ifNull(sentiment, 0) <= -0.2", "channel = 'web' AND type = 'error'"):
        assert condition in sql
    assert sql.endswith("LIMIT 7")


def test_figures_from_the_warehouse() -> None:
    dashboard = Dashboard(Warehouse(answers()), TopicNames("p."), None)
    figures = dashboard.warehouse_figures()
    assert figures["event_time_now"] == NOW
    assert figures["stored"]["by_channel"] == {"web": 40, "store": 2}
    signals = figures["signals"]
    assert signals["counts"] == {"open": {"watch": 3, "high": 1}, "breached": {"high": 2}}
    assert signals["open_total"] == 4
    assert [(s["signal_id"], s["age_s"], s["time_left_s"], s["reasons"])
            for s in signals["feed"]] == [("s1", 600, 3600, ["long_wait"]),
                                          ("s2", 60, None, ["unresolved"])]
    assert [w["where"] for w in figures["waits"]] == ["call center", "S2", "S1"]
    assert figures["waits"][0]["abandoned"] == 3 and figures["waits"][1]["abandoned"] is None
    assert figures["waits"][1]["long_wait_s"] == 900
    [card] = figures["scorecard"]
    assert (card["touchpoint"], card["share_lost"], card["reasons"]["bad_outcome"]) == (
        "callcenter · call_ended", 0.4, 3)
    assert figures["campaigns"]["source"] == "touchpoint_events"
    assert [r["campaign_id"] for r in figures["campaigns"]["rows"]] == ["CP1"]
    assert figures["deadletters"]["latest"][0]["source_topic"] == "touchpoints.web"
    assert figures["deadletters"]["by_reason"] == [{"reason_code": "bad_field", "records": 3}]
    assert figures["errors"] == {}


def test_campaign_response_is_used_when_it_has_today() -> None:
    view = result(campaign_id=["CP1"], sent=[10], delivered=[9], opened=[4], clicked=[2],
                  responded=[2], converted=[1])
    warehouse = Warehouse(answers(**{"system.tables": result(**{"count()": [1]}),
                                     "FROM campaign_response": view}))
    figures = Dashboard(warehouse, TopicNames(), None).warehouse_figures()
    assert figures["campaigns"]["source"] == "campaign_response"
    assert figures["campaigns"]["rows"][0]["converted"] == 1


def test_an_empty_campaign_response_falls_back_to_events() -> None:
    warehouse = Warehouse(answers(**{"system.tables": result(**{"count()": [1]}),
                                     "FROM campaign_response": EMPTY}))
    figures = Dashboard(warehouse, TopicNames(), None).warehouse_figures()
    assert figures["campaigns"]["source"] == "touchpoint_events"


def test_an_empty_warehouse_shows_empty_panels() -> None:
    warehouse = Warehouse(answers(**{"max(occurred_at)": EMPTY,
                                     "FROM complaint_signals_raw FINAL GROUP BY": EMPTY,
                                     "FROM complaint_signals WHERE": EMPTY,
                                     "FROM deadletter ORDER": EMPTY,
                                     "FROM deadletter_raw FINAL": EMPTY}))
    figures = Dashboard(warehouse, TopicNames(), None).warehouse_figures()
    assert figures["event_time_now"] is None
    assert (figures["waits"], figures["scorecard"], figures["campaigns"]["rows"]) == ([], [], [])
    assert warehouse.count("AS long_waits") == 0  # nothing asked about an empty day


def test_a_failing_panel_fails_alone() -> None:
    warehouse = Warehouse(answers(**{"AS long_waits": WarehouseError("no such column\ndetails")}))
    figures = Dashboard(warehouse, TopicNames(), None).warehouse_figures()
    assert figures["errors"] == {"waits": "no such column"}
    assert figures["waits"] == [] and figures["scorecard"]


def test_slow_panels_are_read_every_slow_max_age_only() -> None:
    warehouse = Warehouse(answers())
    dashboard = Dashboard(warehouse, TopicNames(), None, slow_max_age=60)
    first = dashboard.warehouse_figures()
    second = dashboard.warehouse_figures()
    assert warehouse.count("FROM complaint_signals WHERE") == 2  # the feed: every time
    assert warehouse.count("AS long_waits") == 1
    assert second["waits"] == first["waits"]
    dashboard.slow_max_age = 0
    dashboard.warehouse_figures()
    assert warehouse.count("AS long_waits") == 2


def test_whether_the_view_exists_is_asked_once_a_minute() -> None:
    warehouse = Warehouse(answers())
    dashboard = Dashboard(warehouse, TopicNames(), None, slow_max_age=0)
    for _ in range(3):
        dashboard.warehouse_figures()
    assert warehouse.count("system.tables") == 1


class Monitor:
    def __init__(self, samples: list[OffsetSample], error: str | None = None) -> None:
        self.samples = samples
        self.error = error
        self.group = "g"


def test_kafka_figures_name_topics_without_the_prefix() -> None:
    topics = TopicNames("p.")
    samples = [
        OffsetSample(at=100.0, end={("p.touchpoints.web", 0): 10,
                                    ("p.touchpoints.deadletter", 0): 0}),
        OffsetSample(at=101.0, end={("p.touchpoints.web", 0): 30,
                                    ("p.touchpoints.deadletter", 0): 1,
                                    ("p.touchpoints.unresolved", 0): 8},
                     committed={("p.touchpoints.web", 0): 25,
                                ("p.touchpoints.unresolved", 0): 8}, members=3),
    ]
    kafka = Dashboard(Warehouse({}), topics, Monitor(samples)).kafka_figures()  # type: ignore[arg-type]
    assert kafka["ok"] and kafka["members"] == 3 and kafka["group"] == "g"
    assert kafka["rates"]["t"] == [101_000]
    assert kafka["rates"]["channels"]["web"] == [20.0]
    assert kafka["rates"]["channels"]["feedback"] == [0.0]
    assert kafka["rates"]["deadletter"] == [1.0]
    assert kafka["lag_by_topic"] == {"touchpoints.deadletter": 1, "touchpoints.unresolved": 0,
                                     "touchpoints.web": 5}


def test_kafka_figures_without_samples_or_monitor() -> None:
    assert Dashboard(Warehouse({}), TopicNames(), None).kafka_figures()["ok"] is False
    kafka = Dashboard(Warehouse({}), TopicNames(), Monitor([], "NoBrokersAvailable")  # type: ignore[arg-type]
                      ).kafka_figures()
    assert (kafka["ok"], kafka["error"], kafka["lag"], kafka["members"]) == (
        False, "NoBrokersAvailable", [], None)


def test_one_computation_however_many_ask() -> None:
    warehouse = Warehouse(answers())
    spawned: list[Any] = []
    dashboard = Dashboard(warehouse, TopicNames(), None, clock=lambda: 5.0,
                          spawn=spawned.append)

    async def many() -> list[dict[str, Any]]:
        return list(await asyncio.gather(*(dashboard.snapshot() for _ in range(10))))

    snapshots = asyncio.run(many())
    assert all(s is snapshots[0] for s in snapshots)
    assert warehouse.count("max(occurred_at)") == 1
    assert snapshots[0]["generated_at"] == 5.0 and snapshots[0]["kafka"]["ok"] is False
    # the page draws the contract's channels, in its order
    assert snapshots[0]["channels"] == ["web", "store", "callcenter", "campaign", "feedback"]
    assert len(spawned) == 1  # one background refresher for everyone
    spawned[0].close()
    dashboard.close()


def test_figures_are_refreshed_while_someone_watches_and_then_not() -> None:
    warehouse = Warehouse(answers())
    dashboard = Dashboard(warehouse, TopicNames(), None, max_age=0.05, idle_after=0.3)

    async def watch_once() -> None:
        first = await dashboard.snapshot()
        await asyncio.sleep(0.25)
        assert await dashboard.snapshot() is not first  # newer figures, at once
        await asyncio.sleep(0.6)  # nobody asks: the refreshing stops

    asyncio.run(watch_once())
    computed = warehouse.count("max(occurred_at)")
    assert 3 <= computed <= 10
    assert dashboard._refreshing is False
    dashboard.close()


@pytest.mark.parametrize("name", ["dashboard.html", "dashboard.css", "dashboard.js"])
def test_the_page_files_are_package_data(name: str) -> None:
    plain, packed = StaticFiles().read(name)
    assert plain and gzip.decompress(packed) == plain


def test_plotly_comes_from_the_installed_package() -> None:
    files = StaticFiles()
    plain, packed = files.read("plotly.min.js")
    assert b"plotly.js v" in plain[:200] and gzip.decompress(packed) == plain
    assert files.read("plotly.min.js")[0] is plain  # kept after the first read
    assert files.plotly_version()[0].isdigit()
    assert files.content_type("plotly.min.js").startswith("text/javascript")


@pytest.mark.parametrize("name", ["app.py", "../app.py", "static", ""])
def test_nothing_else_is_served(name: str) -> None:
    with pytest.raises(KeyError):
        StaticFiles().read(name)


def test_windows_default_to_a_laptop_screen_of_figures() -> None:
    windows = Windows()
    assert (windows.feed_limit, windows.wait_window_s, windows.scorecard_rows) == (200, 3600, 10)
