-- Issue 14: business outcomes and what their requests cost (README, "Cost per outcome").
-- Outcomes are stored as sent, and every join to requests and costs happens here, at read time, so
-- outcomes and requests may arrive in any order: an outcome stored before its requests has no cost
-- until they are stored, and then it has.

CREATE TABLE IF NOT EXISTS {db}.outcomes
(
    outcome_id       String,
    kind             LowCardinality(String) COMMENT 'what happened, e.g. ticket_resolved',
    org              LowCardinality(String),
    team             LowCardinality(String),
    project          LowCardinality(String),
    occurred_at      DateTime64(6, 'UTC'),
    success          Bool,
    value            Nullable(Decimal(38, 9)) COMMENT 'what the outcome is worth, in currency',
    currency         LowCardinality(String),
    request_ids      Array(String) COMMENT 'usage event ids or client request ids (x-request-id) of its requests',
    trace_id         String COMMENT 'W3C trace id shared by its requests',
    session_id       String COMMENT 'x-gpuledger-session-id shared by its requests',
    key_id           String COMMENT 'the gateway key that reported it',
    source_partition UInt32,
    source_offset    UInt64,
    ingested_at      DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(ingested_at)
ORDER BY outcome_id;

-- Links: each outcome's references to requests, one row per reference (link = request_id | trace | session).
CREATE VIEW IF NOT EXISTS {db}.outcome_links AS
SELECT outcome_id, kind, occurred_at, 'request_id' AS link, arrayJoin(request_ids) AS ref FROM {db}.outcomes FINAL
UNION ALL
SELECT outcome_id, kind, occurred_at, 'trace' AS link, trace_id AS ref FROM {db}.outcomes FINAL WHERE trace_id != ''
UNION ALL
SELECT outcome_id, kind, occurred_at, 'session' AS link, session_id AS ref FROM {db}.outcomes FINAL WHERE session_id != '';

-- Each request's cost on the usage basis: its API line (ledger kind api, by event_id), or for a self-hosted
-- request its token share of each GPU window it ran on: the token-share line of its caller group on that GPU
-- and window, times its tokens over the group's tokens there (share_tokens), rounded toward zero to 9 places.
-- The idle part of the windows is not in it (worker.idle_policy books idle to workloads, nodes or callers).
CREATE VIEW IF NOT EXISTS {db}.request_costs AS
WITH
    requests AS (
        SELECT event_id, event_time, org, team, project, cost_centre, key_id, model, gpu_uuids, priced_as,
               prompt_tokens + completion_tokens AS tokens, client_request_id, trace_id, session_id
        FROM {db}.usage_events FINAL
    ),
    api AS (
        SELECT event_id, sum(cost) AS cost, any(currency) AS currency
        FROM {db}.ledger FINAL WHERE kind = 'api' AND event_id != '' GROUP BY event_id
    ),
    shares AS (
        SELECT gpu_uuid, event_time AS window_start, event_time + toIntervalSecond(window_seconds) AS window_end,
               org, team, project, cost_centre, model, key_id, share_tokens, cost, currency
        FROM {db}.ledger FINAL WHERE kind = 'gpu' AND basis = 'tokens' AND share_tokens > 0
    ),
    gpu AS (
        SELECT r.event_id AS event_id, sum(s.cost * r.tokens / s.share_tokens) AS cost, any(s.currency) AS currency
        FROM (SELECT event_id, event_time, org, team, project, cost_centre, model, key_id, tokens, gpu FROM requests ARRAY JOIN gpu_uuids AS gpu WHERE priced_as = 'gpu') AS r
        INNER JOIN shares AS s
            ON s.gpu_uuid = r.gpu AND s.org = r.org AND s.team = r.team AND s.project = r.project AND s.cost_centre = r.cost_centre
           AND s.model = r.model AND s.key_id = r.key_id AND r.event_time >= s.window_start AND r.event_time < s.window_end
        GROUP BY r.event_id
    )
SELECT
    r.event_id AS event_id, r.event_time AS event_time, toDate(r.event_time) AS day, r.org AS org, r.team AS team, r.project AS project,
    r.key_id AS key_id, r.model AS model, r.priced_as AS priced_as, r.client_request_id AS client_request_id, r.trace_id AS trace_id,
    r.session_id AS session_id,
    if(a.event_id = '', toDecimal128(0, 9), a.cost) AS api_cost,
    if(g.event_id = '', toDecimal128(0, 9), g.cost) AS gpu_cost,
    api_cost + gpu_cost AS cost,
    if(a.currency != '', a.currency, g.currency) AS currency
FROM requests AS r
LEFT JOIN api AS a ON a.event_id = r.event_id
LEFT JOIN gpu AS g ON g.event_id = r.event_id
SETTINGS join_use_nulls = 0;

-- Each request's one outcome: the best match of (1) its event id or client request id among the outcome's
-- request_ids, (2) its trace id, (3) its session id. Ties go to the earliest outcome (then the smallest id),
-- so a request's cost is counted for one outcome only and every sum below adds up.
CREATE VIEW IF NOT EXISTS {db}.request_outcomes AS
WITH
    ids AS (SELECT event_id, client_request_id, trace_id, session_id FROM {db}.usage_events FINAL),
    by_request AS (SELECT outcome_id, kind, occurred_at, ref FROM {db}.outcome_links WHERE link = 'request_id'),
    by_trace AS (SELECT outcome_id, kind, occurred_at, ref FROM {db}.outcome_links WHERE link = 'trace'),
    by_session AS (SELECT outcome_id, kind, occurred_at, ref FROM {db}.outcome_links WHERE link = 'session'),
    candidates AS (
        SELECT i.event_id AS event_id, l.outcome_id AS candidate, l.kind AS candidate_kind, l.occurred_at AS candidate_at, 1 AS rank
        FROM ids AS i INNER JOIN by_request AS l ON l.ref = i.event_id
        UNION ALL
        SELECT i.event_id, l.outcome_id, l.kind, l.occurred_at, 1
        FROM (SELECT * FROM ids WHERE client_request_id != '') AS i INNER JOIN by_request AS l ON l.ref = i.client_request_id
        UNION ALL
        SELECT i.event_id, l.outcome_id, l.kind, l.occurred_at, 2
        FROM (SELECT * FROM ids WHERE trace_id != '') AS i INNER JOIN by_trace AS l ON l.ref = i.trace_id
        UNION ALL
        SELECT i.event_id, l.outcome_id, l.kind, l.occurred_at, 3
        FROM (SELECT * FROM ids WHERE session_id != '') AS i INNER JOIN by_session AS l ON l.ref = i.session_id
    )
SELECT
    event_id,
    argMin(candidate, (rank, candidate_at, candidate)) AS outcome_id,
    argMin(candidate_kind, (rank, candidate_at, candidate)) AS outcome_kind,
    ['request_id', 'trace', 'session'][min(rank)] AS matched_by
FROM candidates
GROUP BY event_id;

-- Every request with its cost and its outcome ('' when no outcome names it).
CREATE VIEW IF NOT EXISTS {db}.request_outcome_costs AS
SELECT c.*, ifNull(o.outcome_id, '') AS outcome_id, ifNull(o.outcome_kind, '') AS outcome_kind, ifNull(o.matched_by, '') AS matched_by
FROM {db}.request_costs AS c
LEFT JOIN {db}.request_outcomes AS o ON o.event_id = c.event_id
SETTINGS join_use_nulls = 1;

-- Each outcome with the cost of the requests linked to it (0 until they arrive). cost_currencies > 1 flags
-- an outcome whose requests were billed in several currencies (their sum is then not one amount).
CREATE VIEW IF NOT EXISTS {db}.outcome_costs AS
SELECT
    o.outcome_id AS outcome_id, o.kind AS kind, o.org AS org, o.team AS team, o.project AS project, o.occurred_at AS occurred_at,
    toDate(o.occurred_at) AS day, o.success AS success, o.value AS value, o.currency AS currency, o.key_id AS key_id,
    ifNull(c.requests, 0) AS requests, ifNull(c.cost, toDecimal128(0, 9)) AS cost, ifNull(c.cost_currency, '') AS cost_currency,
    ifNull(c.cost_currencies, 0) AS cost_currencies
FROM {db}.outcomes AS o FINAL
LEFT JOIN (
    SELECT outcome_id, count() AS requests, sum(cost) AS cost, anyIf(currency, currency != '') AS cost_currency,
           uniqExactIf(currency, currency != '') AS cost_currencies
    FROM {db}.request_outcome_costs WHERE outcome_id != '' GROUP BY outcome_id
) AS c ON c.outcome_id = o.outcome_id
SETTINGS join_use_nulls = 1;

-- Per outcome day, org, team, project and kind: cost per outcome = cost / outcomes, cost per successful outcome =
-- all the kind's cost / successes (failed attempts are part of what a success costs), value per cost = value / cost.
-- Ratios are NULL where the divisor is 0 (never a division by zero) and rounded toward zero to 9 places.
CREATE VIEW IF NOT EXISTS {db}.cost_per_outcome_daily AS
SELECT
    day, org, team, project, kind, anyIf(cost_currency, cost_currency != '') AS currency,
    count() AS outcomes, countIf(success) AS successes, sum(n_requests) AS requests, sum(outcome_cost) AS cost,
    sum(outcome_value) AS value, anyIf(outcome_currency, outcome_currency != '') AS value_currency,
    cost / nullIf(outcomes, 0) AS cost_per_outcome,
    if(successes = 0, NULL, cost / successes) AS cost_per_success,
    if(cost = 0 OR countIf(outcome_value IS NOT NULL) = 0, NULL, value / cost) AS value_per_cost
FROM (
    SELECT day, org, team, project, kind, cost_currency, success, requests AS n_requests, cost AS outcome_cost,
           value AS outcome_value, currency AS outcome_currency
    FROM {db}.outcome_costs
)
GROUP BY day, org, team, project, kind;

-- Coverage per request day, org, team, project and currency: each kind's linked cost over the project's whole
-- request cost that day. The row with kind = '' is the cost no outcome names (coverage of all kinds = 1 minus its share).
CREATE VIEW IF NOT EXISTS {db}.outcome_coverage_daily AS
SELECT
    day, org, team, project, currency, kind, linked_cost, project_cost,
    if(project_cost = 0, NULL, linked_cost / project_cost) AS coverage
FROM (
    SELECT day, org, team, project, currency, outcome_kind AS kind, sum(cost) AS linked_cost,
           sum(sum(cost)) OVER (PARTITION BY day, org, team, project, currency) AS project_cost
    FROM {db}.request_outcome_costs
    GROUP BY day, org, team, project, currency, outcome_kind
);
