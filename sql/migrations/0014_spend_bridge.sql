-- Issue 13 (part): the spend bridge as views, month to month and week to week, by org (and by org and model).
-- The same rules as `gpuledger trends` (gpuledger/trends.py), read from the `spend_daily` rollup (days, and so
-- months and Monday weeks, in the reporting time zone {reporting_timezone}):
--   token lines are API lines and GPU token shares (llm_model set), each request's tokens counted once;
--   every other line (GPU workloads, idle, late adjustments) is spend without tokens, `llm_model` = '' here;
--   a period is bridged against the calendar period before it (a period without spend counts as zero, never skipped);
--   a row exists for each period with spend in it or in the period before, up to the current period.
-- Rounding: each effect is rounded once, half-even to 9 places, from the exact quotient
-- (Decimal256 with 30 places, exact for fewer than 5e20 tokens), as trends.py's div_half_even does.

CREATE VIEW IF NOT EXISTS {db}.spend_bridge_models AS
SELECT
    period_kind, period, previous_period, org, currency, llm_model,
    m_tokens_before AS tokens_before, m_tokens_after AS tokens_after,
    m_spend_before AS spend_before, m_spend_after AS spend_after,
    if(m_tokens_before = 0, NULL, toDecimal128(roundBankers(toDecimal256(m_spend_before, 30) * 1000000 / m_tokens_before, 9), 9)) AS usd_per_mtok_before,
    if(m_tokens_after = 0, NULL, toDecimal128(roundBankers(toDecimal256(m_spend_after, 30) * 1000000 / m_tokens_after, 9), 9)) AS usd_per_mtok_after,
    -- this model's part of the price effect: q1 x (u1 - u0) = S1 - q1 x S0 / Q0 (models used, with tokens, in both periods)
    if(m_tokens_before > 0 AND m_tokens_after > 0 AND llm_model != '',
       m_spend_after - toDecimal128(roundBankers(toDecimal256(m_spend_before, 30) * m_tokens_after / m_tokens_before, 9), 9),
       toDecimal128(0, 9)) AS price_effect
FROM
(
    SELECT period_kind, period, any(previous) AS previous_period, org, currency, llm_model,
           sumIf(tokens, side = 'before') AS m_tokens_before, sumIf(tokens, side = 'after') AS m_tokens_after,
           sumIf(spend, side = 'before') AS m_spend_before, sumIf(spend, side = 'after') AS m_spend_after
    FROM
    (
        SELECT kp.1 AS period_kind, s.1 AS side, s.2 AS period, s.3 AS previous, org, currency, model_key AS llm_model,
               line_tokens AS tokens, cost AS spend,
               if(kp.1 = 'month', toStartOfMonth(toDate(now(), '{reporting_timezone}')), toMonday(toDate(now(), '{reporting_timezone}'))) AS current_period
        FROM
        (
            SELECT day, org, currency, cost,
                   kind IN ('api', 'gpu') AND llm_model != '' AS token_line,
                   if(token_line, llm_model, '') AS model_key,
                   if(token_line, prompt_tokens + completion_tokens, 0) AS line_tokens
            FROM {db}.spend_daily
        )
        ARRAY JOIN [('month', toStartOfMonth(day), addMonths(toStartOfMonth(day), 1), subtractMonths(toStartOfMonth(day), 1)),
                    ('week', toMonday(day), addWeeks(toMonday(day), 1), subtractWeeks(toMonday(day), 1))] AS kp
        -- each day's spend is the `after` side of its own period and the `before` side of the next one
        ARRAY JOIN [('after', kp.2, kp.4), ('before', kp.3, kp.2)] AS s
        WHERE period <= current_period
    )
    GROUP BY period_kind, period, org, currency, llm_model
);

CREATE VIEW IF NOT EXISTS {db}.spend_bridge AS
SELECT
    period_kind, period, previous_period, org, currency,
    b_spend_before AS spend_before, b_spend_after AS spend_after, b_spend_after - b_spend_before AS change,
    b_tokens_before AS tokens_before, b_tokens_after AS tokens_after,
    -- volume = (Q1 - Q0) x S0 / Q0, all of the token spend when the period before had no tokens
    if(b_tokens_before > 0,
       toDecimal128(roundBankers(toDecimal256(b_token_spend_before, 30) * (toInt64(b_tokens_after) - toInt64(b_tokens_before)) / b_tokens_before, 9), 9),
       b_token_spend_after - b_token_spend_before) AS volume,
    b_price AS price,
    b_token_spend_after - b_token_spend_before - volume - price AS mix,  -- the exact residual
    b_other_after - b_other_before AS other,
    if(b_tokens_before = 0, NULL, toDecimal128(roundBankers(toDecimal256(b_token_spend_before, 30) * 1000000 / b_tokens_before, 9), 9)) AS usd_per_mtok_before,
    if(b_tokens_after = 0, NULL, toDecimal128(roundBankers(toDecimal256(b_token_spend_after, 30) * 1000000 / b_tokens_after, 9), 9)) AS usd_per_mtok_after,
    ifNull(usd_per_mtok_after < usd_per_mtok_before, 0) AND change > 0 AS jevons  -- unit cost fell while total spend rose
FROM
(
    SELECT period_kind, period, any(previous_period) AS previous_period, org, currency,
           sum(spend_before) AS b_spend_before, sum(spend_after) AS b_spend_after,
           sum(tokens_before) AS b_tokens_before, sum(tokens_after) AS b_tokens_after,
           sumIf(spend_before, llm_model != '') AS b_token_spend_before, sumIf(spend_after, llm_model != '') AS b_token_spend_after,
           sumIf(spend_before, llm_model = '') AS b_other_before, sumIf(spend_after, llm_model = '') AS b_other_after,
           sum(price_effect) AS b_price
    FROM {db}.spend_bridge_models
    GROUP BY period_kind, period, org, currency
);
