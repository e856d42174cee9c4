"""deploy/grafana: the provisioned dashboard refers to real data sources and real metrics."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from prometheus_client import CollectorRegistry

from touchpoint.sinks.writer import WriterStats
from touchpoint.streams.ops.metrics import Metrics, _Collector
from touchpoint.streams.rules.normalize import IngestStats
from touchpoint.streams.topics import TopicNames

GRAFANA = Path(__file__).resolve().parents[2] / "deploy" / "grafana"


def _dashboard() -> dict[str, Any]:
    return json.loads((GRAFANA / "dashboards" / "touchpoint.json").read_text())  # type: ignore[no-any-return]


def _exported_names() -> set[str]:
    """Every sample name a worker's /metrics can show."""
    pipeline = SimpleNamespace(ingest_stats=IngestStats(), topics=TopicNames(),
                               writer=SimpleNamespace(stats=WriterStats()),
                               identity_stats={}, profile_stats={})
    collector = _Collector(Metrics(), pipeline, None, list, [])
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    names = set()
    for family in collector.collect():
        suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"),
                    "gauge": ("",)}[family.type]
        names |= {family.name + s for s in suffixes}
    return names


def test_every_panel_uses_a_provisioned_data_source() -> None:
    provisioned = set(re.findall(r"uid: (\S+)",
                                 (GRAFANA / "provisioning" / "datasources" /
                                  "touchpoint.yaml").read_text()))
    assert provisioned == {"touchpoint-prometheus", "touchpoint-clickhouse"}
    used = Counter(p["datasource"]["uid"] for p in _dashboard()["panels"] if "datasource" in p)
    assert set(used) == provisioned


def test_every_promql_metric_is_one_the_workers_export() -> None:
    exported = _exported_names() | {"up"}
    for panel in _dashboard()["panels"]:
        for target in panel.get("targets", []):
            if "expr" not in target:
                continue
            names = set(re.findall(r"\b([a-z_]+)(?=\{|\[| ==|\))", target["expr"]))
            metrics = {n for n in names if n.startswith("touchpoint_") or n == "up"}
            assert metrics, target["expr"]
            assert metrics <= exported, (panel["title"], metrics - exported)


def test_panels_have_unique_ids_and_fit_the_grid() -> None:
    panels = _dashboard()["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]


def test_the_dashboards_provider_loads_this_folder() -> None:
    provider = (GRAFANA / "provisioning" / "dashboards" / "touchpoint.yaml").read_text()
    assert "type: file" in provider and "path: /var/lib/grafana/dashboards/touchpoint" in provider
    assert "job_name: touchpoint" in (GRAFANA / "prometheus.yml").read_text()
