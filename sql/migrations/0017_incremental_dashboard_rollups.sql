-- Issue 15 (part): migration 0015's dashboard rollups kept by the incremental pass (streams.store.rollups), not by
-- refreshable views re-reading the ledger every few seconds. The pages read the same names and columns:
-- - gpu_daily: a view over gpu_days, gpu_hourly (migration 0016) summed by reporting-zone day for the days that changed;
-- - serving_hours: a view over unit_costs_hourly (the hours with a GPU token share);
-- - self_hosted_vs_api_rollup: a view over self_hosted_vs_api_days, which the pass recomputes for the UTC days that
--   changed with self_hosted_vs_api_daily's logic over unit_costs_hourly and usage_hourly (its joins pair lines of the
--   same GPU window and rows of the same UTC day, so the hourly parts sum to the same figures);
-- - gpu_utilization_hourly: a view over gpu_utilization_hours, whose dirty hours each pass replaces (a mean of floats and
--   a set of orgs are not sums), read FINAL.
-- The watermark is reset so the next pass fills the new tables from history.

DROP VIEW IF EXISTS {db}.gpu_daily_refresh;

DROP VIEW IF EXISTS {db}.gpu_utilization_hourly_refresh;

DROP VIEW IF EXISTS {db}.self_hosted_vs_api_rollup_refresh;

DROP VIEW IF EXISTS {db}.serving_hours_refresh;

DROP TABLE IF EXISTS {db}.gpu_daily;

DROP TABLE IF EXISTS {db}.gpu_utilization_hourly;

DROP TABLE IF EXISTS {db}.self_hosted_vs_api_rollup;

DROP TABLE IF EXISTS {db}.serving_hours;

-- The pass's scratch: the dirty hours' ledger lines, read from `ledger FINAL` once per chunk of hours for every journal.
CREATE TABLE IF NOT EXISTS {db}.rollup_lines
(
    event_time DateTime64(6, 'UTC'), org LowCardinality(String), team LowCardinality(String), project LowCardinality(String),
    cost_centre LowCardinality(String), key_id String, model LowCardinality(String), kind LowCardinality(String),
    basis LowCardinality(String), currency LowCardinality(String), cost Decimal(38, 9), prompt_tokens UInt64, completion_tokens UInt64,
    gpu_seconds Decimal(38, 9), gpu_model LowCardinality(String), node String, gpu_uuid String, idle_policy LowCardinality(String),
    workload String, share_tokens UInt64, window_tokens UInt64, utilization_pct Float64
)
ENGINE = Memory
COMMENT 'scratch of the rollup pass (streams.store.rollups), empty between passes';

CREATE TABLE IF NOT EXISTS {db}.unit_costs_hourly
(
    hour DateTime('UTC'), org LowCardinality(String), team LowCardinality(String), project LowCardinality(String),
    model LowCardinality(String) COMMENT 'the LLM', currency LowCardinality(String),
    tokens Int64, api_cost Decimal(38, 9), gpu_usage_cost Decimal(38, 9) COMMENT 'GPU token shares (the busy part)',
    idle_cost Decimal(38, 9) COMMENT 'idle of the windows the shares ran on, spread by share_tokens / window_tokens',
    served Int64 COMMENT '1: the hour has a share with its window''s idle (a serving hour of unit_costs_daily)',
    lines Int64 COMMENT 'API lines and token shares', token_lines Int64 COMMENT 'token shares'
)
ENGINE = SummingMergeTree((tokens, api_cost, gpu_usage_cost, idle_cost, served, lines, token_lines))
ORDER BY (hour, org, model, team, project, currency)
COMMENT 'deltas: always read with sum() ... GROUP BY';

CREATE TABLE IF NOT EXISTS {db}.gpu_utilization_hours
(
    hour DateTime('UTC'), node String, gpu_uuid String, utilization_sum Float64, windows UInt64, orgs Array(String),
    version UInt64, is_deleted UInt8
)
ENGINE = ReplacingMergeTree(version, is_deleted) ORDER BY (hour, node, gpu_uuid)
COMMENT 'read FINAL: each pass replaces the hours that changed';

