"""The worker's garbage-collector settings and pause measurement."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from touchpoint.streams.runtime import memory


@pytest.fixture
def collector_restored() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


@pytest.mark.usefixtures("collector_restored")
def test_tune_freezes_what_start_up_built_and_raises_the_thresholds() -> None:
    built = [object() for _ in range(10)]  # noqa: F841  (kept alive across the freeze)
    gc.unfreeze()
    memory.tune()
    assert gc.get_threshold() == memory.THRESHOLDS
    assert gc.get_freeze_count() > 0


def test_pauses_count_each_collection_under_its_generation() -> None:
    pauses = memory.pauses()
    assert memory.pauses() is pauses
    assert gc.callbacks.count(pauses) == 1  # asked twice, installed once
    before = list(pauses.collections), list(pauses.seconds)
    gc.collect(1)
    assert pauses.collections[1] == before[0][1] + 1
    assert pauses.collections[2] == before[0][2]
    assert pauses.seconds[1] > before[1][1]
