-- Issue 9: every GPU-second booked to whoever used it, exactly once.
-- GpuSample v2 (MIG parent, profile, slices); ledger lines that keep their full inputs
-- (workload, split basis, idle policy, MIG, late adjustments, share numerator);
-- skip indexes so the allocator finds rows ingested since its last pass without reading history.

ALTER TABLE {db}.gpu_samples
    ADD COLUMN IF NOT EXISTS mig_parent_uuid String DEFAULT '' COMMENT 'MIG instance: the physical GPU it is carved from' AFTER mig_instance,
    ADD COLUMN IF NOT EXISTS mig_profile LowCardinality(String) DEFAULT '' COMMENT 'MIG instance profile, e.g. 3g.40gb' AFTER mig_parent_uuid,
    ADD COLUMN IF NOT EXISTS mig_slices UInt8 DEFAULT 0 COMMENT 'compute slices of the MIG instance' AFTER mig_profile,
    ADD COLUMN IF NOT EXISTS mig_parent_slices UInt8 DEFAULT 0 COMMENT 'compute slices of the whole parent GPU' AFTER mig_slices,
    ADD INDEX IF NOT EXISTS ingested_at_minmax ingested_at TYPE minmax GRANULARITY 1;

ALTER TABLE {db}.gpu_samples MATERIALIZE INDEX ingested_at_minmax;

-- The allocator finds a parent GPU's MIG instances by mig_parent_uuid (not in the primary key).
ALTER TABLE {db}.gpu_samples ADD INDEX IF NOT EXISTS mig_parent_bloom mig_parent_uuid TYPE bloom_filter GRANULARITY 4;

ALTER TABLE {db}.gpu_samples MATERIALIZE INDEX mig_parent_bloom;

ALTER TABLE {db}.usage_events
    ADD INDEX IF NOT EXISTS ingested_at_minmax ingested_at TYPE minmax GRANULARITY 1;

ALTER TABLE {db}.usage_events MATERIALIZE INDEX ingested_at_minmax;

ALTER TABLE {db}.ledger
    ADD COLUMN IF NOT EXISTS share_tokens UInt64 DEFAULT 0 COMMENT 'the group''s tokens on this GPU in the window: the share''s numerator (window_tokens is the denominator, neither sums across GPUs)' AFTER window_tokens,
    ADD COLUMN IF NOT EXISTS gpu_model LowCardinality(String) DEFAULT '' COMMENT 'GPU-derived lines: the GPU model the window was priced as (model holds the LLM on token shares)',
    ADD COLUMN IF NOT EXISTS workload String DEFAULT '' COMMENT 'pod (namespace/pod) or host process behind a workload or idle line',
    ADD COLUMN IF NOT EXISTS basis LowCardinality(String) DEFAULT '' COMMENT 'tokens | sm | memory | equal | allocation | remainder | mig-free',
    ADD COLUMN IF NOT EXISTS idle_policy LowCardinality(String) DEFAULT '' COMMENT 'workload | node | callers',
    ADD COLUMN IF NOT EXISTS mig_profile LowCardinality(String) DEFAULT '',
    ADD COLUMN IF NOT EXISTS parent_gpu_uuid String DEFAULT '' COMMENT 'MIG: the physical GPU',
    ADD COLUMN IF NOT EXISTS adjusts_line_id String DEFAULT '' COMMENT 'adjustment lines: the line of a closed window they correct',
    ADD COLUMN IF NOT EXISTS adjusts_window Nullable(DateTime64(6, 'UTC')) COMMENT 'adjustment lines: that window''s start';

ALTER TABLE {db}.ledger COMMENT COLUMN kind 'api | gpu | idle | adjustment';

ALTER TABLE {db}.ledger COMMENT COLUMN prompt_tokens 'counted once per request: on GPU lines only the request''s first GPU carries its tokens';

-- The analyst's view gains the adjustments booked for closed windows.
DROP VIEW IF EXISTS {db}.spend_by_org_daily;

CREATE VIEW {db}.spend_by_org_daily AS
SELECT
    day, org, team, project, model, currency,
    sumIf(cost, kind = 'api')        AS api_cost,
    sumIf(cost, kind = 'gpu')        AS gpu_cost,
    sumIf(cost, kind = 'idle')       AS idle_cost,
    sumIf(cost, kind = 'adjustment') AS adjustment_cost,
    sum(cost)                        AS total_cost,
    sum(prompt_tokens + completion_tokens) AS tokens
FROM {db}.spend_daily
GROUP BY day, org, team, project, model, currency;
