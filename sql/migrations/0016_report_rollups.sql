-- Issue 15 (part): `gpuledger report` reads rollups, not `usage_events FINAL` and `ledger FINAL` over all history.
-- Two more hourly delta journals kept by the same incremental pass as spend_hourly (streams.store.rollups):
-- - usage_hourly: the usage events (each once: recomputed from `usage_events FINAL`, deduplicated by event id) per
--   hour and group: the report's token counts, and the requests and API-equivalent costs of the self-hosted vs API
--   comparison (migration 0017). Its dirty hours come from usage_events.ingested_at (minmax index, migration 0006).
--   A usage event removed by the raw-retention TTL stays counted here (the journal keeps history the raw table drops).
-- - gpu_hourly: every ledger line but API calls per hour, GPU and what it was booked to (the report's GPU spend by
--   team; the GPUs page's gpu_daily, migration 0017).
-- Both are read with sum() ... GROUP BY (deltas); the watermark is reset so the next pass fills them from history.

CREATE TABLE IF NOT EXISTS {db}.usage_hourly
(
    hour DateTime('UTC'), org LowCardinality(String), team LowCardinality(String), project LowCardinality(String),
    model LowCardinality(String), priced_as LowCardinality(String),
    tokens Int64 COMMENT 'prompt + completion tokens', requests Int64,
    equivalent_cost Decimal(38, 9) COMMENT 'sum of api_equivalent_cost where there is one',
    requests_without_equivalent Int64 COMMENT 'requests whose api_equivalent_cost is NULL'
)
ENGINE = SummingMergeTree((tokens, requests, equivalent_cost, requests_without_equivalent))
ORDER BY (hour, org, model, team, project, priced_as)
COMMENT 'deltas: always read with sum() ... GROUP BY';

CREATE TABLE IF NOT EXISTS {db}.gpu_hourly
(
    hour DateTime('UTC'), day Date COMMENT 'in the reporting time zone ({reporting_timezone})', node String, gpu_uuid String,
    gpu_model LowCardinality(String), kind LowCardinality(String), basis LowCardinality(String), idle_policy LowCardinality(String),
    workload String, org LowCardinality(String), team LowCardinality(String), project LowCardinality(String),
    currency LowCardinality(String), lines Int64, gpu_seconds Decimal(38, 9), cost Decimal(38, 9)
)
ENGINE = SummingMergeTree((lines, gpu_seconds, cost))
ORDER BY (hour, org, team, node, gpu_uuid, kind, basis, project, currency, gpu_model, idle_policy, workload, day)
COMMENT 'deltas: always read with sum() ... GROUP BY';

INSERT INTO {db}.rollup_state (name, watermark, timezone)
SELECT name, toDateTime64(0, 6, 'UTC'), timezone FROM {db}.rollup_state FINAL WHERE name = 'spend';
