"""Benchmark: campaign attribution's cost per event for a busy customer, in-process.

Not a test. The profiles stage runs attribution for every event it applies
(``streams/rules/campaigns.py``); its state keeps the touchpoints a late exposure could still
claim (window + lateness, at most ``MAX_TOUCHPOINTS``), so a customer browsing a page a
minute is the expensive case. Prints microseconds per event and the state's JSON size
after 2,000 page views, without and with one e-mail exposure before them.

    .venv/bin/python bench/attribution_bench.py
"""

from __future__ import annotations

import json
import time
from typing import Any

from touchpoint.streams.rules.campaigns import Attributor
from touchpoint.streams.rules.profile import new_profile

T0 = 1_795_000_000_000
MINUTE_MS = 60_000


def page_views(count: int) -> list[dict[str, Any]]:
    return [{"event_id": f"e{i}", "channel": "web", "type": "page_view",
             "occurred_at": T0 + i * MINUTE_MS, "category": "channel", "stage": "x",
             "amount": None, "campaign_id": None, "customer_id": "C1"} for i in range(count)]


def main() -> None:
    exposure = {"event_id": "x", "channel": "campaign", "type": "delivered",
                "occurred_at": T0 - 1, "category": "communication", "stage": "x",
                "campaign_id": "CMP", "medium": "email", "variant": "A", "customer_id": "C1"}
    for label, events in (("no campaign", page_views(2000)),
                          ("one e-mail exposure first", [exposure, *page_views(2000)])):
        attributor, profile = Attributor(), new_profile("C1")
        began = time.perf_counter()
        for event in events:
            attributor.observe(profile, event)
        per_event = (time.perf_counter() - began) / len(events)
        size = len(json.dumps(profile["attribution"]))
        print(f"2,000 page views a minute apart, {label}: {per_event * 1e6:,.0f} µs/event; "
              f"attribution state {size:,} bytes")


if __name__ == "__main__":
    main()
