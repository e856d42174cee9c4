-- Campaign attribution, per-minute aggregates, and the report views marketing reads.
--
-- Every table here is written as complete rows per key with a version that only grows
-- (streams/rules/attribution.py, streams/rules/aggregates.py): ReplacingMergeTree keeps the highest
-- version, and the views read with FINAL, so a retried batch, a restarted worker or a
-- replay writes the same rows again and no figure is ever counted twice.
--
-- Views cannot take parameters. Every view keeps a time column (minute, day or the
-- event time) so a report filters with WHERE. The per-day views add up across days
-- except their distinct counts (unique clickers, customers reached): for a period,
-- count those from the row-level views (ad_clicks, touchpoint_events), as
-- `touchpoint report` does (touchpoint/report.py, docs/reports.md).

-- One row per minute x channel x type x store x campaign (event time) and input
-- partition (part: the stream is partitioned by customer, each partition counts its own
-- customers), complete figures; version is the number of events counted. Late events
-- are not in here (see below).
CREATE TABLE IF NOT EXISTS {db}.touchpoint_minute_raw
(
    minute {datetime},
    channel String,
    type String,
    store_id String,
    campaign_id String,
    part UInt16,
    category String,
    stage String,
    events UInt64,
    customers UInt64,
    revenue Float64,
    wait_s_sum UInt64,
    wait_count UInt64,
    negative UInt64,
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(minute)
ORDER BY (minute, channel, type, store_id, campaign_id, part)
SETTINGS index_granularity = 8192{dedup_window};

-- CONTRACT §4: the parts added up (a customer is counted in one part only).
CREATE VIEW IF NOT EXISTS {db}.touchpoint_minute AS
SELECT
    minute, channel, type, store_id, campaign_id,
    any(p_category) AS category, any(p_stage) AS stage,
    sum(p_events) AS events, sum(p_customers) AS customers, sum(p_revenue) AS revenue,
    sum(p_wait_s_sum) AS wait_s_sum, sum(p_wait_count) AS wait_count,
    sum(p_negative) AS negative
FROM
(
    SELECT minute, channel, type, store_id, campaign_id, category AS p_category,
        stage AS p_stage, events AS p_events, customers AS p_customers,
        revenue AS p_revenue, wait_s_sum AS p_wait_s_sum, wait_count AS p_wait_count,
        negative AS p_negative
    FROM {db}.touchpoint_minute_raw FINAL
)
GROUP BY minute, channel, type, store_id, campaign_id;

-- Events that came after their minute had closed (later than the grace period): counted
-- here, per key, minute and part, never lost. batch is the watermark minute at which the
-- late cell opened, so a late cell reopened later adds a row instead of replacing one.
-- A minute's full count is its touchpoint_minute row plus its touchpoint_minute_late row.
CREATE TABLE IF NOT EXISTS {db}.touchpoint_minute_late_raw
(
    minute {datetime},
    channel String,
    type String,
    store_id String,
    campaign_id String,
    part UInt16,
    category String,
    stage String,
    events UInt64,
    customers UInt64,
    revenue Float64,
    wait_s_sum UInt64,
    wait_count UInt64,
    negative UInt64,
    batch {datetime},
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(minute)
ORDER BY (minute, channel, type, store_id, campaign_id, part, batch)
SETTINGS index_granularity = 8192{dedup_window};

-- Late events per minute x channel x type x store x campaign, all parts and batches.
CREATE VIEW IF NOT EXISTS {db}.touchpoint_minute_late AS
SELECT
    minute, channel, type, store_id, campaign_id,
    any(p_category) AS category, any(p_stage) AS stage,
    sum(p_events) AS events, sum(p_customers) AS customers, sum(p_revenue) AS revenue,
    sum(p_wait_s_sum) AS wait_s_sum, sum(p_wait_count) AS wait_count,
    sum(p_negative) AS negative
FROM
(
    SELECT minute, channel, type, store_id, campaign_id, category AS p_category,
        stage AS p_stage, events AS p_events, customers AS p_customers,
        revenue AS p_revenue, wait_s_sum AS p_wait_s_sum, wait_count AS p_wait_count,
        negative AS p_negative
    FROM {db}.touchpoint_minute_late_raw FINAL
)
GROUP BY minute, channel, type, store_id, campaign_id;

-- One row per exposure (customer x campaign x send), complete and current. exposure_id
-- is derived from the campaign and the exposure's first event, so it survives merges.
-- A row with retracted = 1 withdraws an id that no longer exists (a late event changed
-- which event came first, or a merge joined two exposures into one).
CREATE TABLE IF NOT EXISTS {db}.campaign_attribution_raw
(
    exposure_id String,
    campaign_id String,
    medium String,
    variant String,
    customer_id String,
    value_tier String,
    exposed_at {datetime},
    last_exposed_at {datetime},
    delivered UInt8,
    opened UInt8,
    clicked UInt8,
    responded_at Nullable({datetime}),
    response_channel String,
    response_type String,
    response_event_id String,
    converted_at Nullable({datetime}),
    conversion_channel String,
    conversions UInt32,
    revenue Float64,
    model String,
    retracted UInt8,
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY exposure_id
SETTINGS index_granularity = 8192{dedup_window};

-- Current exposures, the customer as resolved now (like touchpoint_events): an exposure
-- of an anonymous visitor who later logged in shows the customer they became. The
-- filter on retracted sits outside the FINAL subquery so it sees the latest row only.
CREATE VIEW IF NOT EXISTS {db}.campaign_attribution AS
SELECT
    exposure_id, campaign_id, medium, variant,
    if(resolved_id = '', stored_customer_id, resolved_id) AS customer_id,
    stored_customer_id, value_tier, exposed_at, toDate(exposed_at) AS day, last_exposed_at,
    delivered, opened, clicked, isNotNull(responded_at) AS responded, responded_at,
    response_channel, response_type, response_event_id,
    isNotNull(converted_at) AS converted, converted_at, conversion_channel, conversions,
    revenue, model, version
FROM
(
    SELECT *, customer_id AS stored_customer_id
    FROM (SELECT * FROM {db}.campaign_attribution_raw FINAL)
    WHERE retracted = 0
) AS x
ANY LEFT JOIN
(
    SELECT alias AS stored_customer_id, argMax(customer_id, version) AS resolved_id
    FROM {db}.customer_aliases
    GROUP BY alias
) AS a USING stored_customer_id;

-- CONTRACT §4: campaign x day (of exposure, UTC) x medium x variant. Counts are
-- exposures; rates are fractions of exposed (0.0234 = 2.34 %). The SELECT is
-- sinks/views.py campaign_response_sql, which `touchpoint report campaigns` runs too.
CREATE VIEW IF NOT EXISTS {db}.campaign_response AS
{campaign_response};

-- The same by the customer's value tier at the time of the exposure.
CREATE VIEW IF NOT EXISTS {db}.campaign_response_by_tier AS
{campaign_response_by_tier};

-- Touchpoint scorecard: each negative experience at a touchpoint loses a point. Per day
-- x event type (channel, type) x touchpoint category x 4S stage: contacts, negative
-- experiences (the complaint rules' long wait, transfers, bad call outcome, low rating,
-- formal complaint, negative text, web error) and the share lost. Late events included.
-- Rank by negative (points lost) over the period you look at. The SELECT is
-- sinks/views.py touchpoint_scorecard_sql, which `touchpoint report touchpoints` runs too.
CREATE VIEW IF NOT EXISTS {db}.touchpoint_scorecard AS
{touchpoint_scorecard};

-- One row per web ad click, with the dwell after it: the dwell_ms of the first page view
-- of the same tracker session at or after the click and within 30 minutes of it (the
-- landing page). landed = 0 when no such page view exists (landing_dwell_ms NULL).
CREATE VIEW IF NOT EXISTS {db}.ad_clicks AS
SELECT
    click_id, clicked_at, toDate(clicked_at) AS day, ad_id, campaign_id, customer_id,
    session_id, landed, landing_dwell_ms
FROM
(
    SELECT event_id AS click_id, occurred_at AS clicked_at, ad_id, campaign_id,
        customer_id, session_id
    FROM {db}.touchpoint_events
    WHERE channel = 'web' AND type = 'ad_click' AND ad_id != ''
) AS c
ANY LEFT JOIN
(
    SELECT click_id, toUInt8(1) AS landed, argMin(pv_dwell_ms, pv_at) AS landing_dwell_ms
    FROM
    (
        SELECT event_id AS click_id, occurred_at AS k_at, session_id AS sid
        FROM {db}.touchpoint_events_raw FINAL
        WHERE channel = 'web' AND type = 'ad_click' AND ad_id != '' AND session_id != ''
    ) AS k
    ALL INNER JOIN
    (
        SELECT session_id AS sid, occurred_at AS pv_at, dwell_ms AS pv_dwell_ms
        FROM {db}.touchpoint_events_raw FINAL
        WHERE channel = 'web' AND type = 'page_view' AND session_id != ''
            AND isNotNull(dwell_ms)
    ) AS v USING sid
    WHERE pv_at >= k_at AND pv_at < addMinutes(k_at, 30)
    GROUP BY click_id
) AS l USING click_id;

-- Web ad report per day x ad x campaign: impressions, clicks, unique clickers (resolved
-- customers), repeat rate = clicks / unique clickers (4 means each clicker came back 3
-- more times), click rate = clicks / impressions, and mean dwell after a click in
-- seconds (over clicks that landed). Unique clickers do not add up across days. The
-- SELECT is sinks/views.py ad_report_sql, which `touchpoint report ads` runs too.
CREATE VIEW IF NOT EXISTS {db}.ad_report AS
{ad_report};

-- Channel report per day x channel: customers reached (distinct resolved customers with
-- a contact there, not additive across days), contacts, purchases and their revenue,
-- and what campaigns earned there: responses (exposures whose response came through the
-- channel), conversions and attributed revenue (exposures whose first conversion did).
-- The SELECT is sinks/views.py channel_report_sql, which `touchpoint report channels`
-- runs too.
CREATE VIEW IF NOT EXISTS {db}.channel_report AS
{channel_report};
