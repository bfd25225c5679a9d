-- Hourly and daily rollups, recomputed from the deduplicated ledger by refreshable
-- materialized views: a rollup can never count a replayed line twice.

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.spend_hourly
REFRESH EVERY {rollup_refresh_seconds} SECOND
ENGINE = MergeTree ORDER BY (hour, org, team, project, model, kind)
AS SELECT
    toStartOfHour(event_time) AS hour,
    org, team, project, cost_centre, model, kind, currency,
    sum(cost) AS cost,
    sum(prompt_tokens) AS prompt_tokens,
    sum(completion_tokens) AS completion_tokens,
    sum(gpu_seconds) AS gpu_seconds,
    count() AS lines
FROM {db}.ledger FINAL
GROUP BY hour, org, team, project, cost_centre, model, kind, currency;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.spend_daily
REFRESH EVERY {rollup_refresh_seconds} SECOND
ENGINE = MergeTree ORDER BY (day, org, team, project, model, kind)
AS SELECT
    toDate(event_time) AS day,
    org, team, project, cost_centre, model, kind, currency,
    sum(cost) AS cost,
    sum(prompt_tokens) AS prompt_tokens,
    sum(completion_tokens) AS completion_tokens,
    sum(gpu_seconds) AS gpu_seconds,
    count() AS lines
FROM {db}.ledger FINAL
GROUP BY day, org, team, project, cost_centre, model, kind, currency;

-- The analyst's view: spend by org / team / project / model / day, split by cost kind.
CREATE VIEW IF NOT EXISTS {db}.spend_by_org_daily AS
SELECT
    day, org, team, project, model, currency,
    sumIf(cost, kind = 'api')  AS api_cost,
    sumIf(cost, kind = 'gpu')  AS gpu_cost,
    sumIf(cost, kind = 'idle') AS idle_cost,
    sum(cost)                  AS total_cost,
    sum(prompt_tokens + completion_tokens) AS tokens
FROM {db}.spend_daily
GROUP BY day, org, team, project, model, currency;
