-- Raw events, enriched by the stream worker. ReplacingMergeTree keyed by the event's own
-- identity: a replayed or retried event replaces itself instead of counting twice.
-- Read them with FINAL (or through the views) to see each event once.

CREATE TABLE IF NOT EXISTS {db}.gpu_samples
(
    sample_id              String,
    node                   LowCardinality(String),
    gpu_uuid               String,
    gpu_index              UInt16,
    gpu_model              LowCardinality(String),
    mig_instance           Nullable(String),
    interval_start         DateTime64(6, 'UTC'),
    interval_end           DateTime64(6, 'UTC'),
    utilization_pct        Float64,
    memory_utilization_pct Float64,
    memory_used_bytes      UInt64,
    memory_total_bytes     UInt64,
    power_watts            Float64,
    energy_joules          Float64,
    sm_clock_mhz           UInt32,
    temperature_c          Int32,
    xid_errors             UInt64,
    ecc_errors_corrected   UInt64,
    ecc_errors_uncorrected UInt64,
    processes              String CODEC(ZSTD(3)) COMMENT 'JSON array of GpuProcess',
    owner_org              LowCardinality(String),
    source_partition       UInt32,
    source_offset          UInt64,
    ingested_at            DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(ingested_at)
PARTITION BY toYYYYMM(interval_start)
ORDER BY (gpu_uuid, interval_start)
TTL toDateTime(interval_start) + INTERVAL {raw_retention_days} DAY;

CREATE TABLE IF NOT EXISTS {db}.usage_events
(
    event_id             String,
    request_start        DateTime64(6, 'UTC'),
    event_time           DateTime64(6, 'UTC') COMMENT 'request_end: the instant that picks the price',
    key_id               String,
    model                LowCardinality(String),
    backend              LowCardinality(String),
    deployment           LowCardinality(String),
    endpoint             LowCardinality(String),
    node                 String,
    gpu_uuids            Array(String),
    prompt_tokens        UInt64,
    cached_prompt_tokens UInt64,
    completion_tokens    UInt64,
    ttft_ms              Nullable(Float64),
    latency_ms           Float64,
    status               LowCardinality(String),
    org                  LowCardinality(String),
    team                 LowCardinality(String),
    project              LowCardinality(String),
    cost_centre          LowCardinality(String),
    priced_as            LowCardinality(String) COMMENT 'api = per-token price, gpu = share of its GPU window, unpriced = no price found',
    price_id             String,
    cost                 Decimal(38, 9) COMMENT 'api cost of this request (gpu cost is on the ledger window lines)',
    source_partition     UInt32,
    source_offset        UInt64,
    ingested_at          DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(ingested_at)
PARTITION BY toYYYYMM(event_time)
ORDER BY (toStartOfHour(event_time), event_id)
TTL toDateTime(event_time) + INTERVAL {raw_retention_days} DAY;
