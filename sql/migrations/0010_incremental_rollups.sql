-- Issue 15 (part): rollups maintained from what changed, never by rescanning history.
-- - every ledger row records when ClickHouse stored it (ingested_at, a minmax skip index), so a pass finds the
--   hours written since its last watermark without reading history (a replay, a restatement and a tombstone are
--   new rows, so their hours are found too);
-- - spend_hourly and spend_daily become journals of deltas (SummingMergeTree): a pass recomputes each dirty hour
--   from `ledger FINAL` and inserts (recomputed - what the rollup holds), so sum() over them is exact at every
--   moment and merges fold the deltas; tokens and lines are signed for that;
-- - spend_hourly gains `model` (the ledger's own, which budgets filter on) and `day` (in the reporting time zone,
--   so spend_daily is the sum of spend_hourly even in a zone with half-hour offsets);
-- - rollup_state holds the watermark of the last pass and the reporting time zone fixed at 0008.
-- The tables are rebuilt by the first pass after this migration (the worker's leader, or streams.store.rollups.maintain).

DROP VIEW IF EXISTS {db}.spend_hourly_refresh;

DROP VIEW IF EXISTS {db}.spend_daily_refresh;

DROP VIEW IF EXISTS {db}.spend_by_org_daily;

DROP TABLE IF EXISTS {db}.spend_hourly;

DROP TABLE IF EXISTS {db}.spend_daily;

ALTER TABLE {db}.ledger
    ADD COLUMN IF NOT EXISTS ingested_at DateTime64(6, 'UTC') DEFAULT now64(6) COMMENT 'when ClickHouse stored this version of the line: rollup passes find changed hours by it',
    ADD INDEX IF NOT EXISTS ingested_at_minmax ingested_at TYPE minmax GRANULARITY 1;

ALTER TABLE {db}.ledger MATERIALIZE COLUMN ingested_at SETTINGS mutations_sync = 2;

ALTER TABLE {db}.ledger MATERIALIZE INDEX ingested_at_minmax SETTINGS mutations_sync = 2;

CREATE TABLE IF NOT EXISTS {db}.spend_hourly
(
    hour DateTime('UTC'), day Date COMMENT 'in the reporting time zone ({reporting_timezone})',
    org LowCardinality(String), team LowCardinality(String), project LowCardinality(String),
    cost_centre LowCardinality(String), key_id String, llm_model LowCardinality(String), gpu_model LowCardinality(String),
    model LowCardinality(String) COMMENT 'the ledger line''s model (LLM, or the GPU model on idle lines): what budgets filter on',
    kind LowCardinality(String), currency LowCardinality(String),
    cost Decimal(38, 9), prompt_tokens Int64, completion_tokens Int64, gpu_seconds Decimal(38, 9), lines Int64
)
ENGINE = SummingMergeTree((cost, prompt_tokens, completion_tokens, gpu_seconds, lines))
ORDER BY (hour, org, team, project, kind, currency, model, llm_model, gpu_model, cost_centre, key_id, day)
COMMENT 'deltas: always read with sum() ... GROUP BY';

CREATE TABLE IF NOT EXISTS {db}.spend_daily
(
    day Date COMMENT 'in the reporting time zone ({reporting_timezone})', org LowCardinality(String), team LowCardinality(String),
    project LowCardinality(String), cost_centre LowCardinality(String), key_id String, llm_model LowCardinality(String),
    gpu_model LowCardinality(String), kind LowCardinality(String), currency LowCardinality(String),
    cost Decimal(38, 9), prompt_tokens Int64, completion_tokens Int64, gpu_seconds Decimal(38, 9), lines Int64
)
ENGINE = SummingMergeTree((cost, prompt_tokens, completion_tokens, gpu_seconds, lines))
ORDER BY (day, org, team, project, kind, currency, llm_model, gpu_model, cost_centre, key_id)
COMMENT 'deltas: always read with sum() ... GROUP BY';

CREATE TABLE IF NOT EXISTS {db}.rollup_state
(
    name LowCardinality(String), watermark DateTime64(6, 'UTC') COMMENT 'ledger rows stored before this (less the overlap) are in the rollups',
    timezone String COMMENT 'reporting time zone of spend_hourly.day and spend_daily.day', updated_at DateTime64(6, 'UTC') DEFAULT now64(6)
)
ENGINE = ReplacingMergeTree(updated_at) ORDER BY name;

INSERT INTO {db}.rollup_state (name, watermark, timezone) VALUES ('spend', toDateTime64(0, 6, 'UTC'), '{reporting_timezone}');

-- The analyst's view, as in 0008 (it already sums, so it reads the deltas exactly); a group whose deltas
-- cancel out (not merged away yet) has no lines and is left out.
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
GROUP BY day, org, team, project, cost_centre, llm_model, gpu_model, currency
HAVING sum(lines) != 0;
