"""Python's cyclic garbage collector, tuned for a worker, and its pauses measured.

A worker allocates a few hundred objects an event, and many of them live past the
youngest generation (fetched batches, buffered events, outbox batches). With Python's
thresholds (700, 10, 10) the oldest generation, which holds everything the worker keeps
(modules, schemas, Faust's structures, the identity cache, signal state), was walked
every second or two at 2,000 events/s, ~150 ms each time: 7.2 s of the worker's 62 s of
CPU in the signals benchmark (2026-11-23). Those walks are pauses too: nothing else runs
while one does.

:func:`tune` moves what start-up built out of the collector's sight (``gc.freeze``) and
collects the young generation every 50,000 allocations instead of every 700. Reference
counting still frees everything that has no cycles at once; only cyclic garbage waits
longer. The same benchmark then spent 0.9 s in the collector.
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
