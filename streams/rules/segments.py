"""Segments: a profile's lifecycle stage and value tier, and the tier cut-offs.

:class:`SegmentRules` classifies a profile (``rules/profile.py``) as of its latest
contact, by event time, so a replay classifies the same way; :class:`TierEstimator`
estimates the spend cut-offs of the value tiers from the customers a worker holds. The
profiles stage publishes both with every profile, and the complaint detector and
campaign attribution read the tier (see ``docs/design/identity.md``, "What a profile
holds").
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

__all__ = ["DAY_MS", "SegmentRules", "TierEstimator", "month_key", "spend_12m"]

DAY_MS = 86_400_000


@dataclass(frozen=True)
class SegmentRules:
    """Lifecycle and value-tier rules; days and shares configurable (see settings).

    Lifecycle, judged as of the customer's latest contact (event time):

    - ``prospect``: no purchase yet;
    - ``new``: first purchase within ``new_days``;
    - ``lapsed``: no purchase for ``lapsed_days``;
    - ``at_risk``: no purchase for ``at_risk_days``, or a formal complaint or open
      complaint signal within ``at_risk_days``;
    - ``loyal``: ``loyal_orders`` or more orders and a purchase within ``at_risk_days``;
    - ``active``: everyone else.

    Value tier: ``new`` before the first purchase or within ``new_days`` of it; else
    ``key`` for the top ``key_share`` of customers by spend in the trailing 12 months,
    ``growth`` for the next ``growth_share``, ``standard`` for the rest. The cut-offs are
    estimated from the live spend distribution (:class:`TierEstimator`); until
    ``min_population`` customers have spent, the fixed ``key_spend`` / ``growth_spend``
    apply.
    """

    new_days: int = 30
    at_risk_days: int = 90
    lapsed_days: int = 180
    loyal_orders: int = 5
    key_share: float = 0.04
    growth_share: float = 0.16
    key_spend: float = 20_000.0
    growth_spend: float = 5_000.0
    min_population: int = 200

    def lifecycle(self, p: Mapping[str, Any]) -> str:
        """The lifecycle stage of a profile."""
        if not p["orders"] or p["last_purchase_at"] is None:
            return "prospect"
        as_of = p["last_seen"]
        since_purchase = (as_of - p["last_purchase_at"]) / DAY_MS
        if (as_of - p["first_purchase_at"]) / DAY_MS <= self.new_days:
            return "new"
        if since_purchase > self.lapsed_days:
            return "lapsed"
        recent_complaint = any((as_of - c[0]) / DAY_MS <= self.at_risk_days
                               for c in p["complaint_cases"])
        if since_purchase > self.at_risk_days or recent_complaint or p["open_signals"]:
            return "at_risk"
        if p["orders"] >= self.loyal_orders:
            return "loyal"
        return "active"

    def tier(self, p: Mapping[str, Any], cutoffs: tuple[float, float],
             at: int | None = None) -> str:
        """The value tier of a profile, given the (key, growth) spend cut-offs.

        ``at`` (event time, ms) asks for the tier as of then rather than as of the
        customer's latest contact: purchases after it do not count (to the month), so
        the complaint detector weighs a contact the same whatever arrived before it.
        """
        as_of = p["last_seen"] if at is None else at
        first = p["first_purchase_at"]
        if first is None or as_of is None or first > as_of or \
                (as_of - first) / DAY_MS <= self.new_days:
            return "new"
        spend = spend_12m(p, as_of)
        key, growth = cutoffs
        if spend >= key:
            return "key"
        if spend >= growth:
            return "growth"
        return "standard"


def spend_12m(p: Mapping[str, Any], as_of: int | None = None) -> float:
    """Spend in the 12 calendar months up to the latest contact (or up to ``as_of``)."""
    as_of = p["last_seen"] if as_of is None else as_of
    if as_of is None:
        return 0.0
    month = _month_of(as_of)  # runs several times per event and profile: no datetime
    start, last = _month_text(month - 11), _month_text(month)
    total = 0.0
    for key, value in p["spend_by_month"].items():
        if start <= key <= last:
            total += value
    return round(total, 2)


#: Epoch ms of 0001-01-01 and of the end of 9999-12-31: datetime's range
_FIRST_MS = -62_135_596_800_000
_END_MS = 253_402_300_800_000
# year * 12 + month - 1 -> "YYYYMM": the months in use (at most 120,000, years 1 to 9999)
_MONTH_TEXT: dict[int, str] = {}


def _month_of(ms: int) -> int:
    """``year * 12 + month - 1`` of an epoch-ms time, UTC (as ``datetime`` reads it)."""
    if not _FIRST_MS <= ms < _END_MS:
        end = datetime.fromtimestamp(ms / 1000, tz=UTC)  # beyond its range: its error
        return end.year * 12 + end.month - 1
    # the proleptic Gregorian calendar in integers (Howard Hinnant's civil_from_days)
    days = ms // DAY_MS + 719_468
    era = days // 146_097
    day_of_era = days - era * 146_097
    year_of_era = (day_of_era - day_of_era // 1_460 + day_of_era // 36_524
                   - day_of_era // 146_096) // 365
    day_of_year = day_of_era - (365 * year_of_era + year_of_era // 4 - year_of_era // 100)
    shifted = (5 * day_of_year + 2) // 153  # months from March
    month = shifted + 3 if shifted < 10 else shifted - 9
    year = year_of_era + era * 400 + (1 if month <= 2 else 0)
    return year * 12 + month - 1


def month_key(ms: int) -> str:
    """The ``YYYYMM`` of an epoch-ms time, UTC: a key of a profile's ``spend_by_month``."""
    return _month_text(_month_of(ms))


