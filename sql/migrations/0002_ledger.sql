-- The ledger: one row per cost line. line_id is derived from the line's inputs, so
-- re-deriving a line replaces it (highest version wins) and a withdrawn GPU line is
-- replaced by a tombstone (is_deleted = 1). Always read it with FINAL.

CREATE TABLE IF NOT EXISTS {db}.ledger
(
    line_id              String,
    kind                 LowCardinality(String) COMMENT 'api | gpu | idle',
    event_time           DateTime64(6, 'UTC') COMMENT 'request_end (api) or window start (gpu, idle)',
    window_seconds       UInt32,
    org                  LowCardinality(String),
    team                 LowCardinality(String),
    project              LowCardinality(String),
    cost_centre          LowCardinality(String),
    model                LowCardinality(String),
    key_id               String,
    event_id             String,
    node                 String,
    gpu_uuid             String,
    price_id             String,
    prompt_tokens        UInt64,
    cached_prompt_tokens UInt64,
    completion_tokens    UInt64,
    window_tokens        UInt64,
    gpu_seconds          Decimal(38, 9),
    utilization_pct      Float64,
    cost                 Decimal(38, 9),
    currency             LowCardinality(String),
    version              UInt64,
    is_deleted           UInt8 DEFAULT 0
)
ENGINE = ReplacingMergeTree(version, is_deleted)
PARTITION BY toYYYYMM(event_time)
ORDER BY (toDate(event_time), line_id);
