-- Rejected inbound records, one row per source record (topic, partition, offset).
--
-- The original bytes stay on the touchpoints.deadletter topic: they may hold e-mail and
-- phone in clear, which are never written outside the inbound topics. This table keeps
-- what operations need to see and act on: where, why, and a fingerprint of the payload.
CREATE TABLE IF NOT EXISTS {db}.deadletter_raw
(
    rejected_at {datetime},
    source_topic String,
    source_partition UInt16,
    source_offset UInt64,
    source_timestamp Nullable({datetime}),
    reason_code String,
    reason String,
    event_id String,
    event_type String,
    payload_bytes UInt32,
    payload_sha256 String,
    worker String,
    _version UInt64
)
ENGINE = ReplacingMergeTree(_version)
ORDER BY (source_topic, source_partition, source_offset)
{ttl_deadletter}
SETTINGS index_granularity = 8192{dedup_window};

CREATE VIEW IF NOT EXISTS {db}.deadletter AS
SELECT * FROM {db}.deadletter_raw FINAL;
