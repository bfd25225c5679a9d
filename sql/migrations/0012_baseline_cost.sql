-- Issue 14 (routing savings): each request's counterfactual, priced by the worker next to its actual cost.
-- baseline_cost is the same tokens at the baseline model's token price in force at the request's time (API baselines);
-- NULL when the request has no baseline or its baseline has no token price (a self-hosted baseline: the savings views
-- price it at its allocation-basis cost per token, see 0021).

ALTER TABLE {db}.usage_events
    ADD COLUMN IF NOT EXISTS baseline_cost Nullable(Decimal(38, 9)) COMMENT 'the same tokens at the baseline model''s token price in force at request time (NULL: no baseline, or a self-hosted one)',
    ADD COLUMN IF NOT EXISTS baseline_price_id String DEFAULT '' COMMENT 'the price version baseline_cost used';