def _month_text(month: int) -> str:
    text = _MONTH_TEXT.get(month)
    if text is None:
        text = _MONTH_TEXT[month] = f"{month // 12:04d}{month % 12 + 1:02d}"
    return text


class TierEstimator:
    """Spend cut-offs for key and growth customers, from the spend this worker has seen.

    A log-scale histogram (8 buckets per doubling) of each customer's trailing spend;
    quantiles from it are within about 9 % of the true value. The cut-offs are read for
    every event (the detector's and attribution's value tier) but change only when the
    emitter observes spend, so they are kept until then.
    """

    def __init__(self, rules: SegmentRules) -> None:
        self.rules = rules
        # each customer's bucket, not its spend: a small int is shared, not stored per entry
        self._bucket_of: dict[str, int] = {}
        self._buckets: dict[int, int] = {}
        self._cutoffs: tuple[float, float] | None = None

    def observe(self, customer_id: str, spend: float) -> None:
        """Record a customer's current trailing spend (replacing the previous value)."""
        self._cutoffs = None
        old = self._bucket_of.get(customer_id)
        if old is not None:
            self._buckets[old] -= 1
        if spend > 0:
            bucket = _bucket(spend)
            self._bucket_of[customer_id] = bucket
            self._buckets[bucket] = self._buckets.get(bucket, 0) + 1
        else:
            self._bucket_of.pop(customer_id, None)

    def forget(self, customer_id: str) -> None:
        """Drop a customer (merged away)."""
        self.observe(customer_id, 0.0)

    def cutoffs(self) -> tuple[float, float]:
        """(key, growth) spend cut-offs."""
        if self._cutoffs is None:
            self._cutoffs = self._compute()
        return self._cutoffs

    def _compute(self) -> tuple[float, float]:
        population = len(self._bucket_of)
        if population < self.rules.min_population:
            return self.rules.key_spend, self.rules.growth_spend
        return (self._quantile(1 - self.rules.key_share, population),
                self._quantile(1 - self.rules.key_share - self.rules.growth_share, population))

    def _quantile(self, q: float, population: int) -> float:
        rank = q * population
        seen = 0
        for bucket in sorted(self._buckets):
            seen += self._buckets[bucket]
            if seen >= rank:
                return float(2 ** (bucket / 8))
        return math.inf


def _bucket(spend: float) -> int:
    return math.floor(math.log2(max(spend, 1.0)) * 8)
