-- Issue 14 (contract): what routing savings and cost per outcome need on each request (InferenceUsage v4).
-- requested_model is the alias the client asked for; `model` stays the model that served it.

ALTER TABLE {db}.usage_events
    ADD COLUMN IF NOT EXISTS requested_model LowCardinality(String) DEFAULT '' COMMENT 'the model or alias the client asked for (gateway), model is what served it' AFTER model,
    ADD COLUMN IF NOT EXISTS route_rule LowCardinality(String) DEFAULT '' COMMENT 'the routing rule that chose the backend: a rule name, default, fallback:<n> or forced',
    ADD COLUMN IF NOT EXISTS baseline_model LowCardinality(String) DEFAULT '' COMMENT 'the model the request would have gone to without tiering',
    ADD COLUMN IF NOT EXISTS client_request_id String DEFAULT '' COMMENT 'the client''s request id, for joining outcomes',
    ADD COLUMN IF NOT EXISTS trace_id String DEFAULT '' COMMENT 'W3C trace id, for joining outcomes',
    ADD COLUMN IF NOT EXISTS session_id String DEFAULT '' COMMENT 'the client''s session id, for joining outcomes';
