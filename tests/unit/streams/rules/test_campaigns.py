"""Attribution in the profiles stage: state in the profile, rows after merges."""

from __future__ import annotations

from typing import Any

from touchpoint.schemas.codec import codec_for
from touchpoint.streams.rules.attribution import ATTRIBUTION_COLUMNS
from touchpoint.streams.rules.campaigns import ATTRIBUTION_KEY, Attributor
from touchpoint.streams.rules.profile_batches import ProfileStage

T0 = 1_795_000_000_000
HOUR = 3_600_000


def _event(event_id: str, at: int, channel: str, kind: str, **fields: Any) -> bytes:
    record = {"event_id": event_id, "occurred_at": at, "channel": channel, "type": kind,
              "category": "communication" if channel == "campaign" else "interaction",
              "stage": "sense", "source_topic": f"touchpoints.{channel}", "source_partition": 0,
              "source_offset": 0, "ingested_at": at, **fields}
    return codec_for("event").encode(record, check=False)


def _rows(attributor: Attributor, profile: dict[str, Any]) -> list[dict[str, Any]]:
    return [dict(zip(ATTRIBUTION_COLUMNS, r, strict=True)) for r in attributor.rows(profile)]


def test_an_exposure_answered_after_a_merge_belongs_to_the_merged_customer() -> None:
    table: dict[str, Any] = {}
    attributor = Attributor()
    stage = ProfileStage(table, {}, attribution=attributor)
    stage.handle("u-anon", _event("e1", T0, "web", "ad_click", campaign_id="CMP",
                                  ad_id="AD-1", anonymous_id="ck"))
    anonymous_rows = _rows(attributor, table["u-anon"])
    assert [(r["customer_id"], r["responded_at"], r["version"]) for r in anonymous_rows] == \
        [("u-anon", None, 1)]
    stage.handle("C1", _event("e2", T0 + HOUR, "store", "purchase", customer_id="C1",
                              store_id="S1", amount=120.5))
    # the merge record at the merged-away id sends its state to the customer it became
    merge = codec_for("merge").encode({
        "merged_id": "u-anon", "into_id": "C1", "merged_at": T0 + 2 * HOUR, "event_id": "e3",
        "identifiers": ["anonymous_id:ck"], "aliases": [], "recorded_at": T0})
    (absorb,) = stage.handle("u-anon", merge)
    stage.handle(absorb.key, absorb.value)
    (row,) = _rows(attributor, table["C1"])
    assert (row["exposure_id"], row["customer_id"], row["responded_at"], row["revenue"]) == \
        (anonymous_rows[0]["exposure_id"], "C1", T0 + HOUR, 120.5)
    # higher than any row the merged-away id wrote, so the table keeps this one
    assert row["version"] > anonymous_rows[0]["version"]
    assert ATTRIBUTION_KEY not in table["u-anon"]  # only the marker is left


def test_a_repeated_event_changes_no_row() -> None:
    table: dict[str, Any] = {}
    attributor = Attributor()
    stage = ProfileStage(table, {}, attribution=attributor)
    sent = _event("e1", T0, "campaign", "sent", customer_id="C1", campaign_id="CMP",
                  medium="sms", variant="A")
    stage.handle("C1", sent)
    before = _rows(attributor, table["C1"])
    stage.handle("C1", sent)
    assert _rows(attributor, table["C1"]) == before
