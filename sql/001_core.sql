-- linewatch core tables. Plain PostgreSQL; Timescale features are added by 010_* where available.
-- Natural keys make every write idempotent: a redelivered or replayed event is ON CONFLICT DO NOTHING.

CREATE TABLE IF NOT EXISTS spc_measurements (
    ts              timestamptz      NOT NULL,
    event_id        uuid             NOT NULL,
    asset_id        text             NOT NULL,
    sku             text             NOT NULL,
    part_id         text             NOT NULL,
    shift           text,
    characteristic  text             NOT NULL,
    value           double precision NOT NULL,
    lsl             double precision,
    usl             double precision,
    target          double precision,
    PRIMARY KEY (ts, event_id, characteristic)
);
CREATE INDEX IF NOT EXISTS spc_measurements_asset_char_ts
    ON spc_measurements (asset_id, characteristic, ts DESC);
COMMENT ON TABLE spc_measurements IS 'One row per part and characteristic, as measured (long format for SPC charts).';

CREATE TABLE IF NOT EXISTS scores (
    ts                timestamptz      NOT NULL,
    event_id          uuid             NOT NULL,
    modality          text             NOT NULL CHECK (modality IN ('spc', 'signals', 'frames')),
    asset_id          text             NOT NULL,
    sku               text             NOT NULL,
    part_id           text,
    detector          text             NOT NULL,
    model_version     text             NOT NULL,
    raw_score         double precision NOT NULL,
    tail_probability  double precision NOT NULL CHECK (tail_probability BETWEEN 0 AND 1),
    calibrated_score  double precision NOT NULL,
    threshold         double precision NOT NULL,
    is_anomaly        boolean          NOT NULL,
    ready             boolean          NOT NULL DEFAULT true,
    top_feature       text,
    explanation       jsonb            NOT NULL DEFAULT '[]'::jsonb,
    scored_at         timestamptz      NOT NULL,
    written_at        timestamptz      NOT NULL DEFAULT clock_timestamp(),  -- when the row was written, not when its transaction began
    PRIMARY KEY (ts, event_id, detector)
);
CREATE INDEX IF NOT EXISTS scores_asset_ts ON scores (asset_id, ts DESC);
CREATE INDEX IF NOT EXISTS scores_anomalies ON scores (ts DESC) WHERE is_anomaly;
COMMENT ON TABLE scores IS 'One detector''s verdict on one event. calibrated_score = -log10(tail probability under normal data).';
COMMENT ON COLUMN scores.tail_probability IS 'Probability that a normal event scores at least this high.';
COMMENT ON COLUMN scores.explanation IS 'JSON array of {name, value, share}: which characteristic, sensor or region contributed.';

CREATE TABLE IF NOT EXISTS alerts (
    ts            timestamptz      NOT NULL,
    alert_id      uuid             NOT NULL,
    state         text             NOT NULL CHECK (state IN ('open', 'update', 'close')),
    asset_id      text             NOT NULL,
    severity      text             NOT NULL CHECK (severity IN ('info', 'warning', 'critical')),
    opened_at     timestamptz      NOT NULL,
    score         double precision NOT NULL,
    modalities    text[]           NOT NULL,
    contributors  jsonb            NOT NULL DEFAULT '[]'::jsonb,
    event_ids     uuid[]           NOT NULL DEFAULT '{}',
    shadow        boolean          NOT NULL DEFAULT false,
    PRIMARY KEY (ts, alert_id, state)
);
CREATE INDEX IF NOT EXISTS alerts_asset_ts ON alerts (asset_id, ts DESC);
COMMENT ON TABLE alerts IS 'Alert lifecycle events (open / update / close); alert_id is stable over one alert.';

CREATE TABLE IF NOT EXISTS dispositions (
    disposition_id  uuid        PRIMARY KEY,
    alert_id        uuid,
    event_id        uuid,
    verdict         text        NOT NULL
        CHECK (verdict IN ('true_defect', 'false_alarm', 'acceptable_variation', 'new_sku')),
    operator        text        NOT NULL,
    note            text        NOT NULL DEFAULT '',
    ts              timestamptz NOT NULL,
    CHECK (alert_id IS NOT NULL OR event_id IS NOT NULL)
);
COMMENT ON TABLE dispositions IS 'Operator feedback; feeds threshold calibration and retraining.';

CREATE TABLE IF NOT EXISTS model_versions (
    model_id        text        NOT NULL,
    version         text        NOT NULL,
    modality        text        NOT NULL CHECK (modality IN ('spc', 'signals', 'frames')),
    scope_asset     text        NOT NULL DEFAULT '*',
    scope_sku       text        NOT NULL DEFAULT '*',
    detector        text        NOT NULL,
    feature_names   text[]      NOT NULL,
    n_samples       integer     NOT NULL,
    train_start     timestamptz,
    train_end       timestamptz,
    data_hash       text        NOT NULL,
    calibration     jsonb       NOT NULL,
    artifact_path   text        NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    active          boolean     NOT NULL DEFAULT true,
    PRIMARY KEY (model_id, version)
);
CREATE INDEX IF NOT EXISTS model_versions_scope
    ON model_versions (modality, scope_asset, scope_sku, created_at DESC) WHERE active;
COMMENT ON TABLE model_versions IS 'Every trained model; workers load the newest active one per modality and scope.';

CREATE TABLE IF NOT EXISTS deadletters (
    received_at   timestamptz NOT NULL,
    source_topic  text        NOT NULL,
    partition     integer     NOT NULL,
    "offset"      bigint      NOT NULL,
    key           bytea,
    reason        text        NOT NULL,
    error_type    text        NOT NULL,
    payload       bytea       NOT NULL,
    PRIMARY KEY (source_topic, partition, "offset")
);
CREATE INDEX IF NOT EXISTS deadletters_received ON deadletters (received_at DESC);
COMMENT ON TABLE deadletters IS 'Messages that could not be decoded or validated, byte for byte, with the reason.';
