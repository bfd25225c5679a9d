-- Issue 13 (part): what a million tokens costs, self-hosted vs API.
-- Each usage event carries what the same tokens would have cost on the API its model would replace
-- (the reference price in force at the request's time; an API model is its own equivalent).

ALTER TABLE {db}.usage_events
    ADD COLUMN IF NOT EXISTS api_equivalent_cost Nullable(Decimal(38, 9)) COMMENT 'the same tokens at the API equivalent''s price in force at request time (NULL: no equivalent)' AFTER cost,
    ADD COLUMN IF NOT EXISTS api_equivalent_price_id String DEFAULT '' COMMENT 'the price version that API-equivalent cost used' AFTER api_equivalent_cost;

-- Unit costs per day, org, team, project and LLM, on two bases:
--   usage_cost      = API lines + GPU token shares (the busy part only);
--   allocation_cost = usage_cost + the idle of the GPU windows those tokens ran on, spread by share_tokens / window_tokens
--                     (the same whatever worker.idle_policy placed the idle lines on; rounded toward zero to 9 places).
-- Per-million figures are NULL where there are no tokens (never a division by zero).
CREATE VIEW IF NOT EXISTS {db}.unit_costs_daily AS
WITH
    shares AS (
        SELECT gpu_uuid, event_time, org, team, project, model, currency, share_tokens, window_tokens
        FROM {db}.ledger FINAL WHERE kind = 'gpu' AND basis = 'tokens' AND window_tokens > 0
    ),
    window_idle AS (
        SELECT gpu_uuid, event_time, sum(cost) AS idle_cost
        FROM {db}.ledger FINAL WHERE kind = 'idle' AND basis != 'mig-free' GROUP BY gpu_uuid, event_time
    ),
    attributed AS (
        SELECT toDate(s.event_time) AS day, s.org AS org, s.team AS team, s.project AS project, s.model AS model, s.currency AS currency,
               sum(i.idle_cost * s.share_tokens / s.window_tokens) AS idle_cost,
               uniqExact(toStartOfHour(s.event_time)) AS serving_hours
        FROM shares AS s INNER JOIN window_idle AS i ON i.gpu_uuid = s.gpu_uuid AND i.event_time = s.event_time
        GROUP BY day, org, team, project, model, currency
    ),
    direct AS (
        SELECT toDate(event_time) AS day, org, team, project, model, currency,
               sum(prompt_tokens + completion_tokens) AS tokens,
               sumIf(cost, kind = 'api') AS api_cost,
               sumIf(cost, kind = 'gpu') AS gpu_usage_cost
        FROM {db}.ledger FINAL WHERE kind = 'api' OR (kind = 'gpu' AND basis = 'tokens')
        GROUP BY day, org, team, project, model, currency
    )
SELECT
    d.day AS day, d.org AS org, d.team AS team, d.project AS project, d.model AS llm_model, d.currency AS currency,
    if(d.gpu_usage_cost > 0, 'self-hosted', 'api') AS hosting,
    d.tokens AS tokens,
    d.api_cost + d.gpu_usage_cost AS usage_cost,
    d.api_cost + d.gpu_usage_cost + ifNull(a.idle_cost, toDecimal128(0, 9)) AS allocation_cost,
    if(d.tokens = 0, NULL, (d.api_cost + d.gpu_usage_cost) * 1000000 / d.tokens) AS usd_per_mtok_usage,
    if(d.tokens = 0, NULL, (d.api_cost + d.gpu_usage_cost + ifNull(a.idle_cost, toDecimal128(0, 9))) * 1000000 / d.tokens) AS usd_per_mtok_allocation,
    ifNull(a.serving_hours, 0) AS serving_hours
FROM direct AS d LEFT JOIN attributed AS a ON a.day = d.day AND a.org = d.org AND a.team = d.team AND a.project = d.project AND a.model = d.model AND a.currency = d.currency;

-- Self-hosted vs API per day, org, team, project and LLM: what the tokens cost on both bases next to what the
-- same tokens would have cost on the API the model would replace.
--   allocation_to_api_ratio    = allocation_cost / api_equivalent_cost (below 1: self-hosting is cheaper);
--   break_even_tokens_per_hour = the hourly volume at which the GPUs' hourly cost equals the API bill for it:
--                                (allocation_cost / serving_hours) / (api_equivalent_cost / tokens);
--   headroom                   = observed tokens per serving hour / break-even = api_equivalent_cost / allocation_cost.
-- An API model is its own equivalent (ratio 1). Requests of a model without an equivalent are counted, not priced.
CREATE VIEW IF NOT EXISTS {db}.self_hosted_vs_api_daily AS
WITH eq AS (
    SELECT toDate(event_time) AS day, org, team, project, model,
           sum(api_equivalent_cost) AS equivalent_cost,
           countIf(isNull(api_equivalent_cost)) AS without_equivalent,
           count() AS request_count
    FROM {db}.usage_events FINAL WHERE priced_as IN ('api', 'gpu')
    GROUP BY day, org, team, project, model
)
SELECT
    u.day AS day, u.org AS org, u.team AS team, u.project AS project, u.llm_model AS llm_model, u.currency AS currency, u.hosting AS hosting,
    u.tokens AS tokens, u.usage_cost AS usage_cost, u.allocation_cost AS allocation_cost, u.serving_hours AS serving_hours,
    e.equivalent_cost AS api_equivalent_cost, e.request_count AS requests, e.without_equivalent AS requests_without_equivalent,
    if(e.equivalent_cost > 0, u.allocation_cost / e.equivalent_cost, NULL) AS allocation_to_api_ratio,
    if(e.equivalent_cost > 0 AND u.serving_hours > 0, u.allocation_cost * u.tokens / e.equivalent_cost / u.serving_hours, NULL) AS break_even_tokens_per_hour,
    if(u.allocation_cost > 0 AND e.equivalent_cost > 0, e.equivalent_cost / u.allocation_cost, NULL) AS headroom
FROM {db}.unit_costs_daily AS u
LEFT JOIN eq AS e ON e.day = u.day AND e.org = u.org AND e.team = u.team AND e.project = u.project AND e.model = u.llm_model;
