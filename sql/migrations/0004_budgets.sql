-- Budgets and their alerts, for analysts. The source of truth for budgets is the compacted
-- Kafka topic (`gpuledger budgets set`); the leader worker mirrors it here. Alerts are
-- written once each by the worker (alert_id is deterministic), deliveries by the notifier.

CREATE TABLE IF NOT EXISTS {db}.budgets
(
    budget_id   String,
    org         LowCardinality(String),
    team        LowCardinality(String),
    project     LowCardinality(String),
    model       Nullable(String),
    period      LowCardinality(String) COMMENT 'day | week | month',
    timezone    LowCardinality(String),
    amount      Decimal(38, 9),
    currency    LowCardinality(String),
    thresholds  Array(UInt16),
    mode        LowCardinality(String) COMMENT 'soft | hard',
    updated_at  DateTime64(6, 'UTC'),
    version     UInt64,
    is_deleted  UInt8 DEFAULT 0
)
ENGINE = ReplacingMergeTree(version, is_deleted)
ORDER BY budget_id;

CREATE TABLE IF NOT EXISTS {db}.budget_alerts
(
    alert_id         String,
    budget_id        String,
    scope            String,
    kind             LowCardinality(String) COMMENT 'threshold | forecast | spike',
    threshold_pct    UInt16,
    mode             LowCardinality(String),
    period_start     DateTime64(6, 'UTC'),
    period_end       DateTime64(6, 'UTC'),
    spend            Decimal(38, 9),
    budget_amount    Decimal(38, 9),
    currency         LowCardinality(String),
    raised_at        DateTime64(6, 'UTC'),
    projected_breach Nullable(DateTime64(6, 'UTC')),
    top_models       String COMMENT 'JSON list of name and spend',
    top_keys         String COMMENT 'JSON list of name and spend',
    message          String
)
ENGINE = ReplacingMergeTree
ORDER BY alert_id;

CREATE TABLE IF NOT EXISTS {db}.budget_alert_deliveries
(
    alert_id         String,
    route            String COMMENT 'route name (webhook URLs are secrets, never stored)',
    status           LowCardinality(String) COMMENT 'delivered | failed',
    attempts         UInt32,
    last_http_status Nullable(UInt16),
    detail           String,
    finished_at      DateTime64(6, 'UTC'),
    version          UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY alert_id;

-- Alert history: every raised alert with its delivery (status 'pending' until the notifier settles it).
CREATE VIEW IF NOT EXISTS {db}.budget_alert_history AS
SELECT
    a.alert_id AS alert_id, a.budget_id AS budget_id, a.scope AS scope, a.kind AS kind, a.threshold_pct AS threshold_pct,
    a.period_start AS period_start, a.period_end AS period_end, a.spend AS spend, a.budget_amount AS budget_amount,
    a.currency AS currency, a.raised_at AS raised_at, a.projected_breach AS projected_breach,
    if(d.alert_id = '', 'pending', d.status) AS delivery_status, d.route AS route, d.attempts AS attempts,
    d.last_http_status AS last_http_status, if(d.alert_id = '', NULL, d.finished_at) AS settled_at
FROM {db}.budget_alerts AS a FINAL
LEFT JOIN (SELECT * FROM {db}.budget_alert_deliveries FINAL) AS d ON d.alert_id = a.alert_id;
