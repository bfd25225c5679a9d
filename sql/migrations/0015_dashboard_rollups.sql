-- Issue 16 (part): narrow rollups the dashboard pages read instead of scanning the ledger (p95 <= 300 ms at 10M lines).
-- Like spend_hourly / spend_daily (migration 0008): recomputed from the deduplicated ledger by refreshable views writing
-- TO named tables, so a rollup can never count a replayed or re-derived line twice.

-- GPUs page: what each GPU's cost was booked to and on which basis, per day (reporting time zone {reporting_timezone}).
CREATE TABLE IF NOT EXISTS {db}.gpu_daily
(
    day Date, node String, gpu_uuid String, gpu_model LowCardinality(String), kind LowCardinality(String),
    basis LowCardinality(String), idle_policy LowCardinality(String), workload String, org LowCardinality(String),
    team LowCardinality(String), project LowCardinality(String), currency LowCardinality(String),
    lines UInt64, gpu_seconds Decimal(38, 9), cost Decimal(38, 9)
)
ENGINE = MergeTree ORDER BY (day, org, node, gpu_uuid);

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.gpu_daily_refresh
REFRESH EVERY {rollup_refresh_seconds} SECOND TO {db}.gpu_daily
AS SELECT
    toDate(event_time, '{reporting_timezone}') AS day, node, gpu_uuid, gpu_model, kind, basis, idle_policy, workload, org, team, project, currency,
    count() AS lines, sum(gpu_seconds) AS gpu_seconds, sum(cost) AS cost
FROM {db}.ledger FINAL
WHERE kind IN ('gpu', 'idle', 'adjustment')
GROUP BY day, node, gpu_uuid, gpu_model, kind, basis, idle_policy, workload, org, team, project, currency;

-- GPUs page heatmap: each GPU's utilization per hour = the mean over its windows of the window's utilization
-- (the highest any line of the window carries: every line of a window carries the GPU's figure), and the orgs
-- with lines on it that hour (an org-scoped viewer sees the GPUs its org used).
CREATE TABLE IF NOT EXISTS {db}.gpu_utilization_hourly
(
    hour DateTime('UTC'), node String, gpu_uuid String, utilization_sum Float64, windows UInt64, orgs Array(String)
)
ENGINE = MergeTree ORDER BY (hour, node, gpu_uuid);

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.gpu_utilization_hourly_refresh
REFRESH EVERY {rollup_refresh_seconds} SECOND TO {db}.gpu_utilization_hourly
AS SELECT toStartOfHour(window) AS hour, node, gpu_uuid, sum(u) AS utilization_sum, count() AS windows,
          arraySort(groupUniqArrayArray(window_orgs)) AS orgs
FROM
(
    SELECT node, gpu_uuid, event_time AS window, max(utilization_pct) AS u, groupUniqArray(toString(org)) AS window_orgs
    FROM {db}.ledger FINAL WHERE kind IN ('gpu', 'idle') AND gpu_uuid != ''
    GROUP BY node, gpu_uuid, window
)
GROUP BY hour, node, gpu_uuid;

-- Models and overview pages: the analyst views of migration 0007 kept as tables (the views join the ledger with itself
-- and the usage events; the pages read these copies, the CLI commands still read the live views).
CREATE TABLE IF NOT EXISTS {db}.self_hosted_vs_api_rollup
(
    day Date, org LowCardinality(String), team LowCardinality(String), project LowCardinality(String),
    llm_model LowCardinality(String), currency LowCardinality(String), hosting LowCardinality(String),
    tokens UInt64, usage_cost Decimal(38, 9), allocation_cost Decimal(38, 9), serving_hours UInt64,
    api_equivalent_cost Nullable(Decimal(38, 9)), requests UInt64, requests_without_equivalent UInt64
)
ENGINE = MergeTree ORDER BY (day, org, llm_model);

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.self_hosted_vs_api_rollup_refresh
REFRESH EVERY {rollup_refresh_seconds} SECOND TO {db}.self_hosted_vs_api_rollup
AS SELECT day, org, team, project, llm_model, currency, hosting, tokens, usage_cost, allocation_cost, serving_hours,
          api_equivalent_cost, ifNull(requests, 0) AS requests, ifNull(requests_without_equivalent, 0) AS requests_without_equivalent
FROM {db}.self_hosted_vs_api_daily;

-- The clock hours each group's LLM was served on its GPUs (break-even needs distinct hours over any range and grouping).
CREATE TABLE IF NOT EXISTS {db}.serving_hours
(
    hour DateTime('UTC'), org LowCardinality(String), team LowCardinality(String), project LowCardinality(String),
    llm_model LowCardinality(String), currency LowCardinality(String)
)
ENGINE = MergeTree ORDER BY (hour, org, llm_model);

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.serving_hours_refresh
REFRESH EVERY {rollup_refresh_seconds} SECOND TO {db}.serving_hours
AS SELECT DISTINCT toStartOfHour(event_time) AS hour, org, team, project, model AS llm_model, currency
FROM {db}.ledger FINAL WHERE kind = 'gpu' AND basis = 'tokens';