CREATE VIEW IF NOT EXISTS {db}.gpu_utilization_hourly AS
SELECT hour, node, gpu_uuid, utilization_sum, windows, orgs FROM {db}.gpu_utilization_hours FINAL;

-- gpu_hourly per reporting-zone day (the GPUs page reads a month of days, not of hours), recomputed for the days that changed.
CREATE TABLE IF NOT EXISTS {db}.gpu_days
(
    day Date COMMENT 'in the reporting time zone ({reporting_timezone})', node String, gpu_uuid String, gpu_model LowCardinality(String),
    kind LowCardinality(String), basis LowCardinality(String), idle_policy LowCardinality(String), workload String,
    org LowCardinality(String), team LowCardinality(String), project LowCardinality(String), currency LowCardinality(String),
    lines Int64, gpu_seconds Decimal(38, 9), cost Decimal(38, 9)
)
ENGINE = SummingMergeTree((lines, gpu_seconds, cost))
ORDER BY (day, org, node, gpu_uuid, kind, basis, team, project, currency, gpu_model, idle_policy, workload)
COMMENT 'deltas: always read with sum() ... GROUP BY (or through gpu_daily)';

CREATE VIEW IF NOT EXISTS {db}.gpu_daily AS
SELECT day, node, gpu_uuid, gpu_model, kind, basis, idle_policy, workload, org, team, project, currency,
       sum(lines) AS lines, sum(gpu_seconds) AS gpu_seconds, sum(cost) AS cost
FROM {db}.gpu_days
GROUP BY day, node, gpu_uuid, gpu_model, kind, basis, idle_policy, workload, org, team, project, currency
HAVING lines != 0;

CREATE VIEW IF NOT EXISTS {db}.serving_hours AS
SELECT hour, org, team, project, model AS llm_model, currency FROM {db}.unit_costs_hourly
GROUP BY hour, org, team, project, llm_model, currency HAVING sum(token_lines) != 0;

-- self_hosted_vs_api_daily's rows per UTC day, recomputed by the pass for the days its hourly parts changed (deltas).
CREATE TABLE IF NOT EXISTS {db}.self_hosted_vs_api_days
(
    day Date, org LowCardinality(String), team LowCardinality(String), project LowCardinality(String),
    llm_model LowCardinality(String), currency LowCardinality(String), hosting LowCardinality(String),
    tokens Int64, usage_cost Decimal(38, 9), allocation_cost Decimal(38, 9), serving_hours Int64,
    equivalent_cost Decimal(38, 9), requests Int64, requests_without_equivalent Int64, rows Int64
)
ENGINE = SummingMergeTree((tokens, usage_cost, allocation_cost, serving_hours, equivalent_cost, requests, requests_without_equivalent, rows))
ORDER BY (day, org, llm_model, team, project, currency, hosting)
COMMENT 'deltas: always read with sum() ... GROUP BY (or through self_hosted_vs_api_rollup)';

CREATE VIEW IF NOT EXISTS {db}.self_hosted_vs_api_rollup AS
SELECT day, org, team, project, llm_model, currency, hosting, toUInt64(t) AS tokens, uc AS usage_cost, ac AS allocation_cost,
       toUInt64(sh) AS serving_hours, if(r - w = 0, NULL, ec) AS api_equivalent_cost, toUInt64(r) AS requests,
       toUInt64(w) AS requests_without_equivalent
FROM
(
    SELECT day, org, team, project, llm_model, currency, hosting, sum(tokens) AS t, sum(usage_cost) AS uc, sum(allocation_cost) AS ac,
           sum(serving_hours) AS sh, sum(equivalent_cost) AS ec, sum(requests) AS r, sum(requests_without_equivalent) AS w
    FROM {db}.self_hosted_vs_api_days GROUP BY day, org, team, project, llm_model, currency, hosting HAVING sum(rows) != 0
);

INSERT INTO {db}.rollup_state (name, watermark, timezone)
SELECT name, toDateTime64(0, 6, 'UTC'), timezone FROM {db}.rollup_state FINAL WHERE name = 'spend';
