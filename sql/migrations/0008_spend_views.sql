-- Issue 13 (part): spend rollups an analyst can sum and divide safely.
-- - the LLM and the GPU model in separate columns (llm_model is empty on idle and workload lines,
--   gpu_model empty on API lines), cost_centre and key_id kept;
-- - days in the reporting time zone (setting `reporting_timezone`, fixed when this migration is applied);
-- - refreshable views write TO named tables, so SHOW TABLES lists no `.inner_id.*` tables;
-- - the analyst's view has per-token figures that are NULL, never a division by zero, without tokens.

DROP VIEW IF EXISTS {db}.spend_by_org_daily;

DROP VIEW IF EXISTS {db}.spend_hourly;

DROP VIEW IF EXISTS {db}.spend_daily;

CREATE TABLE IF NOT EXISTS {db}.spend_hourly
(
    hour DateTime('UTC'), org LowCardinality(String), team LowCardinality(String), project LowCardinality(String),
    cost_centre LowCardinality(String), key_id String, llm_model LowCardinality(String), gpu_model LowCardinality(String),
    kind LowCardinality(String), currency LowCardinality(String),
    cost Decimal(38, 9), prompt_tokens UInt64, completion_tokens UInt64, gpu_seconds Decimal(38, 9), lines UInt64
)
ENGINE = MergeTree ORDER BY (hour, org, team, project, kind);

CREATE TABLE IF NOT EXISTS {db}.spend_daily
(
    day Date COMMENT 'in the reporting time zone ({reporting_timezone})', org LowCardinality(String), team LowCardinality(String),
    project LowCardinality(String), cost_centre LowCardinality(String), key_id String, llm_model LowCardinality(String),
    gpu_model LowCardinality(String), kind LowCardinality(String), currency LowCardinality(String),
    cost Decimal(38, 9), prompt_tokens UInt64, completion_tokens UInt64, gpu_seconds Decimal(38, 9), lines UInt64
)
ENGINE = MergeTree ORDER BY (day, org, team, project, kind);

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.spend_hourly_refresh
REFRESH EVERY {rollup_refresh_seconds} SECOND TO {db}.spend_hourly
AS SELECT
    toStartOfHour(event_time) AS hour, org, team, project, cost_centre, key_id,
    if(kind = 'api' OR basis = 'tokens', model, '') AS llm_model, gpu_model, kind, currency,
    sum(cost) AS cost, sum(prompt_tokens) AS prompt_tokens, sum(completion_tokens) AS completion_tokens,
    sum(gpu_seconds) AS gpu_seconds, count() AS lines
FROM {db}.ledger FINAL
GROUP BY hour, org, team, project, cost_centre, key_id, llm_model, gpu_model, kind, currency;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.spend_daily_refresh
REFRESH EVERY {rollup_refresh_seconds} SECOND TO {db}.spend_daily
AS SELECT
    toDate(event_time, '{reporting_timezone}') AS day, org, team, project, cost_centre, key_id,
    if(kind = 'api' OR basis = 'tokens', model, '') AS llm_model, gpu_model, kind, currency,
    sum(cost) AS cost, sum(prompt_tokens) AS prompt_tokens, sum(completion_tokens) AS completion_tokens,
    sum(gpu_seconds) AS gpu_seconds, count() AS lines
FROM {db}.ledger FINAL
GROUP BY day, org, team, project, cost_centre, key_id, llm_model, gpu_model, kind, currency;

-- The analyst's view: spend by day, org, team, project, cost centre and model, split by cost kind.
CREATE VIEW IF NOT EXISTS {db}.spend_by_org_daily AS
SELECT
    day, org, team, project, cost_centre, llm_model, gpu_model,
    if(llm_model != '', llm_model, gpu_model) AS model,  -- one name per row for drill-downs: the LLM, else the GPU
    currency,
    sumIf(cost, kind = 'api')        AS api_cost,
    sumIf(cost, kind = 'gpu')        AS gpu_cost,
    sumIf(cost, kind = 'idle')       AS idle_cost,
    sumIf(cost, kind = 'adjustment') AS adjustment_cost,
    sum(cost)                        AS total_cost,
    sum(prompt_tokens + completion_tokens) AS tokens,
    if(tokens = 0, NULL, total_cost * 1000000 / tokens) AS cost_per_mtok
FROM {db}.spend_daily
GROUP BY day, org, team, project, cost_centre, llm_model, gpu_model, currency;
