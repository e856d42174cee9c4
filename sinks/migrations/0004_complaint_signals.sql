-- Complaint signals: every state a signal went through, the latest one read.
--
-- A signal is emitted again whenever it escalates, gathers evidence or closes; each
-- state carries a revision that grows (wall-clock microseconds, strictly increasing per
-- worker), and the table keeps the highest. A replayed state is the same row again.
-- Times are event time (occurred_at of the evidence) except emitted_at.
CREATE TABLE IF NOT EXISTS {db}.complaint_signals_raw
(
    signal_id String,
    customer_id String,
    detected_at {datetime},
    first_evidence_at {datetime},
    severity String,
    score Float64,
    reasons Array(String),
    evidence_event_ids Array(String),
    channels Array(String),
    status String,
    escalated_at Nullable({datetime}),
    due_at Nullable({datetime}),
    emitted_at {datetime},
    revision UInt64
)
ENGINE = ReplacingMergeTree(revision)
ORDER BY signal_id
SETTINGS index_granularity = 8192{dedup_window};

-- The latest state of each signal (CONTRACT §4), its customer as resolved now: a signal
-- raised for a customer later merged into another shows the customer it became.
CREATE VIEW IF NOT EXISTS {db}.complaint_signals AS
SELECT
    signal_id,
    if(resolved_id = '', stored_customer_id, resolved_id) AS customer_id,
    stored_customer_id,
    detected_at, first_evidence_at, severity, score, reasons, evidence_event_ids, channels,
    status, escalated_at, due_at, emitted_at, revision
FROM
(
    SELECT *, customer_id AS stored_customer_id FROM {db}.complaint_signals_raw FINAL
) AS s
ANY LEFT JOIN
(
    SELECT alias AS stored_customer_id, argMax(customer_id, version) AS resolved_id
    FROM {db}.customer_aliases
    GROUP BY alias
) AS a USING stored_customer_id;
