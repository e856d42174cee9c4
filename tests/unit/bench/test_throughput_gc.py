"""The throughput benchmark reads each worker's garbage collector figures from /metrics.

The names and labels it looks for are the worker's own (``streams/ops/metrics.py``): a
renamed metric would leave the report without them, so the bench is tried on the text
the worker's collector renders.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from touchpoint.streams.ops import metrics
from touchpoint.streams.runtime.memory import Pauses

BENCH = Path(__file__).resolve().parents[3] / "bench" / "throughput_bench.py"


@pytest.fixture
def bench(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH.parent))  # it imports its sibling profiles_bench
    spec = importlib.util.spec_from_file_location("throughput_bench_under_test", BENCH)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # its dataclasses look themselves up
    spec.loader.exec_module(module)
    return module


def rendered(pauses: Pauses) -> str:
    """The worker's garbage collector families as /metrics renders them."""
    collector = object.__new__(metrics._Collector)  # only its collector part is scraped here
    collector.pauses = pauses

    class GarbageCollector:
        def collect(self):
            return collector._collector()

    registry = CollectorRegistry()
    registry.register(GarbageCollector())
    return generate_latest(registry).decode()


def test_the_bench_reads_each_generation_s_collections_and_seconds(bench) -> None:
    pauses = Pauses()
    pauses.collections = [96, 5, 2]
    pauses.seconds = [2.875, 0.5, 0.0625]
    assert bench.gc_pauses_of(rendered(pauses)) == [(96, 2.875), (5, 0.5), (2, 0.0625)]


def test_without_the_collector_s_figures_it_reports_none(bench) -> None:
    assert bench.gc_pauses_of("touchpoint_messages_in_total{topic=\"x\"} 3.0\n") is None
