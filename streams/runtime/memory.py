"""Python's cyclic garbage collector, tuned for a worker, and its pauses measured.

:func:`tune` freezes what start-up built and collects the young generation far less
often; :func:`pauses` measures the collections for ``/metrics``. The measurements behind
the thresholds: ``docs/design/runtime.md``.
"""

from __future__ import annotations

import gc
import time
from typing import Any

__all__ = ["THRESHOLDS", "Pauses", "pauses", "tune"]

#: Allocations between young collections; young collections between older ones (twice).
THRESHOLDS = (50_000, 20, 100)


class Pauses:
    """Collections and the time spent in them, per generation (``gc.callbacks``)."""

    def __init__(self) -> None:
        self.collections = [0, 0, 0]
        self.seconds = [0.0, 0.0, 0.0]
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        """Time a collection: called as it starts and as it stops."""
        if phase == "start":
            self._started = time.perf_counter()
            return
        generation = info["generation"]
        self.collections[generation] += 1
        self.seconds[generation] += time.perf_counter() - self._started


_pauses = Pauses()


def pauses() -> Pauses:
    """The collector pauses of this process, measured from the first call on."""
    if _pauses not in gc.callbacks:
        gc.callbacks.append(_pauses)
    return _pauses


def tune() -> None:
    """Collect once, freeze what survives, and collect less often from now on.

    Call it once the worker is built and before it runs.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
