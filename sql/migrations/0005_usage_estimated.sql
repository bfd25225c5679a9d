-- InferenceUsage v3: whether the token counts are the backend's or the gateway's estimate
-- (a stream cut short on an external API that never sent its usage). Older rows: false.

ALTER TABLE {db}.usage_events
    ADD COLUMN IF NOT EXISTS usage_estimated Bool DEFAULT false
    COMMENT 'tokens estimated by the gateway: the backend never reported usage (stream cut short on an external API)'
    AFTER completion_tokens;
