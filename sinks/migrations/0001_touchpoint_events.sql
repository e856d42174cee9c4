-- Every valid touchpoint event, stored once per event_id.
--
-- Delivery from Kafka is at-least-once, so the same event may be inserted more than once
-- (a retried batch, a rebalance, a replay). The raw table keeps every insert and
-- ReplacingMergeTree collapses rows with the same event_id (the sorting key) in the
-- background, keeping the highest _version. The touchpoint_events view (0003) reads the
-- collapsed state with FINAL, so what reports read has exactly one row per event at any
-- moment, merged or not.
CREATE TABLE IF NOT EXISTS {db}.touchpoint_events_raw
(
    event_id String,
    occurred_at {datetime},
    channel String,
    type String,
    customer_id String,
    anonymous_id String,
    email_hash String,
    phone_hash String,
    campaign_id String,
    store_id String,
    amount Nullable(Float64),
    currency String,
    queue_wait_s Nullable(Int32),
    score Nullable(Int16),
    outcome String,
    reason String,
    sentiment Nullable(Float32),
    category String,
    stage String,
    session_id String,
    url String,
    referrer String,
    ad_id String,
    dwell_ms Nullable(Int64),
    error_code String,
    staff_id String,
    items Nullable(Int32),
    call_id String,
    agent_id String,
    talk_s Nullable(Int32),
    transfers Nullable(Int16),
    notes String,
    medium String,
    variant String,
    comment String,
    about_channel String,
    case_id String,
    attribute_keys Array(String),
    attribute_values Array(String),
    source_topic String,
    source_partition UInt16,
    source_offset UInt64,
    ingested_at {datetime},
    _version UInt64
)
ENGINE = ReplacingMergeTree(_version)
PARTITION BY toYYYYMM(occurred_at)
ORDER BY event_id
SETTINGS index_granularity = 8192{dedup_window};
