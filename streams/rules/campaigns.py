"""Campaigns: attribution in the profiles stage, and its rows for the warehouse.

The rules are in ``attribution.py`` (pure); this is how the profiles stage runs them, the
way ``signals.py`` runs the complaint detector. The customer's
:class:`~touchpoint.streams.rules.attribution.AttributionState` lives inside the profile
(key ``attribution``), so it moves with a merge and is recovered from the changelog.
Every event the profile applies goes to :func:`attribution.observe`, a merge folds the
merged-away customer's state in with :func:`attribution.combine`, and the profiles
emitter writes the complete rows of a customer's exposures (:meth:`Attributor.rows`)
when it publishes the customer. Why these rows are exact is in
docs/design/aggregates-and-attribution.md.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any

from touchpoint.streams.rules import attribution
from touchpoint.streams.rules.attribution import AttributionModel, AttributionState

__all__ = ["ATTRIBUTION_KEY", "Attributor"]

#: Where a profile keeps its attribution state.
ATTRIBUTION_KEY = "attribution"


class Attributor:
    """Campaign attribution over profiles: observe events, fold merges in, give rows.

    ``tier_of`` gives a profile's value tier, recorded on the exposures an event starts
    (``campaign_response_by_tier``).
    """

    def __init__(self, *, model: AttributionModel = attribution.LAST_TOUCH,
                 window: timedelta = attribution.DEFAULT_WINDOW,
                 lateness: timedelta = attribution.DEFAULT_LATENESS,
                 tier_of: Callable[[Mapping[str, Any]], str] = lambda profile: "") -> None:
        self.model, self.window, self.lateness = model, window, lateness
        self.tier_of = tier_of

    def observe(self, profile: dict[str, Any], event: dict[str, Any]) -> None:
        """Apply one new event of ``profile``'s customer; update the profile in place."""
        state, _ = attribution.observe(
            self.state_of(profile), event, model=self.model, window=self.window,
            lateness=self.lateness, value_tier=self.tier_of(profile))
        profile[ATTRIBUTION_KEY] = state.to_dict()

    def absorb(self, profile: dict[str, Any], other: dict[str, Any] | None) -> None:
        """Fold a merged-away customer's attribution state (its profile's) into ``profile``."""
        if not other:
            return
        state, _ = attribution.combine(
            self.state_of(profile), AttributionState.from_dict(other), model=self.model,
            window=self.window, lateness=self.lateness)
        profile[ATTRIBUTION_KEY] = state.to_dict()

    def rows(self, profile: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        """Every exposure row of the customer at its current version (column order)."""
        stored = profile.get(ATTRIBUTION_KEY)
        if not stored or not stored.get("rows"):
            return []  # most customers: no exposure, no state to rebuild
        state = AttributionState.from_dict(stored)
        return [attribution.row_values(row) for row in attribution.snapshot(state)]

    def state_of(self, profile: dict[str, Any]) -> AttributionState:
        """The attribution state kept in ``profile`` (a fresh one if it has none)."""
        stored = profile.get(ATTRIBUTION_KEY)
        if stored is None:
            return AttributionState(profile["customer_id"])
        state = AttributionState.from_dict(stored)
        # A state absorbed into another profile carries the id it had; rows name this one.
        state.customer_id = profile["customer_id"]
        return state
