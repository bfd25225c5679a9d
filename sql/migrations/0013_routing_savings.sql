-- Issue 14 (routing savings): what tiering saved, per request and per day, alias (requested_model), rule, team and model.
-- Rules (README "Routing savings"):
--   actual cost         = the request's API cost (priced_as = 'api'), or for a self-hosted model its tokens at the
--                         model's allocation-basis rate (below);
--   counterfactual cost = baseline_cost (the baseline's token price in force at request time, priced by the worker), or
--                         for a self-hosted baseline its tokens at the baseline's allocation-basis rate;
--   savings             = counterfactual - actual (negative for escalations and fallbacks to a dearer model).
-- Allocation-basis rate of a self-hosted model: its allocation cost per million tokens on the request's UTC day,
-- all orgs together (sum(allocation_cost) * 1e6 / sum(tokens) over unit_costs_daily), else on the latest earlier day
-- it served tokens; a request's cost at that rate is tokens * rate / 1e6, rounded toward zero to 9 places.
-- A request whose actual or counterfactual cannot be priced (no price, no rate yet) is counted in `unpriced_requests`
-- and left out of the sums. Only requests with a baseline (gateway aliases with `baseline:`, or a model named directly) appear.

CREATE VIEW IF NOT EXISTS {db}.routing_savings_requests AS
WITH
    rates AS (
        SELECT day, llm_model AS model, sum(allocation_cost) * 1000000 / sum(tokens) AS per_mtok, 1 AS known
        FROM {db}.unit_costs_daily WHERE hosting = 'self-hosted' AND tokens > 0
        GROUP BY day, model
    ),
    requests AS (
        SELECT event_id, event_time, toDate(event_time) AS day, org, team, project, requested_model, route_rule, model, baseline_model,
               priced_as, price_id, cost, baseline_cost, baseline_price_id, prompt_tokens + completion_tokens AS tokens
        FROM {db}.usage_events FINAL WHERE baseline_model != ''
    ),
    with_actual AS (
        SELECT r.*, a.per_mtok AS model_per_mtok, a.known AS model_rate_known
        FROM requests AS r ASOF LEFT JOIN rates AS a ON a.model = r.model AND r.day >= a.day
    ),
    with_both AS (
        SELECT w.*, b.per_mtok AS baseline_per_mtok, b.known AS baseline_rate_known
        FROM with_actual AS w ASOF LEFT JOIN rates AS b ON b.model = w.baseline_model AND w.day >= b.day
    )
SELECT
    event_id, event_time, day, org, team, project, requested_model, route_rule, model, baseline_model, priced_as, tokens,
    multiIf(priced_as = 'api', toNullable(cost),
            priced_as = 'gpu' AND model_rate_known = 1, toNullable(tokens * model_per_mtok / 1000000), NULL) AS actual_cost,
    multiIf(isNotNull(baseline_cost), baseline_cost,
            baseline_rate_known = 1, toNullable(tokens * baseline_per_mtok / 1000000), NULL) AS counterfactual_cost,
    counterfactual_cost - actual_cost AS savings,
    if(isNotNull(baseline_cost), baseline_price_id, if(baseline_rate_known = 1, concat('allocation:', baseline_model), '')) AS counterfactual_basis
FROM with_both;

-- Per day, org, team, project, alias, rule, served model and baseline: sums an analyst can add up across any of them.
CREATE VIEW IF NOT EXISTS {db}.routing_savings_daily AS
SELECT
    r.day AS day, r.org AS org, r.team AS team, r.project AS project, r.requested_model AS alias, r.route_rule AS route_rule,
    r.model AS model, r.baseline_model AS baseline_model,
    count() AS requests,
    countIf(isNull(r.savings)) AS unpriced_requests,
    sumIf(r.tokens, isNotNull(r.savings)) AS tokens,
    sumIf(assumeNotNull(r.actual_cost), isNotNull(r.savings)) AS actual_cost,
    sumIf(assumeNotNull(r.counterfactual_cost), isNotNull(r.savings)) AS counterfactual_cost,
    sumIf(assumeNotNull(r.savings), isNotNull(r.savings)) AS savings
FROM {db}.routing_savings_requests AS r
GROUP BY day, org, team, project, alias, route_rule, model, baseline_model;
