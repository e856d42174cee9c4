"""SQL that a migration's view and a report both run: written once here, used by both.

Migration 0005 creates ``campaign_response`` and ``campaign_response_by_tier`` from
:func:`campaign_response_sql` (its ``{campaign_response}`` and
``{campaign_response_by_tier}`` placeholders, filled by :mod:`touchpoint.sinks.migrate`);
``touchpoint report campaigns`` (:mod:`touchpoint.report`) runs the same SQL over a
period of its own, which a view cannot take as a parameter.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Final

from touchpoint.sinks.tables import (
    CAMPAIGN_ATTRIBUTION_RAW,
    CAMPAIGN_RESPONSE,
    CAMPAIGN_RESPONSE_BY_TIER,
)

__all__ = ["VIEW_SQL", "campaign_response_sql"]

_DAY: Final = "toDate(exposed_at) AS day"


def campaign_response_sql(keys: Sequence[str], *, table: str = CAMPAIGN_ATTRIBUTION_RAW,
                          where: str = "") -> str:
    """Campaign response per ``keys``: the funnel counts, revenue and rates of exposures.

    ``keys`` are columns of ``campaign_attribution_raw``, or ``day`` (the UTC day of the
    exposure). Retracted exposures are left out; ``where`` adds conditions (`` AND ...``).
    Counts are exposures; rates are fractions of exposed (0.0234 = 2.34 %). The SQL runs
    on ClickHouse 18.16 and on chdb alike.
    """
    outer = ", ".join(keys)
    inner = ", ".join(_DAY if key == "day" else key for key in keys)
    return f"""SELECT
    {outer},
    count() AS exposed,
    sum(x_delivered) AS delivered,
    sum(x_opened) AS opened,
    sum(x_clicked) AS clicked,
    sum(x_responded) AS responded,
    sum(x_converted) AS converted,
    round(sum(x_revenue), 2) AS revenue,
    round(responded / exposed, 4) AS response_rate,
    round(converted / exposed, 4) AS conversion_rate
FROM
(
    SELECT
        {inner},
        toUInt64(delivered) AS x_delivered, toUInt64(opened) AS x_opened,
        toUInt64(clicked) AS x_clicked, toUInt64(isNotNull(responded_at)) AS x_responded,
        toUInt64(isNotNull(converted_at)) AS x_converted, revenue AS x_revenue
    FROM (SELECT * FROM {table} FINAL)
    WHERE retracted = 0{where}
)
GROUP BY {outer}"""


_RESPONSE_KEYS: Final = ("campaign_id", "day", "medium", "variant")

# Placeholder name -> the view's SELECT in database ``db``.
VIEW_SQL: Final[Mapping[str, Callable[[str], str]]] = MappingProxyType({
    CAMPAIGN_RESPONSE: lambda db: campaign_response_sql(
        _RESPONSE_KEYS, table=f"{db}.{CAMPAIGN_ATTRIBUTION_RAW}"),
    CAMPAIGN_RESPONSE_BY_TIER: lambda db: campaign_response_sql(
        (*_RESPONSE_KEYS, "value_tier"), table=f"{db}.{CAMPAIGN_ATTRIBUTION_RAW}"),
})
