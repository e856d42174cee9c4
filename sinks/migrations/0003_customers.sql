-- Customers: profiles, the merge audit trail, and resolution of merged ids in reports.
--
-- Profiles are written as complete rows; the highest revision of a customer wins.
-- A customer merged into another gets a last row with merged_into set (and the highest
-- revision), and the customer_profiles view leaves it out.
CREATE TABLE IF NOT EXISTS {db}.customer_profiles_raw
(
    customer_id String,
    first_seen {datetime},
    last_seen {datetime},
    lifecycle_stage String,
    value_tier String,
    total_spend Float64,
    spend_12m Float64,
    orders UInt32,
    returns UInt32,
    last_purchase_at Nullable({datetime}),
    contacts_web UInt64,
    contacts_store UInt64,
    contacts_callcenter UInt64,
    contacts_campaign UInt64,
    contacts_feedback UInt64,
    contacts_by_channel {channel_counts},
    avg_satisfaction Nullable(Float64),
    nps_avg Nullable(Float64),
    complaints UInt32,
    open_signals UInt32,
    merged_into String,
    updated_at {datetime},
    revision UInt64
)
ENGINE = ReplacingMergeTree(revision)
ORDER BY customer_id
SETTINGS index_granularity = 8192{dedup_window};

CREATE VIEW IF NOT EXISTS {db}.customer_profiles AS
SELECT * FROM {db}.customer_profiles_raw FINAL WHERE merged_into = '';

-- Every merge: which customer became part of which, when (event time), and why.
CREATE TABLE IF NOT EXISTS {db}.identity_merges
(
    merged_id String,
    into_id String,
    merged_at {datetime},
    event_id String,
    identifiers Array(String),
    aliases Array(String),
    recorded_at {datetime}
)
ENGINE = ReplacingMergeTree
ORDER BY (merged_id, into_id)
SETTINGS index_granularity = 8192{dedup_window};

-- Every id that was merged away, and the customer it now is. Events keep the id they
-- were stored with; the touchpoint_events view reads them through this table, so a
-- report always shows the customer as resolved now.
CREATE TABLE IF NOT EXISTS {db}.customer_aliases
(
    alias String,
    customer_id String,
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY alias
SETTINGS index_granularity = 8192{dedup_window};

CREATE VIEW IF NOT EXISTS {db}.touchpoint_events AS
SELECT
    event_id, occurred_at, channel, type,
    if(resolved_id = '', stored_customer_id, resolved_id) AS customer_id,
    stored_customer_id,
    anonymous_id, email_hash, phone_hash, campaign_id, store_id, amount, currency,
    queue_wait_s, score, outcome, reason, sentiment, category, stage, session_id, url,
    referrer, ad_id, dwell_ms, error_code, staff_id, items, call_id, agent_id, talk_s,
    transfers, notes, medium, variant, comment, about_channel, case_id, attribute_keys,
    attribute_values, source_topic, source_partition, source_offset, ingested_at, _version
FROM
(
    SELECT *, customer_id AS stored_customer_id FROM {db}.touchpoint_events_raw FINAL
) AS e
ANY LEFT JOIN
(
    SELECT alias AS stored_customer_id, argMax(customer_id, version) AS resolved_id
    FROM {db}.customer_aliases
    GROUP BY alias
) AS a USING stored_customer_id;
