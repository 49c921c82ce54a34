-- From scores to incidents (fusion, the alert lifecycle, shadow models, dispositions, suppression).
--
-- alerts: one row per lifecycle event (open, update, acknowledge, close) of one alert_id, written
-- by the fusion agent (and by `linewatch alerts ack` / `close` for the hand-made ones). `kind`
-- separates anomaly incidents from "retrain recommended" (drift) alerts; `route` is the label a
-- notification policy routes on (maintenance, quality, ml); `scores` links to the score rows
-- behind the event; `shadow` alerts come from challenger models and are never routed.

ALTER TABLE alerts DROP CONSTRAINT IF EXISTS alerts_state_check;
ALTER TABLE alerts ADD CONSTRAINT alerts_state_check
    CHECK (state IN ('open', 'update', 'acknowledge', 'close'));
ALTER TABLE alerts ADD COLUMN IF NOT EXISTS kind text NOT NULL DEFAULT 'anomaly'
    CHECK (kind IN ('anomaly', 'retrain_recommended'));
ALTER TABLE alerts ADD COLUMN IF NOT EXISTS route text NOT NULL DEFAULT 'quality'
    CHECK (route IN ('maintenance', 'quality', 'ml'));
ALTER TABLE alerts ADD COLUMN IF NOT EXISTS p_value double precision NOT NULL DEFAULT 1.0
    CHECK (p_value BETWEEN 0 AND 1);
ALTER TABLE alerts ADD COLUMN IF NOT EXISTS scores jsonb NOT NULL DEFAULT '[]'::jsonb;
ALTER TABLE alerts ADD COLUMN IF NOT EXISTS model_versions text[] NOT NULL DEFAULT '{}';
ALTER TABLE alerts ADD COLUMN IF NOT EXISTS actor text;
ALTER TABLE alerts ADD COLUMN IF NOT EXISTS note text NOT NULL DEFAULT '';
ALTER TABLE alerts ADD COLUMN IF NOT EXISTS written_at timestamptz NOT NULL DEFAULT clock_timestamp();
CREATE INDEX IF NOT EXISTS alerts_id ON alerts (alert_id, ts);
COMMENT ON COLUMN alerts.kind IS 'anomaly (fused incident) or retrain_recommended (a model''s baseline moved)';
COMMENT ON COLUMN alerts.route IS 'who is notified: maintenance (machine signals), quality (parts), ml (models)';
COMMENT ON COLUMN alerts.p_value IS 'fused tail probability of the window behind this event; score = -log10(p_value)';
COMMENT ON COLUMN alerts.scores IS 'JSON array of {ts, event_id, detector, model_version, modality, calibrated_score}: the score rows behind it';
COMMENT ON COLUMN alerts.contributors IS 'JSON array of {name, value, share, kind, detail, modality}: the causes across modalities, largest share first';

-- Shadow (challenger) models' scores: same shape as scores, never in `scores`, never routed.
CREATE TABLE IF NOT EXISTS shadow_scores (LIKE scores INCLUDING DEFAULTS INCLUDING CONSTRAINTS);
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'shadow_scores_pkey') THEN
        ALTER TABLE shadow_scores ADD CONSTRAINT shadow_scores_pkey PRIMARY KEY (ts, event_id, detector, model_version);
    END IF;
END
$$;
CREATE INDEX IF NOT EXISTS shadow_scores_asset_ts ON shadow_scores (asset_id, ts DESC);
COMMENT ON TABLE shadow_scores IS 'Scores of shadow (challenger) model versions: stored and fused into shadow alerts, never routed.';

-- A model version is a shadow when registered with --shadow; `linewatch models promote` makes it the
-- champion (and records who did it and why).
ALTER TABLE model_versions ADD COLUMN IF NOT EXISTS shadow boolean NOT NULL DEFAULT false;
COMMENT ON COLUMN model_versions.shadow IS
    'true: a challenger; it scores its scope''s events beside the champion into shadow_scores and shadow alerts';

CREATE TABLE IF NOT EXISTS model_promotions (
    promoted_at    timestamptz NOT NULL DEFAULT now(),
    model_id       text        NOT NULL,
    version        text        NOT NULL,
    previous       text,
    actor          text        NOT NULL,
    note           text        NOT NULL DEFAULT '',
    PRIMARY KEY (model_id, version, promoted_at)
);
COMMENT ON TABLE model_promotions IS 'Every promotion of a shadow version to champion, and who did it.';

-- Dispositions: the defect class the operator named, and when the row was stored.
ALTER TABLE dispositions ADD COLUMN IF NOT EXISTS defect_class text;
ALTER TABLE dispositions ADD COLUMN IF NOT EXISTS written_at timestamptz NOT NULL DEFAULT clock_timestamp();
CREATE INDEX IF NOT EXISTS dispositions_alert ON dispositions (alert_id);

-- Declared maintenance windows: alerts of the asset ('*' = every asset) are suppressed inside them.
CREATE TABLE IF NOT EXISTS maintenance_windows (
    window_id    uuid        PRIMARY KEY,
    asset_id     text        NOT NULL,
    starts_at    timestamptz NOT NULL,
    ends_at      timestamptz NOT NULL,
    reason       text        NOT NULL DEFAULT '',
    created_by   text        NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    CHECK (ends_at > starts_at)
);
CREATE INDEX IF NOT EXISTS maintenance_windows_asset ON maintenance_windows (asset_id, ends_at DESC);

-- Machine states from the machine_states topic (PLC / MES): each holds until the asset's next row.
CREATE TABLE IF NOT EXISTS machine_states (
    ts          timestamptz NOT NULL,
    asset_id    text        NOT NULL,
    state       text        NOT NULL,
    reason      text        NOT NULL DEFAULT '',
    PRIMARY KEY (asset_id, ts)
);

-- Windows whose fused evidence would have counted toward an alert but were suppressed, and why.
CREATE TABLE IF NOT EXISTS alert_suppressions (
    ts            timestamptz      NOT NULL,
    asset_id      text             NOT NULL,
    reason        text             NOT NULL CHECK (reason IN ('maintenance', 'machine_state', 'data_quality')),
    detail        text             NOT NULL DEFAULT '',
    score         double precision NOT NULL,
    shadow        boolean          NOT NULL DEFAULT false,
    contributors  jsonb            NOT NULL DEFAULT '[]'::jsonb,
    PRIMARY KEY (ts, asset_id, shadow)
);

GRANT SELECT ON shadow_scores, model_promotions, maintenance_windows, machine_states, alert_suppressions
    TO linewatch_reader, linewatch_writer;
GRANT INSERT ON alerts, shadow_scores, dispositions, machine_states, alert_suppressions TO linewatch_writer;
GRANT INSERT ON model_promotions TO linewatch_registrar;
GRANT UPDATE (shadow) ON model_versions TO linewatch_registrar;
GRANT SELECT, INSERT ON maintenance_windows TO linewatch_registrar;
